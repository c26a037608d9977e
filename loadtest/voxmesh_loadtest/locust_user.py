"""The load tester's scenarios under Locust: :class:`VoiceCallUser`, for distributed load.

Each Locust user places one synthetic call per iteration with the real
:class:`~voxmesh_loadtest.caller.SyntheticCall` and reports what the caller measured as Locust
request events, so Locust's stats, charts, CSV files and master/worker aggregation show them:

* ``voice`` ``voice_to_voice``: end of the caller's utterance to the agent's first audio;
* ``voice`` ``first_transcript``: end of the utterance to the first transcript, floored at 0.
  Speculative STT often transcribes before the caller stops speaking, which the
  ``voxmesh loadtest`` report shows as a negative time; Locust's stats assume times are not
  negative (its maximum starts at 0, and workers merge maxima), so here it is how long the
  caller waited for the transcript: 0 while STT keeps up, growing when it falls behind;
* ``voice`` ``barge_in_stop``: the caller starting to interrupt, to the agent's audio stopping;
* ``voice`` *error kind* (``no_answer``, ``content``, ``barge_in``...): a failure per turn error;
* ``call`` ``call``: the whole call, its duration; a failure when any part of it failed;
* ``call`` *error kind* (``rejected``, ``connect_failed``, ``call_ended``...): a failure per
  call error.

Response times are the measured milliseconds (type, then name, as in Locust's tables).

Options (Locust command line, config file or environment): ``--host`` is the edge URL;
``--scenario PATH`` (``VOXMESH_LOCUST_SCENARIO``), ``--transport`` (``VOXMESH_LOCUST_TRANSPORT``,
``webrtc`` by default), ``--call-wait MIN,MAX`` seconds between a user's calls
(``VOXMESH_LOCUST_CALL_WAIT``, ``0.5,1.5``), ``--no-content-check``, and
``VOXMESH_LOADTEST_CACHE`` for the caller audio cache (``.voxmesh/cache/caller``).

Design: the calls run in a helper process, not in Locust's process
-------------------------------------------------------------------

Importing ``locust`` runs ``gevent.monkey.patch_all()``: ``socket``, ``select``/``selectors``,
``threading``, ``time.sleep``, ``subprocess``, ``queue`` and friends become gevent's cooperative
versions, process-wide. The callers are asyncio (aiortc, aioice, aiohttp), and asyncio in that
process is built on the patched modules: its selector loop gets gevent's ``GeventSelector``, its
sockets are gevent sockets, and ``asyncio.to_thread`` (used for Whisper content checks and Piper)
gets "threads" that are greenlets of the calling thread's hub, so CPU work blocks the loop.
Running the loop in a real OS thread from gevent's threadpool does not help, because the thread
still uses the patched modules. ``LOCUST_SKIP_MONKEY_PATCH`` would leave the standard library
alone, but Locust's own runners, master/worker messaging and web UI assume it is patched. So
both worlds stay, in separate processes:

* one **helper process per Locust process** (per worker on a distributed run), started with
  :mod:`gevent.subprocess` as a fresh interpreter (``python -m voxmesh_loadtest.locust_user``;
  never forked, so none of the parent's patched modules or hub state comes along), with
  ``LOCUST_SKIP_MONKEY_PATCH=1`` in its environment so that importing this module there does
  not patch anything; it checks that on start and refuses to run otherwise. It prepares the
  caller audio once (Piper, cached), then runs every call its users ask for concurrently on one
  plain asyncio loop with real sockets and threads;
* the users talk to it over its stdin/stdout in JSON lines. gevent's subprocess pipes are
  cooperative, so a user waiting for its call's result yields to the other users, and a single
  reader greenlet hands each result to the user waiting for it;
* cleanup follows the pipe: a user stopped mid-call (``--stop-timeout`` ran out) sends a cancel,
  and the helper hangs that call up; when Locust quits, or dies, the helper reads end-of-file,
  hangs up every call still active and exits. It ignores SIGINT so that a Ctrl-C in the
  terminal (sent to the whole process group) cannot drop calls without hanging them up.
  Nothing of the call's own measurement crosses the process boundary but its result: every
  time is taken on the helper's clock, as in ``voxmesh loadtest``.

Locust's users are greenlets and cheap; a call costs the helper an aiortc peer connection and
real-time audio, so a machine's calls are bounded by the helper's CPU. Run one Locust worker
per core (``--processes`` or several ``--worker``), each with its own helper.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue
import gevent.subprocess
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from voxmesh_loadtest.caller import TRANSPORTS
from voxmesh_loadtest.results import CallResult, TurnResult
from voxmesh_loadtest.scenario import Scenario, ScenarioError, load_scenario

log = logging.getLogger("voxmesh.loadtest.locust")

#: Default wait between a user's calls, seconds (``between(0.5, 1.5)``).
DEFAULT_CALL_WAIT = (0.5, 1.5)
#: Where synthesized caller audio is cached unless ``VOXMESH_LOADTEST_CACHE`` says otherwise.
DEFAULT_CACHE = Path(".voxmesh/cache/caller")
#: How long the helper may take to start and prepare the caller audio.
HELPER_READY_TIMEOUT_S = 300.0
#: How long the helper gets to hang up active calls when Locust quits.
HELPER_CLOSE_TIMEOUT_S = 20.0


class VoiceCallError(Exception):
    """A failed call or turn, as reported to Locust (the message says what happened)."""


class HelperError(RuntimeError):
    """The helper process could not start, or died."""


class HelperClosedError(HelperError):
    """Locust is quitting and has ended the helper: the call was hung up, not failed."""


@events.init_command_line_parser.add_listener
def add_arguments(parser: argparse.ArgumentParser, **_kwargs: Any) -> None:
    """Registers the Voxmesh options on Locust's command line (and its web UI)."""
    parser.add_argument("--scenario", default=os.environ.get("VOXMESH_LOCUST_SCENARIO", ""),
                        help="scenario file (YAML) each call plays (VOXMESH_LOCUST_SCENARIO)")
    parser.add_argument("--transport", choices=TRANSPORTS,
                        default=os.environ.get("VOXMESH_LOCUST_TRANSPORT", "webrtc"),
                        help="how calls reach the edge (VOXMESH_LOCUST_TRANSPORT; webrtc)")
    parser.add_argument("--call-wait", metavar="MIN,MAX",
                        default=os.environ.get("VOXMESH_LOCUST_CALL_WAIT",
                                               ",".join(map(str, DEFAULT_CALL_WAIT))),
                        help="seconds a user waits between calls, uniformly drawn "
                             "(VOXMESH_LOCUST_CALL_WAIT; 0.5,1.5)")
    parser.add_argument("--no-content-check", action="store_true", default=False,
                        help="do not transcribe answers to check the scenario's expected phrases")


