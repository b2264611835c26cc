"""A progress line on stderr for long benchmark runs."""
from __future__ import annotations

import sys
import time


class Progress:
    """done/total with an ETA on stderr: one rewritten line on a terminal, a line every ~5% otherwise."""

    def __init__(self, total: int, what: str = "runs") -> None:
        self.total, self.what, self.done, self.t0 = total, what, 0, time.perf_counter()
        self.tty, self.every = sys.stderr.isatty(), max(1, total // 20)

    def step(self, note: str) -> None:
        self.done += 1
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done)
        line = f"[bench] {self.done}/{self.total} {self.what}  {_hms(el)} elapsed  ETA {_hms(eta)}  {note}"
        if self.tty:
            print("\r" + line[:150].ljust(150), end="" if self.done < self.total else "\n", file=sys.stderr, flush=True)
        elif self.done % self.every == 0 or self.done == self.total:
            print(line, file=sys.stderr, flush=True)


def _hms(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"
