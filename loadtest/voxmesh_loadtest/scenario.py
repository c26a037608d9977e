"""Scenario files: what a synthetic caller says, when, over what noise, and what it expects.

.. code-block:: yaml

    name: book-a-table
    agent: restaurant-host
    noise: {kind: white, level_dbfs: -50}
    turns:
      - say: "Hi, I'd like a table for two tomorrow at seven."
        expect: ["table"]
      - say: "Actually, make that four people."
        barge_in_after_ms: 800    # speak 0.8 s into the agent's previous answer
      - wav: recordings/thanks.wav
        pause_ms: 1000

Text turns are synthesized once with the local Piper voice and cached; WAV turns are read from
disk (16-bit mono, any rate). Errors name the field, as agent files do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


class Turn(BaseModel):
    """One caller utterance."""

    model_config = ConfigDict(extra="forbid")

    say: str | None = Field(default=None, min_length=1, description="Text to synthesize")
    wav: Path | None = Field(default=None, description="A recording to play instead")
    #: Silence after the agent's previous answer ends, before this turn.
    pause_ms: int = Field(default=600, ge=0, le=60_000)
    #: Speak this turn this long after the agent's previous answer starts (a barge-in).
    barge_in_after_ms: int | None = Field(default=None, ge=0, le=60_000)
    #: Phrases that must be heard in the agent's answer (case-insensitive).
    expect: list[str] = Field(default_factory=list)
    #: How long to wait for the answer.
    answer_timeout_s: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _one_source(self) -> Turn:
        if (self.say is None) == (self.wav is None):
            raise ValueError("a turn needs exactly one of `say` or `wav`")
        return self

    @property
    def label(self) -> str:
        """What the caller says, for reports."""
        return self.say if self.say is not None else f"<{self.wav}>"


class Noise(BaseModel):
    """Background noise mixed into everything the caller sends."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["white", "pink"] = "white"
    level_dbfs: float = Field(default=-50.0, ge=-90, le=-10)


class Scenario(BaseModel):
    """A whole synthetic call."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    agent: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]+$")
    noise: Noise | None = None
    #: Wait for the agent's greeting (if it has one) before the first turn.
    wait_for_greeting: bool = True
    turns: list[Turn] = Field(min_length=1)

    @model_validator(mode="after")
    def _first_turn_cannot_barge_in(self) -> Scenario:
        if self.turns[0].barge_in_after_ms is not None and not self.wait_for_greeting:
            raise ValueError("turns.0.barge_in_after_ms: the first turn can only interrupt "
                             "the greeting (set wait_for_greeting: true)")
        return self


def load_scenario(path: Path) -> Scenario:
    """Reads and validates a scenario file; WAV paths are resolved next to it.

    Raises:
        ScenarioError: Unreadable YAML, a bad value, or a missing WAV file.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping with `name` and `turns`")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as error:
        lines = [f"{path}: invalid scenario"]
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "(top level)"
            lines.append(f"  {where}: {item['msg']}")
        raise ScenarioError("\n".join(lines)) from None
    for index, turn in enumerate(scenario.turns):
        if turn.wav is not None:
            turn.wav = turn.wav if turn.wav.is_absolute() else path.parent / turn.wav
            if not turn.wav.is_file():
                raise ScenarioError(f"{path}: turns.{index}.wav: no such file {turn.wav}")
    return scenario
