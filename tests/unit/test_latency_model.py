"""Delay distributions of the latency-model providers: parsing, errors, sampling, settings."""

from __future__ import annotations

import copy
import math
import pickle
import random
import statistics

import pytest
from pydantic import ValidationError

from voxmesh.config import load_settings
from voxmesh.latency_model import MAX_DELAY_MS, DelayDistribution
from voxmesh_llm.settings import LLMSettings
from voxmesh_stt.settings import STTSettings, split_phrases
from voxmesh_tts.settings import TTSSettings


@pytest.mark.parametrize(("spec", "kind", "params"), [
    ("constant:ms=150", "constant", {"ms": 150.0}),
    ("normal:mean=150,sd=20", "normal", {"mean": 150.0, "sd": 20.0}),
    ("lognormal:median=150,sigma=0.3", "lognormal", {"median": 150.0, "sigma": 0.3}),
    ("uniform:low=100,high=200", "uniform", {"low": 100.0, "high": 200.0}),
    (" Normal : SD = 20 , mean=150.5 ", "normal", {"mean": 150.5, "sd": 20.0}),
    ("constant:ms=0", "constant", {"ms": 0.0}),
])
def test_specs_parse_and_print_back(spec: str, kind: str, params: dict[str, float]) -> None:
    dist = DelayDistribution.parse(spec)
    assert dist.kind == kind
    assert dict(dist.params) == params
    assert DelayDistribution.parse(str(dist)) == dist
    assert pickle.loads(pickle.dumps(dist)) == dist
    assert copy.deepcopy(dist) == dist
    assert hash(dist) == hash(DelayDistribution.parse(str(dist)))


@pytest.mark.parametrize(("spec", "message"), [
    ("gauss:mean=1,sd=2",
     "unknown distribution 'gauss' (use constant, normal, lognormal or uniform)"),
    ("", "empty delay distribution"),
    ("normal", "normal needs mean and sd (e.g. 'normal:mean=150,sd=20')"),
    ("normal:", "normal needs mean and sd"),
    ("normal:mean=150", "normal needs sd"),
    ("normal:mean=150,sd=abc", "parameter sd='abc' of normal is not a number"),
    ("constant:ms=150ms", "parameter ms='150ms' of constant is not a number"),
    ("constant:150", "parameter '150' of constant is not NAME=VALUE"),
    ("normal:mean=150,,sd=2", "parameter '' of normal is not NAME=VALUE"),
    ("normal:avg=150,sd=20", "unknown parameter 'avg' for normal (use mean and sd"),
    ("constant:ms=1,ms=2", "parameter 'ms' of constant is given twice"),
    ("normal:mean=-5,sd=20", "parameter mean=-5 of normal must not be negative"),
    ("uniform:low=200,high=100", "uniform needs low <= high, got low=200, high=100"),
    ("lognormal:median=0,sigma=0.3", "median of lognormal must be positive"),
    ("lognormal:median=150,sigma=9", "sigma=9 of lognormal is above the limit of 3"),
    ("constant:ms=inf", "ms of constant must be a finite number"),
    ("constant:ms=90000", "ms=90000 of constant is above the limit of 60000 ms"),
])
def test_bad_specs_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        DelayDistribution.parse(spec)
    assert message in str(info.value)


def test_constructor_checks_like_the_parser() -> None:
    assert DelayDistribution("normal", mean=150, sd=20) == DelayDistribution.parse(
        "normal:mean=150,sd=20")
    with pytest.raises(ValueError, match="unknown distribution 'gauss'"):
        DelayDistribution("gauss", ms=1)  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="immutable"):
        DelayDistribution("constant", ms=1).kind = "normal"  # type: ignore[misc]


@pytest.mark.parametrize(("spec", "mean", "low", "high"), [
    ("constant:ms=150", 150.0, 150.0, 150.0),
    ("normal:mean=150,sd=20", 150.0, 0.0, MAX_DELAY_MS),
    ("lognormal:median=150,sigma=0.3", 150.0 * math.exp(0.3**2 / 2), 0.0, MAX_DELAY_MS),
    ("uniform:low=100,high=200", 150.0, 100.0, 200.0),
])
def test_samples_follow_the_distribution(spec: str, mean: float, low: float,
                                         high: float) -> None:
    dist = DelayDistribution.parse(spec)
    samples = [dist.sample(random.Random(seed)) for seed in range(2000)]
    assert all(low <= s <= high for s in samples)
    assert statistics.fmean(samples) == pytest.approx(mean, rel=0.03)
    assert dist.sample_s(random.Random(1)) == pytest.approx(dist.sample(random.Random(1)) / 1000)


def test_samples_are_never_negative_and_repeat_with_the_seed() -> None:
    # Half of an untruncated normal around 0 would be negative.
    dist = DelayDistribution.parse("normal:mean=0,sd=50")
    rng = random.Random(7)
    samples = [dist.sample(rng) for _ in range(5000)]
    assert min(samples) >= 0
    assert statistics.fmean(samples) > 30  # truncated (redrawn), not piled up at zero
    assert sum(s == 0 for s in samples) == 0
    rng = random.Random(7)
    assert [dist.sample(rng) for _ in range(5000)] == samples
    heavy = DelayDistribution.parse("lognormal:median=30000,sigma=3")
    rng = random.Random(3)
    assert max(heavy.sample(rng) for _ in range(2000)) == MAX_DELAY_MS  # capped tail


def test_settings_take_the_spec_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXMESH_STT_LATENCY_FIRST_BYTE", "uniform:low=100,high=200")
    monkeypatch.setenv("VOXMESH_STT_LATENCY_PHRASES", " One. | | Two, three. ")
    settings = STTSettings()
    assert settings.latency_first_byte == DelayDistribution.parse("uniform:low=100,high=200")
    assert split_phrases(settings.latency_phrases) == ("One.", "Two, three.")
    assert settings.model_dump()["latency_first_byte"] == "uniform:low=100,high=200"
    assert LLMSettings().latency_first_token == DelayDistribution.parse("normal:mean=250,sd=30")
    assert TTSSettings().latency_first_audio == DelayDistribution.parse("normal:mean=80,sd=10")


def test_a_bad_spec_fails_settings_with_the_variable_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOXMESH_TTS_LATENCY_FIRST_AUDIO", "gauss:mean=80")
    with pytest.raises(SystemExit) as info:
        load_settings(TTSSettings)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "VOXMESH_TTS_LATENCY_FIRST_AUDIO" in err
    assert "unknown distribution 'gauss' (use constant, normal, lognormal or uniform)" in err
    monkeypatch.setenv("VOXMESH_STT_LATENCY_PHRASES", " | ")
    with pytest.raises(ValidationError, match="at least one phrase"):
        STTSettings()
