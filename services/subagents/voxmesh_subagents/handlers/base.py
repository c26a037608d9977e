"""What a task type is: a name, a JSON Schema for its arguments and an async ``run``.

Handlers hold no retry, metrics or tracing logic: the runner validates the arguments before
``run``, times it, traces it, retries retryable failures on any replica and records the outcome.
A handler raises :class:`~voxmesh.errors.VoxmeshError` subclasses: ``retryable`` decides whether
the task is queued again (:class:`~voxmesh.errors.UnavailableError` is; an
:class:`~voxmesh.errors.InvalidInputError` is not). Any other exception counts as retryable, so
a bug ends in the dead-letter stream after the last attempt rather than looping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import jsonschema
from opentelemetry.trace import Span

from voxmesh.errors import InvalidInputError

COMPONENT = "subagents"


@dataclass(frozen=True)
class TaskContext:
    """What a handler knows about the task it runs.

    Attributes:
        task_id: The task.
        session_id: Session of the turn that started it.
        turn_index: That turn.
        attempt: 1 on the first run, higher on retries (possibly on another replica).
        span: The run's span, for handler-specific attributes.
    """

    task_id: str
    session_id: str
    turn_index: int
    attempt: int
    span: Span


class TaskHandler(ABC):
    """Base class of a task type.

    Subclasses set :attr:`name`, :attr:`description` and :attr:`schema` and implement
    :meth:`run`; :meth:`start` and :meth:`close` are optional hooks.
    """

    #: Task type, as in ``StartTaskRequest.task_type`` and the subject ``voxmesh.tasks.<name>``.
    name: ClassVar[str]
    description: ClassVar[str]
    #: JSON Schema (draft 2020-12) of the arguments object.
    schema: ClassVar[dict[str, Any]]

    def validate(self, args: Any) -> None:
        """Checks ``args`` against :attr:`schema`.

        Raises:
            InvalidInputError: ``ARGUMENTS_INVALID`` with the failing field, e.g.
                ``arguments_json.top_k``.
        """
        validator = jsonschema.Draft202012Validator(self.schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if error is None:
            return
        path = ".".join(str(part) for part in error.absolute_path)
        raise InvalidInputError(
            f"arguments of {self.name}: {error.message}"
            + (f" (at {path})" if path else ""),
            reason="ARGUMENTS_INVALID",
            field=f"arguments_json.{path}" if path else "arguments_json",
            component=COMPONENT)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepares the handler (load a model); called once before the first task."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases what the handler holds; called once at shutdown."""

    @abstractmethod
    async def run(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Runs one task with validated ``args`` and returns its JSON-serializable result."""
