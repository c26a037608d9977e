from voxmesh.v1 import stt_pb2
from voxmesh_worker.provider_endpointing import ProviderEndpointing
from voxmesh_worker.turns import TurnDetector, TurnSignal


def _run(probabilities: list[float]) -> list[tuple[int, TurnSignal]]:
    detector = TurnDetector(threshold=0.5, min_speech_ms=96, speculative_pause_ms=160,
                            endpoint_silence_ms=384)
    return [(i, s) for i, p in enumerate(probabilities) if (s := detector.update(p)) is not None]


def test_speech_then_silence_gives_start_pause_and_end() -> None:
    signals = _run([0.9] * 10 + [0.05] * 20)
    assert signals == [(2, TurnSignal.SPEECH_STARTED), (14, TurnSignal.PAUSE),
                       (21, TurnSignal.END_OF_TURN)]


def test_short_blip_is_not_speech() -> None:
    assert _run([0.9, 0.9, 0.05, 0.9, 0.05] + [0.0] * 20) == []


def test_resumed_speech_postpones_the_end_and_pauses_again() -> None:
    signals = _run([0.9] * 5 + [0.05] * 8 + [0.9] * 5 + [0.05] * 13)
    kinds = [s for _, s in signals]
    assert kinds == [TurnSignal.SPEECH_STARTED, TurnSignal.PAUSE, TurnSignal.PAUSE,
                     TurnSignal.END_OF_TURN]


def test_uncertain_probabilities_hold_state() -> None:
    # 0.4 is between threshold-0.15 and threshold: neither speech nor silence.
    signals = _run([0.9] * 5 + [0.4] * 30)
    assert [s for _, s in signals] == [TurnSignal.SPEECH_STARTED]


def test_a_provider_endpoint_ends_the_turn_after_a_short_confirmed_pause() -> None:
    detector = TurnDetector(threshold=0.5, min_speech_ms=96, speculative_pause_ms=160,
                            endpoint_silence_ms=448)
    hints = ProviderEndpointing(silence_ms=448, min_silence_ms=160)
    signals = [detector.update(0.9) for _ in range(10)]
    assert TurnSignal.SPEECH_STARTED in signals and detector.user_speaking
    hints.on_speech(320)
    hints.on_speech_event(stt_pb2.SpeechEvent.ENDPOINT, 330)
    ended_at = None
    for window in range(1, 15):
        signal = detector.update(0.05)
        if signal is None and detector.user_speaking and hints.turn_over(detector.silence_ms):
            signal = detector.end_turn()
        if signal is TurnSignal.END_OF_TURN:
            ended_at = window * 32
            break
    # The 160 ms window signals the pause (the speculative final is asked for); the turn ends
    # at the next window instead of after 448 ms of silence.
    assert ended_at == 192
    assert not detector.user_speaking and detector.silence_ms == 0
