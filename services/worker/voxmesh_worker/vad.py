"""Silero voice activity detection, run with onnxruntime directly (no torch).

The model (shipped in ``livekit-plugins-silero``) takes 512-sample windows at 16 kHz plus the
previous 64 samples as context, and carries an RNN state between windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxmesh.audio import pcm16_to_float
from voxmesh.models import silero_vad_model

WINDOW_SAMPLES = 512
WINDOW_MS = 32
_CONTEXT = 64


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


class SileroVAD:
    """Per-call VAD state over a shared ONNX session."""

    def __init__(self, session: Any) -> None:
        """Creates VAD state for one call."""
        self._session = session
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input = np.zeros((1, _CONTEXT + WINDOW_SAMPLES), dtype=np.float32)
        self._sr = np.array(16000, dtype=np.int64)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, pcm16: bytes) -> list[float]:
        """Adds 16 kHz PCM16 audio; returns the speech probability of each completed window."""
        self._pending = np.concatenate([self._pending, pcm16_to_float(pcm16)])
        probabilities = []
        while self._pending.size >= WINDOW_SAMPLES:
            window, self._pending = self._pending[:WINDOW_SAMPLES], self._pending[WINDOW_SAMPLES:]
            self._input[0, _CONTEXT:] = window
            out, self._state = self._session.run(
                None, {"input": self._input, "state": self._state, "sr": self._sr}
            )
            self._input[0, :_CONTEXT] = window[-_CONTEXT:]
            probabilities.append(float(out.item()))
        return probabilities
