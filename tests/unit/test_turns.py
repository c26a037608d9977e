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
