"""Delay distributions of the synthetic "latency-model" providers.

Latency-model providers (``VOXMESH_<SVC>_PROVIDER=latency-model``) answer without running a
model, after delays drawn from a :class:`DelayDistribution`. They exist for capacity tests of
the platform itself and are never used for quality figures (docs/latency-model-providers.md).

A distribution is written as one string, values in milliseconds::

    constant:ms=150
    normal:mean=150,sd=20
    lognormal:median=150,sigma=0.3
    uniform:low=100,high=200

:class:`DelayDistribution` is a pydantic field type: a settings field annotated with it accepts
such a string from the environment, and a bad one fails validation with a message that names
the bad part.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, cast, get_args

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

DistributionKind = Literal["constant", "normal", "lognormal", "uniform"]

KINDS: Final[tuple[DistributionKind, ...]] = get_args(DistributionKind)
#: Parameters of each kind, in the order they are written.
PARAMETERS: Final[Mapping[DistributionKind, tuple[str, ...]]] = MappingProxyType({
    "constant": ("ms",),
    "normal": ("mean", "sd"),
    "lognormal": ("median", "sigma"),
    "uniform": ("low", "high"),
})
EXAMPLES: Final[Mapping[DistributionKind, str]] = MappingProxyType({
    "constant": "constant:ms=150",
    "normal": "normal:mean=150,sd=20",
    "lognormal": "lognormal:median=150,sigma=0.3",
    "uniform": "uniform:low=100,high=200",
})
#: Largest parameter and sample, in milliseconds. A first-byte delay of over a minute is a
#: typo (a value in microseconds), and capping samples keeps a heavy lognormal tail from
#: stalling a test run.
MAX_DELAY_MS: Final = 60_000.0
#: Largest lognormal sigma: above it the delays span many orders of magnitude.
MAX_SIGMA: Final = 3.0
# Redraws of a negative normal sample before giving up on truncation; with mean >= 0 each draw
# is non-negative with probability >= 1/2, so the fallback practically never runs.
_MAX_REDRAWS = 64


def _kind_list() -> str:
    return ", ".join(KINDS[:-1]) + f" or {KINDS[-1]}"


def _names(kind: DistributionKind) -> str:
    return " and ".join(PARAMETERS[kind])


class DelayDistribution:
    """A distribution of delays in milliseconds, written like ``normal:mean=150,sd=20``.

    Samples are never negative: a normal draw below zero is drawn again (the distribution is
    truncated at zero), and every sample is capped at :data:`MAX_DELAY_MS`. Instances are
    immutable, compare equal when kind and parameters are equal, and ``str()`` gives the
    canonical spec back.

    Attributes:
        kind: ``"constant"``, ``"normal"``, ``"lognormal"`` or ``"uniform"``.
        params: Parameter name to value (milliseconds, except lognormal ``sigma``).
    """

    __slots__ = ("_kind", "_params")

    _kind: DistributionKind
    _params: Mapping[str, float]

    def __init__(self, kind: DistributionKind, **params: float) -> None:
        """Creates a distribution from its kind and parameters.

        Args:
            kind: One of :data:`KINDS`.
            **params: The kind's parameters (see :data:`PARAMETERS`), in milliseconds.

        Raises:
            ValueError: If the kind is unknown, a parameter is missing, unknown, not finite or
                out of range.
        """
        if kind not in PARAMETERS:
            raise ValueError(f"unknown distribution {kind!r} (use {_kind_list()})")
        expected = PARAMETERS[kind]
        for name in params:
            if name not in expected:
                raise ValueError(
                    f"unknown parameter {name!r} for {kind} (use {_names(kind)}, e.g. "
                    f"{EXAMPLES[kind]!r})")
        missing = [name for name in expected if name not in params]
        if missing:
            raise ValueError(
                f"{kind} needs {' and '.join(missing)} (e.g. {EXAMPLES[kind]!r})")
        values = {name: float(params[name]) for name in expected}
        for name, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"parameter {name} of {kind} must be a finite number, "
                                 f"got {value}")
            if value < 0:
                raise ValueError(f"parameter {name}={value:g} of {kind} must not be negative")
            limit = MAX_SIGMA if name == "sigma" else MAX_DELAY_MS
            if value > limit:
                unit = "" if name == "sigma" else " ms"
                raise ValueError(f"parameter {name}={value:g} of {kind} is above the limit of "
                                 f"{limit:g}{unit}")
        if kind == "lognormal" and values["median"] == 0:
            raise ValueError("parameter median of lognormal must be positive, got 0")
        if kind == "uniform" and values["low"] > values["high"]:
            raise ValueError(f"uniform needs low <= high, got low={values['low']:g}, "
                             f"high={values['high']:g}")
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_params", MappingProxyType(values))

    @classmethod
    def parse(cls, spec: str) -> DelayDistribution:
        """Parses ``KIND:NAME=VALUE,...``, e.g. ``lognormal:median=150,sigma=0.3``.

        Args:
            spec: The distribution; values in milliseconds. Case and spaces are ignored.

        Returns:
            The distribution.

        Raises:
            ValueError: With a message naming the bad part of ``spec``.
        """
        text = spec.strip()
        if not text:
            raise ValueError(f"empty delay distribution (use e.g. {EXAMPLES['normal']!r})")
        kind_text, colon, rest = text.partition(":")
        kind = kind_text.strip().lower()
        if kind not in PARAMETERS:
            raise ValueError(f"unknown distribution {kind!r} (use {_kind_list()})")
        typed_kind = cast(DistributionKind, kind)
        if not colon or not rest.strip():
            raise ValueError(f"{kind} needs {_names(typed_kind)} "
                             f"(e.g. {EXAMPLES[typed_kind]!r})")
        params: dict[str, float] = {}
        for part in rest.split(","):
            name, equals, value_text = (piece.strip() for piece in part.partition("="))
            if not equals or not name:
                raise ValueError(f"parameter {part.strip()!r} of {kind} is not NAME=VALUE "
                                 f"(e.g. {EXAMPLES[typed_kind]!r})")
            name = name.lower()
            if name in params:
                raise ValueError(f"parameter {name!r} of {kind} is given twice")
            try:
                params[name] = float(value_text)
            except ValueError:
                raise ValueError(f"parameter {name}={value_text!r} of {kind} is not a number "
                                 "(values are milliseconds, without a unit)") from None
        return cls(typed_kind, **params)

    @property
    def kind(self) -> DistributionKind:
        """The distribution's kind."""
        return self._kind

    @property
    def params(self) -> Mapping[str, float]:
        """Parameter name to value (read-only)."""
        return self._params

    def sample(self, rng: random.Random) -> float:
        """Draws one delay.

        Args:
            rng: The generator to draw from; a seeded one makes the sequence repeatable.

        Returns:
            The delay in milliseconds, within ``0..MAX_DELAY_MS``.
        """
        p = self._params
        if self._kind == "constant":
            value = p["ms"]
        elif self._kind == "normal":
            value = rng.gauss(p["mean"], p["sd"])
            for _ in range(_MAX_REDRAWS):
                if value >= 0:
                    break
                value = rng.gauss(p["mean"], p["sd"])
            else:
                value = p["mean"]
        elif self._kind == "lognormal":
            value = rng.lognormvariate(math.log(p["median"]), p["sigma"])
        else:
            value = rng.uniform(p["low"], p["high"])
        return min(max(value, 0.0), MAX_DELAY_MS)

    def sample_s(self, rng: random.Random) -> float:
        """Draws one delay in seconds (for :func:`asyncio.sleep`); see :meth:`sample`."""
        return self.sample(rng) / 1000.0

    def __str__(self) -> str:
        """The canonical spec, e.g. ``normal:mean=150,sd=20``; :meth:`parse` reads it back."""
        values = ",".join(f"{name}={value:.10g}" for name, value in self._params.items())
        return f"{self._kind}:{values}"

    def __repr__(self) -> str:
        """``DelayDistribution.parse('normal:mean=150,sd=20')``."""
        return f"{type(self).__name__}.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """Equal when kind and parameters are."""
        if not isinstance(other, DelayDistribution):
            return NotImplemented
        return self._kind == other._kind and dict(self._params) == dict(other._params)

    def __hash__(self) -> int:
        """Hash of the canonical spec."""
        return hash(str(self))

    def __setattr__(self, name: str, value: object) -> None:
        """Refuses changes: a distribution is a value shared by settings and providers."""
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as the spec string (``__slots__`` plus the frozen ``__setattr__``)."""
        return (type(self).parse, (str(self),))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validates a spec string (or an instance); serializes back to the spec string."""
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """A string with the four forms as examples."""
        return {"type": "string", "examples": list(EXAMPLES.values())}

    @classmethod
    def _validate(cls, value: object) -> DelayDistribution:
        if isinstance(value, DelayDistribution):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise ValueError(f"expected a delay distribution string such as {EXAMPLES['normal']!r}, "
                         f"got {type(value).__name__}")
