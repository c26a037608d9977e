"""The AgentPool spec, parsed from the custom resource into typed values.

The CRD schema (``crd/agentpools.voxmesh.dev.yaml``) rejects bad specs at the API server with a
clear message; this module only turns a valid spec into numbers the planner uses, and raises
:class:`InvalidSpecError` for what the schema cannot express.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PERCENT = re.compile(r"^(\d{1,3})%$")

#: Seconds a pod gets beyond the drain timeout before the kubelet kills it: enough for the
#: worker to end the calls left at the timeout with an error event and to flush telemetry.
TERMINATION_MARGIN_S = 30


class InvalidSpecError(ValueError):
    """A spec the operator cannot act on; the message names the field."""


@dataclass(frozen=True, slots=True)
class IntOrPercent:
    """A count, or a percentage of some total (Kubernetes' ``IntOrString``).

    Attributes:
        value: The number.
        percent: True when ``value`` is a percentage.
    """

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, raw: int | str, field: str) -> IntOrPercent:
        """Reads ``3`` or ``"25%"``.

        Raises:
            InvalidSpecError: Neither a non-negative integer nor a percentage.
        """
        if isinstance(raw, bool):  # bool is an int to Python, never to Kubernetes
            raise InvalidSpecError(f"{field}: expected a number or a percentage, got {raw!r}")
        if isinstance(raw, int):
            if raw < 0:
                raise InvalidSpecError(f"{field}: must not be negative, got {raw}")
            return cls(raw)
        match = _PERCENT.match(str(raw).strip())
        if match is None:
            raise InvalidSpecError(f"{field}: expected a number or a percentage like '25%', "
                                   f"got {raw!r}")
        return cls(int(match.group(1)), percent=True)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What an AgentPool asks for.

    Attributes:
        min_replicas: Workers kept even with no calls.
        max_replicas: Workers never exceeded (draining workers, on their way out, aside).
        buffer: Idle warm workers to keep on top of the busy ones: a count, or a percentage of
            the pool (with 20 %, a fifth of the workers are idle; Agones' ``bufferSize``).
        max_sessions_per_worker: Calls one worker takes at once.
        drain_timeout_s: How long a draining worker's calls may run before they are ended.
        max_surge: Extra spare workers held during a rollout, started ahead of retiring old
            ones: a count, or a percentage of the desired workers (rounded up, at least 1).
        scale_down_delay_s: How long the pool must have more spare workers than it needs
            before the surplus is deleted (churn damping, like an HPA's stabilization window).
    """

    min_replicas: int = 1
    max_replicas: int = 10
    buffer: IntOrPercent = IntOrPercent(1)
    max_sessions_per_worker: int = 1
    drain_timeout_s: int = 600
    max_surge: IntOrPercent = IntOrPercent(25, percent=True)
    scale_down_delay_s: int = 30

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise InvalidSpecError(f"minReplicas: must not be negative, got {self.min_replicas}")
        if self.max_replicas < 1:
            raise InvalidSpecError(f"maxReplicas: must be at least 1, got {self.max_replicas}")
        if self.min_replicas > self.max_replicas:
            raise InvalidSpecError(f"minReplicas ({self.min_replicas}) must not exceed "
                                   f"maxReplicas ({self.max_replicas})")
        if self.buffer.percent and self.buffer.value >= 100:
            raise InvalidSpecError(f"buffer: a percentage must be under 100%, got {self.buffer}")
        if self.max_sessions_per_worker < 1:
            raise InvalidSpecError("maxSessionsPerWorker: must be at least 1")
        if self.drain_timeout_s < 0:
            raise InvalidSpecError("drainTimeoutSeconds: must not be negative")
        if self.scale_down_delay_s < 0:
            raise InvalidSpecError("scaleDownDelaySeconds: must not be negative")

    @classmethod
    def from_resource(cls, spec: Mapping[str, Any]) -> PoolSpec:
        """Reads the ``spec`` of an AgentPool (defaults as in the CRD)."""
        strategy = spec.get("updateStrategy") or {}
        return cls(
            min_replicas=int(spec.get("minReplicas", 1)),
            max_replicas=int(spec.get("maxReplicas", 10)),
            buffer=IntOrPercent.parse(spec.get("buffer", 1), "buffer"),
            max_sessions_per_worker=int(spec.get("maxSessionsPerWorker", 1)),
            drain_timeout_s=int(spec.get("drainTimeoutSeconds", 600)),
            max_surge=IntOrPercent.parse(strategy.get("maxSurge", "25%"),
                                         "updateStrategy.maxSurge"),
            scale_down_delay_s=int(spec.get("scaleDownDelaySeconds", 30)),
        )

    @property
    def termination_grace_s(self) -> int:
        """The pods' ``terminationGracePeriodSeconds``: the drain timeout plus a margin."""
        return self.drain_timeout_s + TERMINATION_MARGIN_S

    def spare_for(self, busy: int) -> int:
        """Idle workers to keep beside ``busy`` ones, before the min/max clamp."""
        if not self.buffer.percent:
            return self.buffer.value
        percent = self.buffer.value
        if percent == 0:
            return 0
        # Agones' rule: the idle share of the whole pool is at least the percentage, and at
        # least one worker, or an empty pool could not take its first call warm.
        pool = -(-busy * 100 // (100 - percent))
        return max(1, pool - busy)

    def desired_workers(self, busy: int) -> int:
        """``busy + buffer``, clamped to ``[minReplicas, maxReplicas]``."""
        return min(self.max_replicas, max(self.min_replicas, busy + self.spare_for(busy)))

    def surge_for(self, desired: int) -> int:
        """New workers a rollout may add beyond the desired count (at least 1, so it moves)."""
        if self.max_surge.percent:
            return max(1, math.ceil(desired * self.max_surge.value / 100))
        return max(1, self.max_surge.value)
