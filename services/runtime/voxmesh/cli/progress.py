"""Small terminal progress helpers (no dependencies; plain lines when not a TTY)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar for byte counts or steps."""

    def __init__(self, label: str, total: int, unit: str = "B") -> None:
        """Creates a bar for ``total`` units."""
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, done: int, total: int | None = None) -> None:
        """Redraws the bar (at most 10 times a second)."""
        if total:
            self.total = total
        now = time.monotonic()
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        fraction = min(done / self.total, 1.0)
        bar = "#" * int(fraction * 30)
        amount = (f"{done / 1e6:.0f}/{self.total / 1e6:.0f} MB" if self.unit == "B"
                  else f"{done}/{self.total}")
        line = f"  {self.label:<28} [{bar:<30}] {fraction * 100:5.1f}% {amount}"
        if self._tty:
            sys.stderr.write("\r" + line)
            if done >= self.total:
                sys.stderr.write("\n")
        elif done >= self.total:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def step(message: str) -> None:
    """Prints a progress step."""
    sys.stderr.write(f"• {message}\n")
    sys.stderr.flush()
