"""Configuration of the subagents service (environment prefix ``VOXMESH_SUBAGENTS_``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from voxmesh.config import GrpcServiceSettings


class SubagentsSettings(GrpcServiceSettings):
    """Subagents service settings."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_SUBAGENTS_", extra="ignore")

    port: int = Field(default=50055, ge=0, le=65535)
    #: Name of this replica in task records and logs (default: host name and pid).
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    #: Tasks one replica runs at once; more stay queued for other replicas.
    max_concurrency: int = Field(default=4, ge=1, le=256)
    #: Seconds without an ack or progress signal before JetStream redelivers a task elsewhere.
    #: A running task signals progress every third of it, so this is the failover time.
    ack_wait_s: float = Field(default=10.0, ge=0.5, le=600)
    #: Runs of a task before it fails for good and goes to the dead-letter stream.
    max_attempts: int = Field(default=5, ge=1, le=50)
    #: Delay before the first retry of a failed run; doubled per attempt up to the maximum.
    retry_backoff_s: float = Field(default=1.0, ge=0, le=600)
    retry_backoff_max_s: float = Field(default=30.0, ge=0, le=3600)
    #: Longest wait of one pull; bounds how long a draining replica keeps its pull open.
    fetch_timeout_s: float = Field(default=1.0, ge=0.1, le=30)
    #: JetStream de-duplication window for task ids and results.
    duplicate_window_s: float = Field(default=120.0, ge=1, le=86400)
    #: Hours a task record (and a queued task) is kept.
    task_ttl_hours: float = Field(default=24.0, gt=0)
    #: Hours a result stays in the results stream for a session that reconnects.
    result_ttl_hours: float = Field(default=1.0, gt=0)
    #: Days a dead letter is kept for inspection.
    dead_letter_ttl_days: float = Field(default=7.0, gt=0)
    #: Largest ``arguments_json`` accepted.
    max_arguments_bytes: int = Field(default=64 * 1024, ge=256)
    #: LLM service for the reasoning and summarize tasks.
    llm_address: str = "127.0.0.1:50052"
    llm_timeout_s: float = Field(default=60.0, gt=0)
    reasoning_max_tokens: int = Field(default=384, ge=16, le=4096)
    summary_max_tokens: int = Field(default=200, ge=16, le=4096)
    #: Folder of knowledge bases: ``kb`` names a subfolder of it (relative paths are taken from
    #: the working directory).
    kb_dir: Path = Path("services/worker/agents/kb")
    #: Paragraphs longer than this many characters are split (the model reads 256 word pieces).
    kb_chunk_chars: int = Field(default=800, ge=100, le=4000)
    #: Load the embedding model at startup rather than on the first lookup.
    preload_embeddings: bool = True
