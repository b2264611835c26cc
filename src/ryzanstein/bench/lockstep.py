"""Several generations advanced in turn, one target forward each, each timed on a clock of its own.

Why: on a shared, noisy machine two runs measured one after the other meet different machine states (clock
speed, other tenants, caches); on our 2-core box whole-generation pairs scatter 3-7%, so plain decoding
against itself misses a 0.97x bar by chance. Advanced one forward each in turn, every configuration sees the
same machine within one round (~40 ms). Each generation's clock runs only during its own steps, so its stats,
and the costs policy auto learns, read as if it had run alone. `ryzanstein bench --lockstep` uses this.
"""
from __future__ import annotations

from collections import defaultdict
from time import perf_counter
from typing import Callable, Iterable, Iterator


class StreamClocks:
    """One clock per named generation; it advances only while `step` runs that generation."""

    def __init__(self, timer: Callable[[], float] = perf_counter) -> None:
        self.timer = timer
        self.spent: dict[str, float] = defaultdict(float)  # each generation's own time so far
        self.running: str | None = None
        self.entered = 0.0

    def clock(self, name: str) -> Callable[[], float]:
        def now() -> float:
            if self.running != name:  # outside its own steps a generation's clock stands still
                return self.spent[name]
            return self.spent[name] + (self.timer() - self.entered)
        return now

    def step(self, name: str, it: Iterator) -> bool:
        """Advance one generation by one yield (one target forward); False once it has finished."""
        self.running, self.entered = name, self.timer()
        try:
            next(it)
            return True
        except StopIteration:
            return False
        finally:
            self.spent[name] += self.timer() - self.entered
            self.running = None


def run_in_turn(gens: dict[str, Iterable], clocks: StreamClocks) -> None:
    """Step every generation once, in the dict's order, again and again until all have finished."""
    its = {name: iter(g) for name, g in gens.items()}
    live = list(its)
    while live:
        live = [name for name in live if clocks.step(name, its[name])]
