"""Agent definitions: one YAML file per agent, validated with errors that name the field.

An agent file holds the persona (system prompt), the greeting, the voice, the turn-taking
settings, LLM settings and tools. ``voxmesh up --agent FILE`` and the Helm chart both use it;
the worker reads it from ``VOXMESH_WORKER_AGENT_FILE``. Examples: ``services/worker/agents/``.

.. code-block:: yaml

    name: restaurant-host
    system_prompt: You are the host of Trattoria Roma...
    greeting: Trattoria Roma, how can I help you?
    voice: {voice: en_US-joe-medium, speaking_rate: 1.0}
    turn_taking: {min_endpointing_ms: 448, max_endpointing_ms: 2000}
    tools:
      - name: book_table
        description: Book a table.
        parameters: {type: object, properties: {...}, required: [...]}
        python: voxmesh_worker.example_tools:book_table
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voxmesh.guardrail_policy import GuardrailPolicy

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"


class AgentFileError(ValueError):
    """An agent file is missing, unreadable or invalid. The message lists every problem."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo ("gretting") must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoiceSettings(_Strict):
    """Which voice speaks, and how fast."""

    #: Provider-specific voice id: a Piper voice name, or a Cartesia voice UUID.
    voice: str = ""
    #: Provider-specific model id (Cartesia ``sonic-2``); empty: the provider's default.
    model: str = Field(default="", max_length=100)
    speaking_rate: float = Field(default=1.0, ge=0.5, le=2.0)


class SpeechRecognitionSettings(_Strict):
    """How the caller is transcribed."""

    #: BCP-47 language of the caller.
    language: str = Field(default="en-US", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    #: Names and terms to favour: menu items, product names, the caller's likely words.
    #: Deepgram uses them as keyterms; providers without such a feature ignore them.
    keyterms: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("keyterms")
    @classmethod
    def _clean_keyterms(cls, keyterms: list[str]) -> list[str]:
        cleaned = [term.strip() for term in keyterms]
        if any(not term or len(term) > 100 for term in cleaned):
            raise ValueError("each keyterm must be 1-100 characters")
        return cleaned


class TurnTakingSettings(_Strict):
    """When the caller's turn is over, and what interrupts the agent."""

    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    #: Speech this long starts a turn and can interrupt the agent.
    min_speech_ms: int = Field(default=96, ge=32, le=2000)
    #: A pause this long sends the utterance to STT speculatively.
    speculative_pause_ms: int = Field(default=160, ge=32, le=5000)
    #: Silence that ends a turn that sounds finished.
    min_endpointing_ms: int = Field(default=448, ge=64, le=10000)
    #: Silence the agent waits for a caller who stopped mid-sentence or mid-number (○).
    max_endpointing_ms: int = Field(default=5000, ge=64, le=30000)
    #: Silence the agent waits for a caller who asked for time ("hold on", ◐).
    long_pause_ms: int = Field(default=10000, ge=64, le=60000)
    #: Text rules on the transcript ("a table for", "my number is 555") spot unfinished turns.
    text_turn_detection: bool = True
    #: Ask the LLM to start each answer with a turn-completion mark ✓ ○ ◐ (seed guide 5.8.5).
    turn_completion_tags: bool = False
    #: Caller sound shorter than this never interrupts the agent (coughs, clicks, bursts).
    min_interruption_ms: int = Field(default=320, ge=0, le=5000)

    @model_validator(mode="after")
    def _ordered(self) -> TurnTakingSettings:
        if self.max_endpointing_ms < self.min_endpointing_ms:
            raise ValueError("max_endpointing_ms must be at least min_endpointing_ms")
        return self


class LLMSettings(_Strict):
    """Generation settings of the agent's conversation model."""

    max_tokens: int = Field(default=120, ge=1, le=4096)
    temperature: float = Field(default=0.3, ge=0, le=2)


class HttpTool(_Strict):
    """An HTTP endpoint called with the validated arguments as a JSON body (or query)."""

    url: str = Field(pattern=r"^https?://")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)


class SubagentTool(_Strict):
    """A tool that starts a subagent task and returns at once (async inference).

    The call's result is ``{"status": "in_progress"}`` until the task finishes; then the
    result replaces it in context and the agent speaks it at the next turn boundary.
    """

    #: Task type of the subagents service: ``knowledge_lookup``, ``reasoning``, ``summarize``.
    task: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    #: Fixed arguments merged under the model's (e.g. ``{kb: northwind}``).
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolDefinition(_Strict):
    """A function the LLM may call."""

    name: str = Field(pattern=_NAME)
    description: str = Field(min_length=1)
    #: JSON Schema (draft 2020-12) of the arguments; calls are validated against it.
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    #: ``module:function`` of a local Python tool...
    python: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    #: ...or an HTTP tool...
    http: HttpTool | None = None
    #: ...or a subagent task that runs in the background.
    subagent: SubagentTool | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: Spoken at once while the tool runs, e.g. "One moment while I check that."
    filler: str = ""
    #: Spoken if the tool is still running after ``watchdog_s``.
    watchdog_line: str = "Still working on it, thanks for waiting."
    watchdog_s: float = Field(default=4.0, gt=0, le=300)
    #: Spoken when the tool fails or times out (the error result stays in context).
    error_line: str = "Sorry, I couldn't get that done just now. Please try again in a moment."
    #: The caller interrupting cancels the call (CANCELLED result). If false the call runs to
    #: completion in the background and its result replaces the IN_PROGRESS placeholder.
    interruptible: bool = True

    @field_validator("parameters")
    @classmethod
    def _json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if schema.get("type", "object") != "object":
            raise ValueError("tool parameters must be a JSON Schema of type 'object'")
        return schema

    @model_validator(mode="after")
    def _one_implementation(self) -> ToolDefinition:
        if sum(kind is not None for kind in (self.python, self.http, self.subagent)) != 1:
            raise ValueError("a tool needs exactly one of 'python', 'http' or 'subagent'")
        return self


class AgentDefinition(_Strict):
    """Everything that makes an agent."""

    name: str = Field(pattern=_NAME)
    system_prompt: str = Field(min_length=1, max_length=20_000)
    greeting: str = ""
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    stt: SpeechRecognitionSettings = Field(default_factory=SpeechRecognitionSettings)
    turn_taking: TurnTakingSettings = Field(default_factory=TurnTakingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tools: list[ToolDefinition] = Field(default_factory=list)
    #: Inline input/output checks by the guardrails service (docs/guardrails.md).
    guardrails: GuardrailPolicy = Field(default_factory=GuardrailPolicy)

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[ToolDefinition]) -> list[ToolDefinition]:
        names = [tool.name for tool in tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
        return tools


def load_agent(path: str | Path) -> AgentDefinition:
    """Reads and validates an agent file.

    Raises:
        AgentFileError: naming the file and every invalid field, e.g.
            ``agents/x.yaml: turn_taking.min_endpointing_ms: Input should be greater than or
            equal to 64 (got 10)``.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentFileError(f"{path}: cannot read agent file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise AgentFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise AgentFileError(f"{path}: an agent file must be a YAML mapping")
    try:
        return AgentDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = re.sub(r"^Value error, ", "", error["msg"])
            got = f" (got {error['input']!r})" if error["type"] != "missing" and not isinstance(
                error.get("input"), dict | list) else ""
            problems.append(f"{path}: {where}: {message}{got}")
        raise AgentFileError("\n".join(problems)) from None
