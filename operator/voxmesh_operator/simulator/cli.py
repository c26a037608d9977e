"""``voxmesh-operator simulate``: compare buffer sizes on the same synthetic calls."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn

from voxmesh_operator.simulator.model import (
    ConfigError,
    SimulationConfig,
    SimulationReport,
    simulate,
)
from voxmesh_operator.simulator.report import (
    buffer_slug,
    comparison_table,
    simulation_json,
    write_pool_svg,
)
from voxmesh_operator.spec import IntOrPercent, InvalidSpecError, PoolSpec

PROG = "voxmesh-operator simulate"
#: Compared when no --buffer is given: short of, near and covering the default burst.
DEFAULT_BUFFERS = ("5", "15", "25")
DEFAULTS = SimulationConfig()

#: The flag behind each configuration field and spec field, for error messages.
FLAG_OF_FIELD = {
    "duration_s": "--duration-s", "arrival_rate_per_s": "--rate", "burst_size": "--burst-size",
    "burst_every_s": "--burst-every-s", "burst_spread_s": "--burst-spread-s",
    "mean_call_s": "--mean-call-s", "call_sigma": "--call-sigma",
    "start_delay_s": "--start-delay-s", "start_delay_cv": "--start-delay-cv",
    "rollout_at_s": "--rollout-at-s", "step_s": "--step-s",
    "reconcile_interval_s": "--reconcile-interval-s",
}
FLAG_OF_SPEC_FIELD = {
    "minReplicas": "--min", "maxReplicas": "--max", "maxSessionsPerWorker": "--max-sessions",
    "drainTimeoutSeconds": "--drain-timeout-s", "scaleDownDelaySeconds": "--scale-down-delay-s",
}


class _UsageError(Exception):
    """A bad command line; reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _count_or_percent(raw: str) -> IntOrPercent:
    number = raw.strip()
    try:
        return IntOrPercent.parse(int(number) if number.lstrip("-").isdigit() else number, "")
    except InvalidSpecError as error:
        # argparse names the flag; the spec's message starts with the (here empty) field.
        raise argparse.ArgumentTypeError(str(error).removeprefix(": ")) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``voxmesh-operator simulate``."""
    d = DEFAULTS
    parser = _Parser(
        prog=PROG,
        description="Runs the operator's real planner against a simulated cluster: Poisson "
                    "calls plus bursts, lognormal call lengths, pod start delays and a "
                    "template rollout. One run per --buffer, all on the same calls.")
    calls = parser.add_argument_group("calls")
    calls.add_argument("--duration-s", type=float, default=d.duration_s,
                       help="simulated seconds (default: %(default)g)")
    calls.add_argument("--rate", type=float, default=d.arrival_rate_per_s,
                       help="Poisson call arrivals per second (default: %(default)g)")
    calls.add_argument("--burst-size", type=int, default=d.burst_size,
                       help="calls per burst, 0 for none (default: %(default)d)")
    calls.add_argument("--burst-every-s", type=float, default=d.burst_every_s,
                       help="seconds between bursts (default: %(default)g)")
    calls.add_argument("--burst-spread-s", type=float, default=d.burst_spread_s,
                       help="a burst's calls arrive within this many seconds "
                            "(default: %(default)g)")
    calls.add_argument("--mean-call-s", type=float, default=d.mean_call_s,
                       help="mean call length, lognormal (default: %(default)g)")
    calls.add_argument("--call-sigma", type=float, default=d.call_sigma,
                       help="sigma of the log of the call length: its spread "
                            "(default: %(default)g)")
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--start-delay-s", type=float, default=d.start_delay_s,
                         help="mean seconds from pod creation to a warm worker, gamma "
                              "distributed (default: %(default)g)")
    cluster.add_argument("--start-delay-cv", type=float, default=d.start_delay_cv,
                         help="coefficient of variation of the start delay "
                              "(default: %(default)g)")
    cluster.add_argument("--reconcile-interval-s", type=float,
                         default=d.reconcile_interval_s,
                         help="seconds between reconciles (default: %(default)g)")
    cluster.add_argument("--step-s", type=float, default=d.step_s,
                         help="simulation time step (default: %(default)g)")
    pool = parser.add_argument_group("pool spec")
    pool.add_argument("--min", type=int, default=d.spec.min_replicas,
                      help="minReplicas (default: %(default)d)")
    pool.add_argument("--max", type=int, default=d.spec.max_replicas,
                      help="maxReplicas (default: %(default)d)")
    pool.add_argument("--buffer", type=_count_or_percent, action="append", default=[],
                      help="buffer, a count or a percentage like 20%%; repeat to compare "
                           f"(default: {' '.join(DEFAULT_BUFFERS)})")
    pool.add_argument("--max-sessions", type=int, default=d.spec.max_sessions_per_worker,
                      help="maxSessionsPerWorker (default: %(default)d)")
    pool.add_argument("--drain-timeout-s", type=int, default=d.spec.drain_timeout_s,
                      help="drainTimeoutSeconds (default: %(default)d)")
    pool.add_argument("--max-surge", type=_count_or_percent, default=d.spec.max_surge,
                      help="updateStrategy.maxSurge, a count or a percentage "
                           "(default: %(default)s)")
    pool.add_argument("--scale-down-delay-s", type=int, default=d.spec.scale_down_delay_s,
                      help="scaleDownDelaySeconds (default: %(default)d)")
    run = parser.add_argument_group("run")
    rollout = run.add_mutually_exclusive_group()
    rollout.add_argument("--rollout-at-s", type=float, default=None,
                         help="when the pod template changes (default: half the duration)")
    rollout.add_argument("--no-rollout", action="store_true", help="no template change")
    run.add_argument("--seed", type=int, default=d.seed,
                     help="random seed; every buffer gets the same calls (default: %(default)d)")
    run.add_argument("--out", type=Path, default=None,
                     help="write simulation.json and one SVG per buffer into this folder")
    return parser


def _configs(args: argparse.Namespace) -> list[SimulationConfig]:
    """One configuration per distinct buffer, in the order given.

    Raises:
        _UsageError: A value the spec or the simulation rejects.
    """
    buffers = list(dict.fromkeys(args.buffer)) or [_count_or_percent(raw) for raw in DEFAULT_BUFFERS]
    rollout_at = None if args.no_rollout else (
        args.rollout_at_s if args.rollout_at_s is not None else args.duration_s / 2)
    configs = []
    for buffer in buffers:
        try:
            spec = PoolSpec(min_replicas=args.min, max_replicas=args.max, buffer=buffer,
                            max_sessions_per_worker=args.max_sessions,
                            drain_timeout_s=args.drain_timeout_s, max_surge=args.max_surge,
                            scale_down_delay_s=args.scale_down_delay_s)
        except InvalidSpecError as error:
            message = str(error)
            for name, flag in FLAG_OF_SPEC_FIELD.items():
                message = message.replace(name, flag)
            raise _UsageError(message) from None
        try:
            configs.append(SimulationConfig(
                duration_s=args.duration_s, arrival_rate_per_s=args.rate,
                burst_size=args.burst_size, burst_every_s=args.burst_every_s,
                burst_spread_s=args.burst_spread_s, mean_call_s=args.mean_call_s,
                call_sigma=args.call_sigma, start_delay_s=args.start_delay_s,
                start_delay_cv=args.start_delay_cv,
                reconcile_interval_s=args.reconcile_interval_s, step_s=args.step_s,
                spec=spec, rollout_at_s=rollout_at, seed=args.seed))
        except ConfigError as error:
            raise _UsageError(f"{FLAG_OF_FIELD.get(error.field, error.field)}: "
                              f"{error.reason}") from None
    return configs


def _prepare_out(out: Path | None) -> None:
    if out is None:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _UsageError(f"--out: cannot create {out}: {error.strerror or error}") from None


def main(argv: list[str]) -> int:
    """Runs one simulation per buffer and prints the comparison.

    Args:
        argv: The arguments after ``simulate``.

    Returns:
        The exit status: 0, or 2 for a bad command line.
    """
    try:
        args = build_parser().parse_args(argv)
        configs = _configs(args)
        _prepare_out(args.out)
    except _UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0

    reports: list[SimulationReport] = []
    for config in configs:
        started = time.perf_counter()
        report = simulate(config)
        reports.append(report)
        print(f"buffer {report.buffer}: {report.calls} calls, {report.cold_waits} cold waits, "
              f"{report.calls_cut} cut ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr, flush=True)

    first = configs[0]
    rollout = (f"rollout at {first.rollout_at_s:g} s" if first.rollout_at_s is not None
               else "no rollout")
    print(f"{first.duration_s:g} s, {first.arrival_rate_per_s:g} calls/s + bursts of "
          f"{first.burst_size} every {first.burst_every_s:g} s, mean call "
          f"{first.mean_call_s:g} s, pod start {first.start_delay_s:g} s, {rollout}, "
          f"seed {first.seed}")
    sys.stdout.write(comparison_table(reports))

    if args.out is not None:
        (args.out / "simulation.json").write_text(simulation_json(configs, reports))
        for report in reports:
            write_pool_svg(args.out / f"pool-buffer-{buffer_slug(report.buffer)}.svg", report)
        print(f"wrote {args.out / 'simulation.json'} and {len(reports)} SVG(s)",
              file=sys.stderr)
    return 0

