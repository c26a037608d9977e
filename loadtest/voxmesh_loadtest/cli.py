r"""``voxmesh loadtest``: synthetic calls against an edge, with a report and SLO checks.

    voxmesh loadtest run loadtest/scenarios/book-a-table.yaml --calls 20 --concurrency 4 \\
        --arrival poisson:rate=0.5 --url http://127.0.0.1:8080 --out loadtest-report \\
        --slo "p95_voice_to_voice_ms<=2000" --slo "error_rate<=0.02"

``--local`` starts the embedded platform for the run (``--latency-model`` with latency-model
providers, for capacity runs). Exit status: 0 when every SLO held, 1 when one was missed, 2 for
a bad command line or scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from voxmesh import eventloop
from voxmesh_loadtest.arrivals import ArrivalError, Arrivals
from voxmesh_loadtest.caller import TRANSPORTS
from voxmesh_loadtest.runner import LoadRun, RunConfig, to_json
from voxmesh_loadtest.scenario import ScenarioError, load_scenario
from voxmesh_loadtest.stats import summarize

#: Environment of a local stack on latency-model providers (constant delays, so the
#: platform-added latency is the caller's voice-to-voice minus a known sum).
LATENCY_MODEL_ENV = {
    "VOXMESH_STT_PROVIDER": "latency-model",
    "VOXMESH_LLM_PROVIDER": "latency-model",
    "VOXMESH_TTS_PROVIDER": "latency-model",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``loadtest`` command line."""
    parser = argparse.ArgumentParser(prog="voxmesh loadtest",
                                     description="Load-test Voxmesh with synthetic calls.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a scenario as many calls")
    run.add_argument("scenario", type=Path, help="scenario file (YAML)")
    run.add_argument("--calls", type=int, default=None, help="calls to place")
    run.add_argument("--duration", type=float, default=None, metavar="S",
                     help="stop starting calls after S seconds")
    run.add_argument("--concurrency", type=int, default=4, help="calls active at once (4)")
    run.add_argument("--arrival", default="constant:rate=1",
                     help="constant:rate=R | ramp:from=A,to=B,over=S | poisson:rate=R | "
                          "burst:size=N,every=S (constant:rate=1)")
    run.add_argument("--transport", choices=TRANSPORTS, default="webrtc")
    run.add_argument("--url", default="http://127.0.0.1:8080", help="edge URL")
    run.add_argument("--local", action="store_true",
                     help="start the embedded platform for the run")
    run.add_argument("--latency-model", action="store_true",
                     help="with --local: latency-model providers (capacity runs only)")
    run.add_argument("--out", type=Path, default=Path("loadtest-report"),
                     help="report folder (loadtest-report)")
    run.add_argument("--slo", action="append", default=[], metavar="METRIC<=VALUE",
                     help="fail the run when missed, e.g. 'p95_voice_to_voice_ms<=1500' "
                          "(repeatable)")
    run.add_argument("--grafana-url", default=None,
                     help="link trace ids to this Grafana (e.g. http://grafana:3000)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--no-content-check", action="store_true",
                     help="skip transcribing answers for expected phrases")
    run.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                     help="extra labels recorded in the report (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config, slos, labels = _configure(args)
    except (ScenarioError, ArrivalError, ValueError) as error:
        print(f"voxmesh loadtest: {error}", file=sys.stderr)
        return 2
    try:
        run_json = eventloop.run(_run(args, config, labels))
    except KeyboardInterrupt:
        return 130
    return _finish(args, run_json, slos)


def _configure(args: argparse.Namespace) -> tuple[RunConfig, list[Any], dict[str, Any]]:
    from voxmesh_loadtest.slo import parse_slos

    if args.calls is None and args.duration is None:
        raise ValueError("give --calls, --duration, or both")
    if args.calls is not None and args.calls < 1:
        raise ValueError("--calls must be at least 1")
    if args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if args.latency_model and not args.local:
        raise ValueError("--latency-model needs --local (providers are the platform's "
                         "configuration; set VOXMESH_*_PROVIDER=latency-model on a deployment)")
    labels: dict[str, Any] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    config = RunConfig(
        edge_url=args.url.rstrip("/"), scenario=load_scenario(args.scenario),
        arrivals=Arrivals.parse(args.arrival), calls=args.calls, duration_s=args.duration,
        concurrency=args.concurrency, transport=args.transport, seed=args.seed,
        check_content=not args.no_content_check)
    return config, parse_slos(args.slo), labels


async def _run(args: argparse.Namespace, config: RunConfig,
               labels: dict[str, Any]) -> dict[str, Any]:
    async with _platform(args) as edge_url:
        if edge_url:
            config.edge_url = edge_url
        if args.latency_model:
            labels["providers"] = "latency-model (stt, llm, tts)"
        result = await LoadRun(config).run()
    run_json = to_json(result, labels)
    seen = sorted({f"{kind}={name}" for call in result.calls
                   for kind, name in call.providers.items()})
    if seen:
        run_json["labels"]["providers_reported"] = ", ".join(seen)
        if any("latency-model" in name for name in seen):
            run_json["labels"].setdefault("providers", "latency-model")
    return run_json


@contextlib.asynccontextmanager
async def _platform(args: argparse.Namespace) -> AsyncIterator[str]:
    """The embedded platform for ``--local`` runs, stopped afterwards; "" otherwise."""
    if not args.local:
        yield ""
        return
    from voxmesh.cli.stack import Ports, Stack

    env = dict(LATENCY_MODEL_ENV) if args.latency_model else {}
    with tempfile.TemporaryDirectory(prefix="voxmesh-loadtest-") as state:
        stack = Stack(state_dir=Path(state), ports=Ports.free(), env=env)
        print("• starting the local platform", file=sys.stderr, flush=True)
        try:
            await stack.start(lambda name, what, s: print(
                f"  {name:<10} {what} ({s:.0f}s)", file=sys.stderr) if what == "ready" else None)
            yield stack.edge_url
        finally:
            await stack.stop()


def _finish(args: argparse.Namespace, run_json: dict[str, Any], slos: list[Any]) -> int:
    from voxmesh_loadtest.report import write_report
    from voxmesh_loadtest.slo import check

    summary = summarize(run_json)
    results = check(summary, slos)
    json_path, html_path = write_report(run_json, args.out, results, args.grafana_url)
    v2v = summary["voice_to_voice_ms"]
    print(f"{summary['calls_ok']}/{summary['calls']} calls ok over {args.transport}; "
          f"voice-to-voice p50 {v2v['p50']} ms, p95 {v2v['p95']} ms; errors "
          f"{summary['errors'] or 'none'}", file=sys.stderr)
    print(f"report: {html_path} ({json_path.name})", file=sys.stderr)
    missed = [r for r in results if not r.passed]
    for result in missed:
        print(f"SLO missed: {result.describe()}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
