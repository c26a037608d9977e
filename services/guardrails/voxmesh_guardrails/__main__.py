"""Entry point: ``python -m voxmesh_guardrails``."""

from __future__ import annotations

from voxmesh.agent import AgentFileError, load_agent
from voxmesh.config import load_settings
from voxmesh.grpcserver import GrpcApp, run_app
from voxmesh.logs import setup_logging
from voxmesh.v1 import guardrails_pb2, guardrails_pb2_grpc
from voxmesh_guardrails.audit import AuditRunner
from voxmesh_guardrails.engine import Guardrails
from voxmesh_guardrails.service import GuardrailsServicer
from voxmesh_guardrails.settings import GuardrailsSettings


def load_guardrails(settings: GuardrailsSettings) -> Guardrails:
    """Loads and compiles the agent files named by the settings.

    Raises:
        SystemExit: naming the file and field at fault, before anything listens.
    """
    try:
        return Guardrails(load_agent(path) for path in settings.agent_files)
    except (AgentFileError, ValueError) as exc:
        raise SystemExit(f"guardrails: {exc}") from None


def main() -> None:
    """Starts the guardrails service."""
    settings = load_settings(GuardrailsSettings)
    setup_logging("guardrails", settings.log_level, settings.log_format)
    guardrails = load_guardrails(settings)
    servicer = GuardrailsServicer(guardrails, settings)
    audit = AuditRunner(guardrails, settings) if settings.audit else None

    run_app(GrpcApp(
        name="guardrails",
        service_names=[guardrails_pb2.DESCRIPTOR.services_by_name["Guardrails"].full_name],
        register=lambda server: guardrails_pb2_grpc.add_GuardrailsServicer_to_server(
            servicer, server),
        settings=settings,
        on_start=audit.start if audit else None,
        on_stop=audit.stop if audit else None,
    ))


if __name__ == "__main__":
    main()
