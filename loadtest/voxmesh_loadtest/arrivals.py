"""When calls start: constant, ramp, Poisson or burst arrivals.

Specs read ``kind:key=value,...`` (rates in calls per second, times in seconds):

* ``constant:rate=2``: evenly spaced;
* ``ramp:from=0.5,to=5,over=60``: the rate grows linearly over ``over`` seconds, then holds;
* ``poisson:rate=2``: exponential gaps (real traffic);
* ``burst:size=10,every=30``: ``size`` calls at once every ``every`` seconds.

A run ends after ``--calls`` calls or ``--duration`` seconds, whichever comes first. Arrival
times are a pure function of the spec and the seed, so two runs offer the same load.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

_KEYS = {
    "constant": {"rate"},
    "ramp": {"from", "to", "over"},
    "poisson": {"rate"},
    "burst": {"size", "every"},
}


class ArrivalError(ValueError):
    """An arrival spec that cannot be used; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Arrivals:
    """A parsed arrival pattern.

    Attributes:
        kind: constant, ramp, poisson or burst.
        params: Its numbers.
    """

    kind: str
    params: dict[str, float]

    @classmethod
    def parse(cls, spec: str) -> Arrivals:
        """Reads ``kind:key=value,...``.

        Raises:
            ArrivalError: Unknown kind, missing or unknown keys, or a bad number.
        """
        kind, _, rest = spec.partition(":")
        kind = kind.strip()
        if kind not in _KEYS:
            raise ArrivalError(f"unknown arrival {kind!r} (use {', '.join(_KEYS)})")
        params: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ArrivalError(f"{kind}: expected key=value, got {part!r}")
            if key not in _KEYS[kind]:
                raise ArrivalError(f"{kind}: unknown key {key!r} (takes "
                                   f"{', '.join(sorted(_KEYS[kind]))})")
            try:
                params[key] = float(value)
            except ValueError:
                raise ArrivalError(f"{kind}: {key}={value!r} is not a number") from None
            if params[key] < 0 or not math.isfinite(params[key]):
                raise ArrivalError(f"{kind}: {key} must be a finite number >= 0")
        missing = _KEYS[kind] - params.keys()
        if missing:
            raise ArrivalError(f"{kind}: missing {', '.join(sorted(missing))}")
        if kind in ("constant", "poisson") and params["rate"] == 0:
            raise ArrivalError(f"{kind}: rate must be above 0")
        if kind == "burst" and (params["size"] < 1 or params["every"] <= 0):
            raise ArrivalError("burst: size must be >= 1 and every > 0")
        if kind == "ramp" and max(params["from"], params["to"]) == 0:
            raise ArrivalError("ramp: from or to must be above 0")
        return cls(kind, params)

    def __str__(self) -> str:
        return f"{self.kind}:" + ",".join(f"{k}={v:g}" for k, v in self.params.items())

    def offsets(self, *, calls: int | None, duration_s: float | None,
                seed: int = 0) -> Iterator[float]:
        """Start times, in seconds from the start of the run.

        Args:
            calls: Stop after this many calls (None: no limit).
            duration_s: Stop at this time (None: no limit).
            seed: Seed of the Poisson gaps.
        """
        if calls is None and duration_s is None:
            raise ArrivalError("give a call count, a duration, or both")
        rng = random.Random(seed)
        count, now = 0, 0.0
        p = self.params
        while calls is None or count < calls:
            if self.kind == "constant":
                now = count / p["rate"]
            elif self.kind == "poisson":
                now += rng.expovariate(p["rate"]) if count else 0.0
            elif self.kind == "burst":
                now = (count // int(p["size"])) * p["every"]
            else:
                now = self._ramp_time(count)
            if duration_s is not None and now > duration_s:
                return
            yield now
            count += 1

    def _ramp_time(self, count: int) -> float:
        """When the ``count``-th call starts under a linear ramp (inverse of its integral)."""
        start, end, over = self.params["from"], self.params["to"], self.params["over"]
        slope = (end - start) / over if over else 0.0
        ramp_calls = (start + end) / 2 * over  # calls offered during the ramp
        if count >= ramp_calls:
            return over + (count - ramp_calls) / end
        if slope == 0:
            return count / start
        # Solve start*t + slope/2*t^2 = count for t.
        return (-start + math.sqrt(start * start + 2 * slope * count)) / slope
