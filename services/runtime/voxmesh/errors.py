"""Errors shared by every Voxmesh process, and their translation to gRPC statuses.

Providers and services raise :class:`VoxmeshError` subclasses; the gRPC edge of each service turns
them into a status code plus a :class:`voxmesh.v1.common_pb2.ErrorDetail` packed into
``google.rpc.Status.details`` (the gRPC rich error model). Clients read them back with
:func:`error_from_rpc`.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from voxmesh.metrics import meter
from voxmesh.v1 import common_pb2


class VoxmeshError(Exception):
    """Base error with a stable reason, the field at fault and whether a retry may help."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        field: str = "",
        component: str = "",
        retryable: bool | None = None,
    ) -> None:
        """Create an error.

        Args:
            message: Human-readable explanation, safe to show to users (no secrets).
            reason: Stable upper-snake identifier, e.g. ``"FRAME_TOO_LARGE"``.
            field: Request field at fault, if any.
            component: The service or provider that raised it.
            retryable: Overrides the class default.
        """
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.field = field
        self.component = component
        if retryable is not None:
            self.retryable = retryable

    def to_detail(self) -> common_pb2.ErrorDetail:
        """Returns the wire form of this error."""
        return common_pb2.ErrorDetail(
            reason=self.reason,
            field=self.field,
            retryable=self.retryable,
            component=self.component,
            message=self.message,
        )


class InvalidInputError(VoxmeshError):
    """The request is malformed; retrying it unchanged will fail again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class OutOfOrderError(VoxmeshError):
    """A message arrived in a state where it is not allowed (e.g. audio before config)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFoundError(VoxmeshError):
    """An id (session, task) is unknown."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhaustedError(VoxmeshError):
    """A size or rate limit was exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(VoxmeshError):
    """A dependency is down or the process is draining; another replica or a retry may work."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class ProviderError(VoxmeshError):
    """A model provider failed. ``retryable`` tells whether a retry or fallback may help."""

    code = grpc.StatusCode.INTERNAL


class ConfigError(Exception):
    """Configuration is invalid. Raised at startup; the message is shown as is."""


def to_rpc_status(error: VoxmeshError) -> grpc.Status:
    """Builds a rich gRPC status carrying the error's :class:`ErrorDetail`."""
    detail = any_pb2.Any()
    detail.Pack(error.to_detail())
    status = status_pb2.Status(
        code=_CODE_NUMBERS[error.code], message=error.message, details=[detail]
    )
    return rpc_status.to_status(status)


_RPC_ERRORS = meter("rpc").create_counter(
    "voxmesh.rpc.errors", description="RPCs ended with an error (attributes code, reason)")


def initialize_error_metrics() -> None:
    """Exports the RPC error counter at 0 before the first error (see docs/metrics.md)."""
    _RPC_ERRORS.add(0)


async def abort(context: grpc.aio.ServicerContext, error: VoxmeshError) -> NoReturn:
    """Ends the RPC with the error's status code and detail."""
    _RPC_ERRORS.add(1, {"code": error.code.name, "reason": error.reason,
                        "component": error.component})
    await context.abort_with_status(to_rpc_status(error))
    raise AssertionError("abort_with_status returned")  # pragma: no cover - it always raises


def error_from_rpc(error: grpc.RpcError) -> common_pb2.ErrorDetail:
    """Extracts the :class:`ErrorDetail` from a failed call, synthesizing one if absent."""
    status = None
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        status = None
    if status is not None:
        for any_detail in status.details:
            detail = common_pb2.ErrorDetail()
            if any_detail.Unpack(detail):
                return detail
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return common_pb2.ErrorDetail(
        reason=code.name,
        retryable=code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED),
        message=details or code.name,
    )


_CODE_NUMBERS = {code: getattr(code_pb2, code.name) for code in grpc.StatusCode}