def parse_call_wait(value: str) -> tuple[float, float]:
    """Parses ``--call-wait``: ``MIN,MAX`` seconds, or one number for a constant wait.

    Raises:
        ValueError: Not one or two non-negative numbers, or MIN above MAX.
    """
    problem = f"--call-wait {value!r}: expected MIN,MAX seconds with 0 <= MIN <= MAX"
    try:
        parts = [float(part) for part in value.split(",")]
    except ValueError:
        raise ValueError(problem) from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or parts[0] < 0 or parts[0] > parts[1]:
        raise ValueError(problem)
    return parts[0], parts[1]


def call_budget_s(scenario: Scenario) -> float:
    """The longest a call of ``scenario`` can reasonably take, after which it is abandoned."""
    # The greeting wait, each turn's speech, pause, barge-in check and answer timeout, hangup.
    return 30.0 + sum(turn.answer_timeout_s + 25.0 + turn.pause_ms / 1000
                      for turn in scenario.turns) + 30.0


# --- Locust side (gevent) -------------------------------------------------------------------


class CallHelper:
    """The helper process of this Locust process, and the calls waiting on it.

    Args:
        scenario: Scenario file every call plays.
        transport: Transport name (see :data:`~voxmesh_loadtest.caller.TRANSPORTS`).
        cache: Caller audio cache folder.
        check_content: Transcribe answers to check expected phrases.
    """

    def __init__(self, scenario: Path, transport: str, cache: Path, check_content: bool) -> None:
        self.config: dict[str, Any] = {
            "scenario": str(scenario.resolve()), "transport": transport,
            "cache": str(cache.resolve()), "check_content": check_content}
        self._process: gevent.subprocess.Popen | None = None
        self._ready = gevent.event.Event()
        self._failure: str | None = None
        self._pending: dict[int, gevent.event.AsyncResult] = {}
        self._ids = itertools.count()
        self._outbox: gevent.queue.Queue[dict[str, Any] | None] = gevent.queue.Queue()
        self._greenlets: list[gevent.Greenlet] = []
        self._closing = False

    def start(self) -> None:
        """Starts the helper process; :meth:`wait_ready` tells when it can place calls."""
        package_root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "LOCUST_SKIP_MONKEY_PATCH": "1",
               "PYTHONPATH": os.pathsep.join(
                   p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        self._process = gevent.subprocess.Popen(
            [sys.executable, "-m", "voxmesh_loadtest.locust_user"],
            stdin=gevent.subprocess.PIPE, stdout=gevent.subprocess.PIPE, env=env,
            text=True, bufsize=1)
        self._greenlets = [gevent.spawn(self._read), gevent.spawn(self._write)]
        self._send(self.config)

    def wait_ready(self, timeout_s: float = HELPER_READY_TIMEOUT_S) -> None:
        """Blocks (cooperatively) until the helper has prepared the caller audio.

        Raises:
            HelperError: It failed to start, or did not get ready in time.
        """
        if not self._ready.wait(timeout_s):
            raise HelperError(f"the call helper was not ready after {timeout_s:g} s")
        if self._failure is not None:
            raise HelperError(self._failure)

    def place_call(self, edge_url: str, timeout_s: float) -> CallResult:
        """Places one call and waits (cooperatively) for its result.

        A user killed while waiting (Locust's stop timeout ran out) cancels the call, and the
        helper hangs it up.

        Returns:
            What the call measured; a call that outlived ``timeout_s`` is cancelled (hung up)
            and comes back with the error kind ``timeout``.

        Raises:
            HelperError: The helper died, or Locust closed it (:class:`HelperClosedError`).
        """
        self.wait_ready()
        call_id = next(self._ids)
        waiter = gevent.event.AsyncResult()
        self._pending[call_id] = waiter
        try:
            self._send({"op": "call", "id": call_id, "edge_url": edge_url})
            reply = waiter.get(timeout=timeout_s)
        except gevent.Timeout:
            self._send({"op": "cancel", "id": call_id})
            return CallResult(call_id=call_id, transport=self.config["transport"],
                              ended_s=timeout_s, error="timeout",
                              error_message=f"the call took over {timeout_s:g} s; hung up")
        except BaseException:
            # GreenletExit and friends: nobody will read this call's result, so end it now.
            self._send({"op": "cancel", "id": call_id})
            raise
        finally:
            self._pending.pop(call_id, None)
        return call_from_dict(reply)

    def close(self, timeout_s: float = HELPER_CLOSE_TIMEOUT_S) -> None:
        """Ends the helper: it hangs up every active call and exits (killed after ``timeout_s``)."""
        process = self._process
        if process is None:
            return
        self._closing = True
        self._outbox.put(None)  # the writer closes stdin after what is queued
        try:
            process.wait(timeout=timeout_s)
        except gevent.subprocess.TimeoutExpired:
            log.warning("call helper did not exit within %g s; killing it", timeout_s)
            process.kill()
            process.wait()
        gevent.joinall(self._greenlets, timeout=1)

    def _send(self, message: dict[str, Any]) -> None:
        # Queued, not written: putting never switches greenlets, so a user killed mid-send
        # cannot leave half a line in the pipe.
        self._outbox.put(message)

    def _write(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        stdin = self._process.stdin
        try:
            while (message := self._outbox.get()) is not None:
                stdin.write(json.dumps(message) + "\n")
                stdin.flush()
        except OSError:
            pass  # the helper is gone; the reader reports it to whoever waits
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                log.warning("call helper: unexpected output %r", line)
                continue
            if message["op"] == "ready":
                self._ready.set()
            elif message["op"] == "fatal":
                self._failure = f"the call helper failed: {message['error']}"
                self._ready.set()
            elif message["op"] == "result":
                waiter = self._pending.get(message["id"])
                if waiter is not None:
                    waiter.set(message["call"])
        status = self._process.wait()
        self._failure = self._failure or f"the call helper exited (status {status})"
        self._ready.set()
        for waiter in list(self._pending.values()):
            waiter.set_exception(HelperClosedError(self._failure) if self._closing
                                 else HelperError(self._failure))


def call_from_dict(data: dict[str, Any]) -> CallResult:
    """A :class:`CallResult` back from its :meth:`~CallResult.to_dict` form."""
    fields = {key: value for key, value in data.items() if key not in ("ok", "turns")}
    return CallResult(**fields, turns=[TurnResult(**turn) for turn in data["turns"]])


_helper: CallHelper | None = None
_helper_lock = gevent.lock.Semaphore()


def helper_for(environment: Environment) -> CallHelper:
    """This process's helper for the run's options, started on first use.

    Started lazily rather than at ``init`` because a distributed worker only learns the
    master's custom options (``--scenario``...) with its first spawn message.

    Raises:
        HelperError: ``--scenario`` is missing.
    """
    global _helper
    options = environment.parsed_options
    scenario = getattr(options, "scenario", "") or os.environ.get("VOXMESH_LOCUST_SCENARIO", "")
    if not scenario:
        raise HelperError("no scenario: pass --scenario PATH (or VOXMESH_LOCUST_SCENARIO)")
    wanted = CallHelper(
        Path(scenario), getattr(options, "transport", "webrtc"),
        Path(os.environ.get("VOXMESH_LOADTEST_CACHE", str(DEFAULT_CACHE))),
        not getattr(options, "no_content_check", False))
    with _helper_lock:
        if _helper is not None and _helper.config != wanted.config:
            # The web UI changed the options between runs: the old helper's calls are over.
            gevent.spawn(_helper.close)
            _helper = None
        if _helper is None:
            wanted.start()
            _helper = wanted
        return _helper


@events.init.add_listener
def _check_options(environment: Environment, **_kwargs: Any) -> None:
    """Fails fast, before any user starts, on a scenario file that cannot be used."""
    options = environment.parsed_options
    if options is None or getattr(options, "worker", False):
        return  # a worker gets the master's options with its first spawn message
    try:
        parse_call_wait(options.call_wait)
        if options.scenario:
            load_scenario(Path(options.scenario))
        elif options.headless or options.autostart:
            raise ScenarioError("no scenario: pass --scenario PATH (or VOXMESH_LOCUST_SCENARIO)")
    except ValueError as error:  # ScenarioError is one
        # Locust would log a traceback and carry on; a bad option should stop it, plainly.
        sys.exit(f"locust: {error}")


@events.test_stop.add_listener
def _report_last_calls(environment: Environment, **_kwargs: Any) -> None:
    """Sends a worker's stats to the master as soon as its users have stopped.

    A worker reports every few seconds; on ``stop`` it tells the master it has stopped right
    after its users did, and the master then discards its reports. Without this, calls that
    ended during ``--stop-timeout`` (most of them, at the end of a run) would be lost.
    """
    send_stats = getattr(environment.runner, "_send_stats", None)
    if isinstance(environment.runner, WorkerRunner) and send_stats is not None:
        send_stats()


@events.quitting.add_listener
def _close_helper(**_kwargs: Any) -> None:
    if _helper is not None:
        _helper.close()


class VoiceCallUser(User):
    """A caller: one synthetic call of the ``--scenario`` per iteration, to ``--host``.

    Every measurement is a Locust request event (see the module docstring), so the same
    scenarios run under Locust's master and workers across machines.
    """

    #: Locust's --host: the edge URL.
    host = ""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._scenario: Scenario | None = None

    def wait_time(self) -> float:
        """Seconds between this user's calls (``--call-wait``, default 0.5 to 1.5)."""
        options = self.environment.parsed_options
        low, high = parse_call_wait(getattr(options, "call_wait", "") or "0.5,1.5")
        return random.uniform(low, high)  # noqa: S311 - pacing, not security

    @task
    def call(self) -> None:
        """Places one call and reports its measurements to Locust."""
        if not self.host:
            log.error("no edge URL: pass --host http://EDGE:PORT")
            raise StopUser()
        try:
            helper = helper_for(self.environment)
            if self._scenario is None:
                self._scenario = load_scenario(Path(helper.config["scenario"]))
            result = helper.place_call(self.host, timeout_s=call_budget_s(self._scenario))
        except HelperClosedError:
            raise StopUser() from None
        except (HelperError, ScenarioError) as error:
            # Recorded as a failed call so that the run's stats and exit status show it.
            self.environment.events.request.fire(
                request_type="call", name="call", response_time=0.0, response_length=0,
                exception=VoiceCallError(str(error)), context={})
            log.error("%s", error)
            raise StopUser() from error
        report_call(self.environment, result)


def report_call(environment: Environment, result: CallResult) -> None:
    """Fires Locust request events for one call's measurements and errors."""
    fire = environment.events.request.fire
    for turn in result.turns:
        for name, value in (("voice_to_voice", turn.voice_to_voice_ms),
                            ("first_transcript", turn.first_transcript_ms),
                            ("barge_in_stop", turn.barge_in_stop_ms)):
            if value is not None:
                fire(request_type="voice", name=name, response_time=max(0.0, value),
                     response_length=0, exception=None, context={"call_id": result.call_id})
        if turn.error:
            fire(request_type="voice", name=turn.error, response_time=0.0, response_length=0,
                 exception=VoiceCallError(turn.error_message or turn.error),
                 context={"call_id": result.call_id, "turn": turn.index})
    if result.error:
        fire(request_type="call", name=result.error, response_time=0.0, response_length=0,
             exception=VoiceCallError(result.error_message or result.error),
             context={"call_id": result.call_id})
    kinds = sorted({result.error, *(turn.error for turn in result.turns)} - {""})
    fire(request_type="call", name="call",
         response_time=max(0.0, (result.ended_s - result.started_s) * 1000), response_length=0,
         exception=VoiceCallError(f"failed: {', '.join(kinds)}") if kinds else None,
         context={"call_id": result.call_id, "session_id": result.session_id})


# --- Helper side (plain asyncio, no gevent patching) ----------------------------------------


def _helper_main() -> int:
    """The helper process: reads call requests on stdin, writes results on stdout."""
    import gevent.monkey

    if gevent.monkey.is_anything_patched():
        print("voxmesh locust helper: the standard library is gevent-patched; "
              "start it with LOCUST_SKIP_MONKEY_PATCH=1", file=sys.stderr)
        return 2
    # Locust decides when calls end (end-of-file on stdin), so they are always hung up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol gets the real stdout; anything a library prints goes to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="voxmesh locust helper: %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(protocol))
    except Exception as error:  # noqa: BLE001 - reported to Locust, which stops the users
        _send(protocol, {"op": "fatal", "error": f"{type(error).__name__}: {error}"})
        return 1
    return 0


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


async def _serve(out: IO[str]) -> None:
    from voxmesh_loadtest.caller import ContentChecker, SyntheticCall
    from voxmesh_loadtest.runner import prepare_turns

    loop = asyncio.get_running_loop()
    lines = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    config = json.loads(await lines.readline())
    scenario = load_scenario(Path(config["scenario"]))
    turns = await asyncio.to_thread(prepare_turns, scenario, Path(config["cache"]), 0)
    content = ContentChecker() if config["check_content"] and any(
        turn.expect for turn in scenario.turns) else None
    started = time.monotonic()
    active: dict[int, asyncio.Task[CallResult]] = {}

    def finished(call: SyntheticCall, task: asyncio.Task[CallResult]) -> None:
        active.pop(call.result.call_id, None)
        if task.cancelled():
            return  # Locust cancelled it: nobody waits for its result
        error = task.exception()
        if error is not None:
            # A bug, not a measured failure; still answer, or the user would wait it out.
            log.error("call %d crashed", call.result.call_id, exc_info=error)
            call.result.error = call.result.error or "crashed"
            call.result.error_message = f"{type(error).__name__}: {error}"
        with contextlib.suppress(BrokenPipeError):  # Locust is gone; the call is over anyway
            _send(out, {"op": "result", "id": call.result.call_id,
                        "call": call.result.to_dict()})

    _send(out, {"op": "ready"})
    while line := await lines.readline():
        message = json.loads(line)
        call_id = message["id"]
        if message["op"] == "call":
            call = SyntheticCall(call_id, scenario, turns, message["edge_url"],
                                 config["transport"], started, content)
            task = asyncio.create_task(call.run(), name=f"call-{call_id}")
            active[call_id] = task
            task.add_done_callback(functools.partial(finished, call))
        elif message["op"] == "cancel" and call_id in active:
            if not active[call_id].cancelling():
                active[call_id].cancel()
    # End of file: Locust is quitting (or gone). Hang up whatever is still active; a call
    # already cancelled is hanging up, and a second cancel would cut its hangup short.
    for task in list(active.values()):
        if not task.cancelling():
            task.cancel()
    await asyncio.gather(*active.values(), return_exceptions=True)


if __name__ == "__main__":
    sys.exit(_helper_main())
