"""Silero voice activity detection, run with onnxruntime directly (no torch).

The model (shipped in ``livekit-plugins-silero``) takes 512-sample windows at 16 kHz plus the
previous 64 samples as context, and carries an RNN state between windows.

Every call of a worker has its own :class:`VadStream` (audio carry-over and RNN state); one
:class:`VadBatcher` runs the windows of all calls together. The model accepts a batch of windows
with one state row each, and a batch costs far less than its windows one by one: the fixed cost
of an ONNX run and of a hop to the inference thread (~0.1 ms each) is paid once per batch
instead of once per call and window. Nothing waits to fill a batch: windows that arrive while
one batch runs form the next, so a lone call sees no added delay and a busy worker batches
naturally.

A window quieter than the stream's quiet level is silence whatever the model says (see
:class:`VadStream`), so its verdict is known before the model runs. The model must still see it,
in order, to keep the call's RNN state exact, but nothing waits for that: quiet windows are
deferred and run later in bulk (before the call's next audible window, or when any call has
collected half a second of them, together with every other call's), which shares their ONNX
runs and spares a quiet call's audio the hop to the inference thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, NamedTuple

import numpy as np

from voxmesh.audio import pcm16_to_float
from voxmesh.models import silero_vad_model

WINDOW_SAMPLES = 512
WINDOW_MS = 32
_CONTEXT = 64
_STATE_SHAPE = (2, 1, 128)
#: Deferred quiet windows of one call (512 ms) that make every call's run in a shared batch.
_MAX_DEFERRED = 16
#: Resolution of a window's quiet tail: 2 ms blocks.
_BLOCK_SAMPLES = 32
_BLOCK_MS = 2


class VadWindow(NamedTuple):
    """The verdict on one 32 ms window.

    Attributes:
        probability: Speech probability (0 for a window quieter than the stream's quiet level).
        quiet_tail_ms: How much of the window's end is below the quiet level, in 2 ms steps:
            where in the window the sound stopped. Turn-taking measures the silence after
            speech from there, not from the window's end, so a turn's end does not depend on
            where the last word fell in its 32 ms window.
    """

    probability: float
    quiet_tail_ms: int


def load_vad_session() -> Any:
    """Loads the Silero ONNX model once per process; sessions share it (``run`` is thread-safe)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        str(silero_vad_model()), sess_options=options, providers=["CPUExecutionProvider"]
    )


class VadStream:
    """The VAD state of one call: audio not yet in a full window, context and RNN state.

    Attributes:
        quiet_level: RMS amplitude (full scale = 1) below which a window is silence whatever
            the model says. Silero's recurrent state keeps the speech probability high for a
            window or two after speech stops (its "hangover"), which made every end of turn
            40-60 ms late on clean audio. Speech, even a trailing "s", is far louder than
            -60 dBFS; line noise usually is too, so noisy calls simply keep the model's say.
    """

    def __init__(self, quiet_dbfs: float = -60.0) -> None:
        """Creates the state of a new call (silence before its first sample).

        Args:
            quiet_dbfs: Level of a window that counts as silence (see ``quiet_level``).
        """
        self.quiet_level = 10 ** (quiet_dbfs / 20)
        self.state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        #: Model inputs of quiet windows whose run is deferred (their verdict is known).
        self.deferred: list[np.ndarray] = []
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def take_windows(self, pcm16: bytes) -> list[np.ndarray]:
        """Adds 16 kHz PCM16 audio; returns the model inputs (context + window) it completed."""
        self._pending = np.concatenate([self._pending, pcm16_to_float(pcm16)])
        inputs = []
        while self._pending.size >= WINDOW_SAMPLES:
            window, self._pending = self._pending[:WINDOW_SAMPLES], self._pending[WINDOW_SAMPLES:]
            inputs.append(np.concatenate([self._context, window]))
            self._context = window[-_CONTEXT:]
        return inputs


def run_windows(session: Any, work: Sequence[tuple[VadStream, list[np.ndarray]]]) -> list[float]:
    """Runs the windows of several calls in batches; returns the probabilities in input order.

    Each call's windows run in order (its RNN state links them); step ``k`` of the batch holds
    the ``k``-th window of every call that has one. Updates each stream's state.
    """
    offsets, total = [], 0
    for _, inputs in work:
        offsets.append(total)
        total += len(inputs)
    probabilities = [0.0] * total
    sample_rate = np.array(16000, dtype=np.int64)
    for step in range(max((len(inputs) for _, inputs in work), default=0)):
        rows = [index for index, (_, inputs) in enumerate(work) if len(inputs) > step]
        batch = np.stack([work[index][1][step] for index in rows])
        state = np.concatenate([work[index][0].state for index in rows], axis=1)
        out, new_state = session.run(None, {"input": batch, "state": state, "sr": sample_rate})
        for row, index in enumerate(rows):
            work[index][0].state = new_state[:, row:row + 1].copy()
            probabilities[offsets[index] + step] = float(out[row, 0])
    return probabilities


