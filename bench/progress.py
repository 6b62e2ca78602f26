"""Progress bars for long phases (connecting 10,000 devices, a load sweep, a reconnect storm).

tqdm when it is installed; otherwise a plain line on stderr, redrawn at most five times a second
so that the bar itself costs nothing next to the phase it reports on. Only on a terminal: in a
log or a CI run a bar is noise.
"""
from __future__ import annotations

import sys
import time

try:
    from tqdm import tqdm
except ImportError:  # the bench extra brings tqdm; the fallback keeps a bare install usable
    tqdm = None


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it") -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.done = 0
        self._shown = sys.stderr.isatty()
        self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr,
                         dynamic_ncols=True) if tqdm is not None and self._shown else None
        self._drawn = 0.0
        self._start = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if not self._shown:
            return
        now = time.monotonic()
        if now - self._drawn >= 0.2 or self.done >= self.total:
            self._drawn = now
            rate = self.done / max(now - self._start, 1e-9)
            sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total} {self.unit} ({rate:,.0f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
