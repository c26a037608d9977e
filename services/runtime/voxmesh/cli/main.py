"""The ``voxmesh`` command.

Subcommands: ``up``, ``call``, ``trace``, ``models``, ``loadtest``, ``token`` and
``livekit-agent``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from voxmesh import __version__


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``voxmesh`` command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadtest"]:
        # The load tester is its own package (loadtest/) with its own command line.
        from voxmesh_loadtest.cli import main as loadtest

        sys.exit(loadtest(argv[1:]))
    parser = argparse.ArgumentParser(prog="voxmesh", description="Voxmesh voice agent platform")
    parser.add_argument("--version", action="version", version=f"voxmesh {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole platform on this machine")
    up.add_argument("--port", type=int, default=8080, help="web page / edge port (8080)")
    up.add_argument("--state-dir", type=Path, default=Path(".voxmesh"),
                    help="logs and JetStream data (.voxmesh)")
    up.add_argument("--agent", type=Path, metavar="FILE",
                    help="agent definition (YAML), e.g. services/worker/agents/restaurant-host.yaml")

    call = commands.add_parser("call", help="place a synthetic call and print what happened")
    call.add_argument("--url", default="http://127.0.0.1:8080", help="edge URL")
    call.add_argument("--agent", default="default")
    call.add_argument("--say", action="append", default=[], metavar="TEXT",
                      help="a sentence to speak (repeatable; spoken with Piper)")
    call.add_argument("--wav", action="append", default=[], type=Path, metavar="FILE",
                      help="a 16-bit WAV file to play as one turn (repeatable)")
    call.add_argument("--json", action="store_true", help="print the report as JSON")
    call.add_argument("--cache-dir", type=Path, default=Path(".voxmesh/cache/caller"))

    trace = commands.add_parser("trace", help="show per-turn waterfalls of a local session")
    trace.add_argument("session", nargs="?", help="session id (a prefix is enough); "
                       "without it, list the sessions")
    trace.add_argument("--state-dir", type=Path, default=Path(".voxmesh"))

    commands.add_parser("loadtest", help="load-test with synthetic calls (voxmesh loadtest -h)")
    models = commands.add_parser("models", help="install and verify the local models")
    models.add_argument("--no-install", action="store_true", help="verify only")

    from voxmesh.cli.token import configure_parser as configure_token  # standard library only

    configure_token(commands.add_parser("token", help="mint a LiveKit room join token"))
    commands.add_parser("livekit-agent",
                        help="run the LiveKit edge (python -m voxmesh_edge.livekit; docs/livekit.md)")

    args = parser.parse_args(argv)
    if args.command == "up":
        sys.exit(_up(args))
    if args.command == "call":
        sys.exit(_call(args))
    if args.command == "trace":
        sys.exit(_trace(args))
    if args.command == "models":
        from voxmesh.cli.models import install_and_verify

        sys.exit(install_and_verify(install=not args.no_install))
    if args.command == "token":
        from voxmesh.cli.token import run as run_token

        sys.exit(run_token(args))
    if args.command == "livekit-agent":
        from voxmesh_edge.livekit.__main__ import main as livekit_agent

        livekit_agent()


def _up(args: argparse.Namespace) -> int:
    from voxmesh.cli.stack import Ports, Stack

    state_dir = args.state_dir.resolve()
    env = {"VOXMESH_TRACE_FILE": str(state_dir / "traces.jsonl")}
    if args.agent is not None:
        from voxmesh.agent import AgentFileError, load_agent

        try:
            agent = load_agent(args.agent)
        except AgentFileError as exc:
            print(f"invalid agent file:\n{exc}", file=sys.stderr)
            return 2
        env.update(VOXMESH_WORKER_AGENT_FILE=str(args.agent.resolve()),
                   VOXMESH_EDGE_AGENT=agent.name)
        print(f"agent: {agent.name} ({args.agent})", file=sys.stderr)
    stack = Stack(state_dir=state_dir, ports=Ports(edge=args.port), env=env)

    def report(name: str, what: str, seconds: float) -> None:
        mark = "✓" if what == "ready" else "…"
        print(f"  {mark} {name:<7} {what:<9} {seconds:5.1f}s", file=sys.stderr, flush=True)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print("starting Voxmesh (embedded default: local models, no keys)", file=sys.stderr)
        try:
            await stack.start(report)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            await stack.stop()
            return 1
        print(f"\nVoxmesh is up. Open {stack.edge_url} and press Call."
              f"\nLogs: {stack.state_dir / 'logs'}   Turn waterfalls: voxmesh trace <session>"
              f"   Stop: Ctrl-C\n", file=sys.stderr, flush=True)
        restarts: dict[str, list[float]] = {}
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
            for name, code in stack.exited().items():
                if stop.is_set():
                    break
                recent = [t for t in restarts.get(name, []) if time.monotonic() - t < 60]
                if len(recent) >= 3:
                    print(f"error: {name} keeps exiting (code {code}); stopping.\n"
                          f"{stack.log_tail(name)}", file=sys.stderr)
                    stop.set()
                    break
                print(f"  ! {name} exited with code {code}; restarting", file=sys.stderr)
                restarts[name] = [*recent, time.monotonic()]
                await stack.spawn(name)
        print("stopping…", file=sys.stderr)
        await stack.stop()
        print("stopped.", file=sys.stderr)
        return 0

    return asyncio.run(run())


def _trace(args: argparse.Namespace) -> int:
    from voxmesh.cli.waterfall import render_session, sessions

    path = args.state_dir / "traces.jsonl"
    if not path.exists():
        print(f"error: no trace file at {path}; start the platform with `voxmesh up` first",
              file=sys.stderr)
        return 1
    if not args.session:
        for session_id, turns, started in sessions(path):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started / 1e9))
            print(f"{session_id}  {stamp}  {turns} turn(s)")
        return 0
    try:
        print(render_session(path, args.session))
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _call(args: argparse.Namespace) -> int:
    from voxmesh.cli.call import run_call, summarize
    from voxmesh.cli.caller_audio import CallerVoice, load_wav

    utterances: list[tuple[str, bytes]] = []
    if args.say:
        voice = CallerVoice(args.cache_dir)
        utterances += [(text, voice.speak(text)) for text in args.say]
    for path in args.wav:
        try:
            utterances.append(("", load_wav(path)))
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    if not utterances:
        utterances = [(t, CallerVoice(args.cache_dir).speak(t)) for t in (
            "Hello, what can you help me with today?",
            "What is the capital of France?",
            "Thank you, goodbye.")]

    def show(turn: object) -> None:
        if not args.json:
            v2v = getattr(turn, "voice_to_voice_ms", None)
            print(f"turn {getattr(turn, 'index', '?')}: "
                  f"{f'{v2v:.0f} ms' if v2v is not None else 'no answer'}", file=sys.stderr)

    from voxmesh_edge.client import CallRejectedError

    try:
        report = asyncio.run(run_call(args.url, utterances, agent=args.agent, on_turn=show))
    except CallRejectedError as exc:
        print(f"error: call rejected: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot reach the edge at {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else summarize(report))
    return 0 if all(t.voice_to_voice_ms is not None for t in report.turns) else 1


if __name__ == "__main__":
    main()
