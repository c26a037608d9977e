"""Configuration of the guardrails service (environment prefix ``VOXMESH_GUARDRAILS_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from voxmesh.config import GrpcServiceSettings


class GuardrailsSettings(GrpcServiceSettings):
    """Guardrails service settings."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_GUARDRAILS_", extra="ignore")

    port: int = Field(default=50054, ge=0, le=65535)
    #: Agent files whose ``guardrails:`` policies (and system prompts) are enforced:
    #: comma-separated paths or a JSON list.
    agent_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    #: A request naming an agent with no file here: ``default`` checks it with the default
    #: policy (no leak protection, there is no prompt to protect); ``reject`` answers NOT_FOUND.
    unknown_agent: Literal["default", "reject"] = "default"
    #: Longest caller transcript accepted by CheckInput.
    max_text_chars: int = Field(default=4000, ge=1)
    #: Longest sentence accepted by CheckOutput.
    max_sentence_chars: int = Field(default=2000, ge=1)
    #: Judge finished turns with an LLM, off the conversation path (docs/guardrails.md). Off
    #: by default: on a small machine the judge competes with the conversation model.
    audit: bool = False
    #: LanguageModel gRPC address of the judge (the local model's service, or a replica with a
    #: cloud provider); empty judges with the inline rules only.
    audit_llm_address: str = "127.0.0.1:50052"
    audit_timeout_s: float = Field(default=30.0, gt=0)
    #: Judgements in flight at once, per replica.
    audit_concurrency: int = Field(default=1, ge=1, le=64)

    @field_validator("agent_files", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
