"""The event loop every Voxmesh process runs on: uvloop when installed, else asyncio's own.

uvloop (libuv) does the per-message work of a busy media process (socket reads and writes,
timers, wakeups) at a fraction of the default loop's cost, and that work is most of what a
voice platform does: every call moves 50 audio frames a second through each hop. The default
loop stays available (``VOXMESH_EVENT_LOOP=asyncio``) for debugging and for platforms without
uvloop wheels.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from voxmesh.errors import ConfigError

T = TypeVar("T")

#: Environment variable that picks the loop: ``auto`` (default), ``uvloop`` or ``asyncio``.
ENV = "VOXMESH_EVENT_LOOP"


def loop_kind() -> str:
    """The loop this process runs on: ``uvloop`` or ``asyncio``.

    Raises:
        ConfigError: ``VOXMESH_EVENT_LOOP`` has an unknown value, or asks for uvloop where it
            is not installed.
    """
    wanted = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"{ENV} must be auto, uvloop or asyncio, not {wanted!r}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401 - only whether it imports
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError(f"{ENV}=uvloop, but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs ``main`` to completion on a fresh loop of :func:`loop_kind`'s kind.

    An invalid ``VOXMESH_EVENT_LOOP`` ends the process with one line and exit code 2.
    """
    try:
        kind = loop_kind()
    except ConfigError as exc:
        main.close()
        print(f"invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if kind == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
