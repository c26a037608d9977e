"""Provider endpointing hints and the worker's end-of-turn silence."""

from __future__ import annotations

import pytest

from voxmesh.v1 import stt_pb2
from voxmesh_worker.provider_endpointing import ProviderEndpointing

ENDPOINT = stt_pb2.SpeechEvent.ENDPOINT
UTTERANCE_END = stt_pb2.SpeechEvent.UTTERANCE_END
SPEECH_STARTED = stt_pb2.SpeechEvent.SPEECH_STARTED
SILENCE_MS, MIN_MS = 448, 160


def endpointing() -> ProviderEndpointing:
    return ProviderEndpointing(silence_ms=SILENCE_MS, min_silence_ms=MIN_MS)


def test_without_hints_the_worker_waits_out_its_own_silence() -> None:
    hints = endpointing()
    hints.on_speech(1200)
    assert hints.required_silence_ms() == SILENCE_MS
    assert not hints.turn_over(SILENCE_MS - 32) and hints.turn_over(SILENCE_MS)


@pytest.mark.parametrize("kind, at_ms", [
    (ENDPOINT, 1500),        # speech ended at 1200, provider endpointing 300 ms
    (UTTERANCE_END, 1180),   # the last word ended a little before the VAD let go
])
def test_a_hint_about_this_pause_ends_the_turn_at_the_minimum(kind: int, at_ms: int) -> None:
    hints = endpointing()
    hints.on_speech(1200)
    hints.on_speech_event(kind, at_ms)
    assert hints.hinted and hints.required_silence_ms() == MIN_MS
    assert not hints.turn_over(MIN_MS - 1) and hints.turn_over(MIN_MS)


def test_a_late_hint_about_an_earlier_pause_is_ignored() -> None:
    hints = endpointing()
    hints.on_speech(1200)
    hints.on_speech(2600)  # the caller went on before the hint about 1200 arrived
    hints.on_speech_event(ENDPOINT, 1500)
    assert not hints.hinted and hints.required_silence_ms() == SILENCE_MS


def test_speech_after_the_hint_voids_it() -> None:
    hints = endpointing()
    hints.on_speech(1200)
    hints.on_speech_event(ENDPOINT, 1500)
    hints.on_speech(1600)  # within the VAD's hangover of the hinted position: same utterance
    assert hints.hinted
    hints.on_speech(1900)
    assert not hints.hinted and hints.required_silence_ms() == SILENCE_MS


def test_the_providers_speech_started_after_the_hint_voids_it() -> None:
    hints = endpointing()
    hints.on_speech(1200)
    hints.on_speech_event(UTTERANCE_END, 1200)
    hints.on_speech_event(SPEECH_STARTED, 1100)  # earlier speech onset, delivered late
    assert hints.hinted
    hints.on_speech_event(SPEECH_STARTED, 1700)
    assert not hints.hinted


def test_the_end_of_a_turn_clears_the_hint() -> None:
    hints = endpointing()
    hints.on_speech(800)
    hints.on_speech_event(ENDPOINT, 1100)
    hints.on_turn_end()
    assert hints.required_silence_ms() == SILENCE_MS


def test_unknown_kinds_change_nothing() -> None:
    hints = endpointing()
    hints.on_speech(800)
    hints.on_speech_event(stt_pb2.SpeechEvent.KIND_UNSPECIFIED, 1100)
    assert not hints.hinted


@pytest.mark.parametrize("minimum", [-1, SILENCE_MS + 1])
def test_the_minimum_must_lie_within_the_worker_silence(minimum: int) -> None:
    with pytest.raises(ValueError, match="min_silence_ms"):
        ProviderEndpointing(silence_ms=SILENCE_MS, min_silence_ms=minimum)
