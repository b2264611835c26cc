"""Markdown cells and tables for the bench reports: a missing value shows as "-"."""
from __future__ import annotations


def fmt(v: float | None, pattern: str = "{:.2f}x") -> str:
    return "-" if v is None else pattern.format(v)


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])
