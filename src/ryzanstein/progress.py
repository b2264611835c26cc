"""Progress bars on stderr through tqdm: drawn on a terminal, absent when the stream is a file or a pipe, so a
log never fills with carriage returns (the lines around a bar still say what started and what finished)."""
from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


def progress_bar(total: int, desc: str, *, unit: str = "it", file: TextIO | None = None) -> tqdm:
    """A bar of `total` steps (unit "B": bytes, shown in kB/MB/GB with the rate); disabled off a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1000,
                file=file or sys.stderr, disable=None, dynamic_ncols=True, mininterval=0.2, leave=True)
