"""Load tester pieces that need no platform: scenarios, arrivals, noise, content matching."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from voxmesh_loadtest.arrivals import ArrivalError, Arrivals
from voxmesh_loadtest.caller import add_noise, phrases_heard
from voxmesh_loadtest.scenario import Noise, ScenarioError, load_scenario
from voxmesh_loadtest.stats import distribution, percentile

SCENARIOS = Path(__file__).parents[2] / "loadtest" / "scenarios"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load(path: Path) -> None:
    assert load_scenario(path).turns


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nturns: []", "turns: List should have at least 1 item"),
    ("name: x\nturns:\n  - pause_ms: 5", "turns.0: Value error, a turn needs exactly one of"),
    ("name: x\nturns:\n  - say: hi\n    shout: true", "turns.0.shout: Extra inputs"),
    ("name: x\nturns:\n  - wav: missing.wav", "turns.0.wav: no such file"),
    ("name: bad name!\nturns:\n  - say: hi", "name: String should match pattern"),
    ("[1, 2", "not valid YAML"),
])
def test_bad_scenarios_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(")):
        load_scenario(path)


def test_arrival_patterns() -> None:
    assert list(Arrivals.parse("constant:rate=2").offsets(calls=3, duration_s=None)) == [
        0.0, 0.5, 1.0]
    assert list(Arrivals.parse("burst:size=2,every=10").offsets(calls=5, duration_s=None)) == [
        0.0, 0.0, 10.0, 10.0, 20.0]
    poisson = list(Arrivals.parse("poisson:rate=5").offsets(calls=2000, duration_s=None))
    assert 5 * 0.9 < len(poisson) / poisson[-1] < 5 * 1.1  # the mean rate holds
    assert poisson == list(Arrivals.parse("poisson:rate=5").offsets(calls=2000, duration_s=None))
    ramp = list(Arrivals.parse("ramp:from=1,to=9,over=10").offsets(calls=None, duration_s=10))
    assert len(ramp) == pytest.approx(50, abs=1)  # the area under the ramp
    assert all(b >= a for a, b in zip(ramp, ramp[1:], strict=False))
    assert max(np.diff(ramp[-5:])) < min(np.diff(ramp[:5]))  # calls come faster
    assert list(Arrivals.parse("constant:rate=1").offsets(calls=None, duration_s=2.5)) == [
        0.0, 1.0, 2.0]


@pytest.mark.parametrize(("spec", "message"), [
    ("storm:rate=1", "unknown arrival 'storm'"),
    ("constant", "constant: missing rate"),
    ("poisson:rate=fast", "rate='fast' is not a number"),
    ("burst:size=3", "burst: missing every"),
    ("constant:rate=1,every=2", "unknown key 'every'"),
    ("constant:rate=0", "rate must be above 0"),
])
def test_bad_arrivals_are_precise(spec: str, message: str) -> None:
    with pytest.raises(ArrivalError, match=message):
        Arrivals.parse(spec)


def test_noise_is_mixed_at_its_level() -> None:
    silence = bytes(32000)
    for kind in ("white", "pink"):
        noisy = np.frombuffer(add_noise(silence, Noise(kind=kind, level_dbfs=-40), 1), np.int16)
        dbfs = 20 * math.log10(float(np.sqrt(np.mean(noisy.astype(float) ** 2))) / 32767)
        assert -41 < dbfs < -39, (kind, dbfs)
    assert add_noise(silence, None, 1) == silence


def test_expected_phrases_ignore_case_and_punctuation() -> None:
    assert phrases_heard(["table for four"], "Sure, a TABLE for four... at seven.")
    assert not phrases_heard(["table for four"], "A table for forty.")
    assert phrases_heard([], "anything")


def test_percentiles_are_nearest_rank_and_monotone() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        50.0, 95.0, 100.0)
    summary = distribution(values)
    assert summary["min"] <= summary["p50"] <= summary["p90"] <= summary["p95"] <= summary[
        "p99"] <= summary["max"]
    assert distribution([])["count"] == 0 and math.isnan(percentile([], 50))
