"""``voxmesh-operator``: run the operator, simulate a pool, or print the CRD."""

from __future__ import annotations

import argparse
import sys
from importlib import resources

CRD_FILE = "agentpools.voxmesh.dev.yaml"


def crd_text() -> str:
    """The AgentPool CustomResourceDefinition, as YAML."""
    return resources.files("voxmesh_operator").joinpath("crd", CRD_FILE).read_text()


def _run(args: argparse.Namespace) -> int:
    import kopf

    from voxmesh.logs import setup_logging
    from voxmesh.metrics import setup_metrics
    from voxmesh_operator import main as handlers
    from voxmesh_operator.settings import OperatorSettings

    settings: OperatorSettings = handlers.SETTINGS
    setup_logging("operator", settings.log_level, settings.log_format)
    setup_metrics("operator")
    namespaces = args.namespace or settings.namespaces
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        # One replica (the chart's Deployment uses Recreate): no peering CRD to install.
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    return 0


def _simulate(argv: list[str]) -> int:
    from voxmesh_operator.simulator.cli import main as simulate

    return simulate(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        raise SystemExit(_simulate(argv[1:]))
    parser = argparse.ArgumentParser(
        prog="voxmesh-operator",
        description="Keeps warm pools of Voxmesh agent workers and drains them on rollouts.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("--namespace", action="append", default=[],
                     help="watch this namespace (repeatable); default: the whole cluster")
    run.add_argument("--health-port", type=int, default=8080, help="liveness endpoint port")
    commands.add_parser("crd", help="print the AgentPool CustomResourceDefinition")
    commands.add_parser("simulate", help="simulate a pool under synthetic calls (see --help)")
    args = parser.parse_args(argv)
    if args.command == "crd":
        sys.stdout.write(crd_text())
        raise SystemExit(0)
    raise SystemExit(_run(args))


if __name__ == "__main__":
    main()