class VadBatcher:
    """Runs the VAD windows of every call of a worker in shared batches on one thread."""

    def __init__(self, session: Any, executor: Executor) -> None:
        """Creates the batcher.

        Args:
            session: The Silero ONNX session (:func:`load_vad_session`).
            executor: The inference thread; ONNX runs never block the event loop.
        """
        self._session = session
        self._executor = executor
        #: Work for the next batch: a call's windows, and who waits for their probabilities
        #: (None for deferred quiet windows run in bulk).
        self._queue: list[tuple[VadStream, list[np.ndarray],
                                asyncio.Future[list[float]] | None]] = []
        self._runner: asyncio.Task[None] | None = None
        #: Calls with deferred quiet windows, by id.
        self._deferring: dict[int, VadStream] = {}

    async def process(self, stream: VadStream, pcm16: bytes) -> list[VadWindow]:
        """The verdict on each window the audio completes, in order."""
        inputs = stream.take_windows(pcm16)
        if not inputs:
            return []
        if all(_is_quiet(window[_CONTEXT:], stream.quiet_level) for window in inputs):
            stream.deferred.extend(inputs)
            self._deferring[id(stream)] = stream
            if len(stream.deferred) >= _MAX_DEFERRED:
                self.run_deferred()
            return [VadWindow(0.0, WINDOW_MS)] * len(inputs)
        # The model must have seen the call's deferred windows before this audio.
        work, stream.deferred = [*stream.deferred, *inputs], []
        self._deferring.pop(id(stream), None)
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._submit(stream, work, future)
        probabilities = (await future)[len(work) - len(inputs):]
        # The model still sees quiet windows (its state must follow the audio); only its
        # verdict on them is overruled.
        return [_verdict(window[_CONTEXT:], probability, stream.quiet_level)
                for window, probability in zip(inputs, probabilities, strict=True)]

    def forget(self, stream: VadStream) -> None:
        """Drops an ended call's deferred windows (nothing will ever wait for them)."""
        stream.deferred = []
        self._deferring.pop(id(stream), None)

    def run_deferred(self) -> None:
        """Queues every call's deferred quiet windows, so they share the batch's runs."""
        for stream in self._deferring.values():
            self._submit(stream, stream.deferred, None)
            stream.deferred = []
        self._deferring.clear()

    def _submit(self, stream: VadStream, windows: list[np.ndarray],
                future: asyncio.Future[list[float]] | None) -> None:
        self._queue.append((stream, windows, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_queued(), name="vad-batches")

    async def aclose(self) -> None:
        """Stops the batch runner; pending callers get a CancelledError."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for _, _, future in self._queue:
            if future is not None:
                future.cancel()
        self._queue.clear()
        self._deferring.clear()

    async def _run_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            taken, self._queue = self._queue, []
            # A call's audio loop awaits each chunk, but merge per stream anyway so that two
            # queued chunks of one call can never run side by side with one state.
            merged: dict[int, tuple[VadStream, list[np.ndarray]]] = {}
            for stream, inputs, _ in taken:
                merged.setdefault(id(stream), (stream, []))[1].extend(inputs)
            work = list(merged.values())
            try:
                flat = await loop.run_in_executor(
                    self._executor, run_windows, self._session, work)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting call
                for _, _, future in taken:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                continue
            by_stream = dict(zip(merged, _split(flat, [len(w[1]) for w in work]), strict=True))
            for stream, inputs, future in taken:
                own = by_stream[id(stream)]
                result, by_stream[id(stream)] = own[:len(inputs)], own[len(inputs):]
                if future is not None and not future.done():
                    future.set_result(result)


def _is_quiet(window: np.ndarray, quiet_level: float) -> bool:
    return float(np.sqrt(window @ window / window.size)) < quiet_level


def _verdict(window: np.ndarray, probability: float, quiet_level: float) -> VadWindow:
    if _is_quiet(window, quiet_level):
        return VadWindow(0.0, WINDOW_MS)
    blocks = window.reshape(-1, _BLOCK_SAMPLES)
    loud = np.flatnonzero(np.einsum("ij,ij->i", blocks, blocks)
                          >= quiet_level * quiet_level * _BLOCK_SAMPLES)
    quiet_blocks = blocks.shape[0] - 1 - int(loud[-1]) if loud.size else blocks.shape[0]
    return VadWindow(probability, quiet_blocks * _BLOCK_MS)


def _split(values: list[float], sizes: list[int]) -> list[list[float]]:
    out, start = [], 0
    for size in sizes:
        out.append(values[start:start + size])
        start += size
    return out
