"""Load test report (JSON + self-contained HTML) and SLO thresholds."""

from __future__ import annotations

import json
import math
import random
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from voxmesh_loadtest.report import render_html, trace_url, write_report
from voxmesh_loadtest.results import CallResult, TurnResult
from voxmesh_loadtest.slo import METRICS, Slo, SloResult, check, parse_slo, parse_slos
from voxmesh_loadtest.stats import summarize

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
SECTIONS = ("headline", "histogram", "over-time", "concurrency", "errors", "slowest")
BANNER = "Latency-model providers: capacity figures only"


class TagChecker(HTMLParser):
    """Fails on an end tag that closes nothing open, and remembers what stays unclosed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, tuple[int, int]]] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <line .../> in SVG: opened and closed at once

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> at {self.getpos()} closes {self.stack[-1:]}")
            return
        self.stack.pop()


def parse_html(text: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack[:5]}"
    return checker


def make_run(*, labels: dict[str, Any] | None = None, transport: str = "websocket-pcm16",
             calls: int = 12) -> dict[str, Any]:
    """A realistic run: answered turns, a rejected call, a timeout, a content miss, a barge-in."""
    rng = random.Random(7)
    results = []
    for call_id in range(calls):
        start = call_id * 2.5
        call = CallResult(call_id, transport, scheduled_s=start, started_s=start,
                          connected_s=start + 0.2, ended_s=start + 14,
                          session_id=f"s-{call_id}", worker_id=f"worker-{call_id % 3}")
        if call_id == 3:
            call.error, call.error_message = "rejected", "edge said NO_WORKER_AVAILABLE"
            call.connected_s = None
            results.append(call)
            continue
        for index, said in enumerate(("Hi, a table for two <tonight>?", "Make that four.",
                                      "Thanks, bye."), start=1):
            turn = TurnResult(call_id, index, said, started_s=start + 1 + 4 * index,
                              voice_to_voice_ms=round(rng.lognormvariate(6.7, 0.3), 1),
                              first_transcript_ms=round(rng.uniform(-40, 300), 1),
                              agent_text="Sure, I can book that for you.",
                              trace_id=f"{call_id:04x}{index:028x}")
            if index == 1:
                turn.expected = ["table"]
                turn.content_ok = call_id != 5
                turn.heard = "sure i can book that"
                if not turn.content_ok:
                    turn.error, turn.error_message = "content", "did not hear 'table'"
            if index == 2 and call_id % 4 == 0:
                turn.barge_in_stop_ms = round(rng.uniform(120, 400), 1)
            if call_id == 8 and index == 3:
                turn.voice_to_voice_ms = turn.first_transcript_ms = None
                turn.trace_id = ""
                turn.error, turn.error_message = "no_answer", "no agent audio within 30 s"
            call.turns.append(turn)
        results.append(call)
    concurrency = [[0.0, 0]] + [[t * 0.5, min(6, int(t * 0.5 / 2.5) + 1)] for t in range(1, 80)]
    return {
        "scenario": {"name": "book-a-table", "description": "Books a table", "agent": "host",
                     "noise": None, "wait_for_greeting": True,
                     "turns": [{"say": "Hi"}, {"say": "Make that four."}, {"say": "Bye"}]},
        "transport": transport, "arrivals": "constant:rate=0.4", "calls_requested": calls,
        "duration_requested_s": None, "concurrency_limit": 8, "edge_url": "http://edge:8080",
        "seed": 0, "started_wall": 1_750_000_000.0, "duration_s": 45.2,
        "labels": labels or {}, "concurrency": concurrency,
        "calls": [call.to_dict() for call in results],
    }


def checked(run: dict[str, Any], *specs: str) -> list[SloResult]:
    return check(summarize(run), parse_slos(specs))


def test_html_parses_and_has_every_section(tmp_path: Path) -> None:
    run = make_run()
    json_path, html_path = write_report(run, tmp_path, checked(run, "error_rate<=0.5"))
    assert (json_path.name, html_path.name) == ("report.json", "report.html")
    text = html_path.read_text()
    page = parse_html(text)
    assert set(SECTIONS) | {"slos"} <= page.ids
    assert "capacity" not in page.ids
    assert text.count("<svg") == 3  # histogram, over time, concurrency
    for needle in ("book-a-table", "constant:rate=0.4", "Concurrency limit", "45.2 s",
                   "Voice-to-voice", "First transcript", "Barge-in stop", "Content failures"):
        assert needle in text
    # Nothing external: the page must open from a file with no network.
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script" not in text


def test_error_table_has_each_kind_with_description_and_example() -> None:
    run = make_run()
    text = render_html(run, summarize(run))
    errors = text[text.index('id="errors"'):text.index('id="slowest"')]
    for kind, meaning, example in (
            ("rejected", "the edge refused the call", "call 3: edge said NO_WORKER_AVAILABLE"),
            ("content", "expected phrase was not heard", "call 5, turn 1: did not hear"),
            ("no_answer", "no agent audio within", "call 8, turn 3: no agent audio")):
        assert f"<code>{kind}</code>" in errors and meaning in errors and example in errors


def test_text_from_the_run_is_escaped() -> None:
    run = make_run(labels={"note": "<b>bold</b>"})
    run["calls"][0]["turns"][0]["voice_to_voice_ms"] = 99_999.0  # first among the slowest
    text = render_html(run, summarize(run))
    assert "a table for two &lt;tonight&gt;?" in text
    assert "<tonight>" not in text and "<b>bold</b>" not in text
    parse_html(text)


@pytest.mark.parametrize("providers", ["latency-model", "latency-model (stt, llm, tts)",
                                       {"stt": "latency-model", "llm": "latency-model"}])
def test_latency_model_banner_when_labelled(tmp_path: Path, providers: Any) -> None:
    run = make_run(labels={"providers": providers})
    json_path, html_path = write_report(run, tmp_path)
    assert BANNER in html_path.read_text()
    assert json.loads(json_path.read_text())["latency_model_providers"] is True


def test_latency_model_banner_when_the_platform_reports_it() -> None:
    run = make_run()
    run["calls"][0]["providers"] = {"stt": "latency-model", "llm": "latency-model"}
    assert BANNER in render_html(run, summarize(run))


def test_no_latency_model_banner_for_real_providers(tmp_path: Path) -> None:
    run = make_run(labels={"providers": "stt=whisper, llm=vllm, tts=piper"})
    json_path, html_path = write_report(run, tmp_path)
    text = html_path.read_text()
    assert BANNER not in text and "latency-model" not in text.lower()
    assert "stt=whisper, llm=vllm, tts=piper" in text
    assert json.loads(json_path.read_text())["latency_model_providers"] is False


@pytest.mark.parametrize("transport", ["webrtc", "websocket-pcm16", "websocket-mulaw"])
def test_transport_is_shown(transport: str) -> None:
    run = make_run(transport=transport)
    text = render_html(run, summarize(run))
    assert f'<span class="pill">{transport}</span>' in text
    assert f"over {transport}</title>" in text


def test_trace_ids_link_to_grafana_only_with_a_url() -> None:
    run = make_run()
    summary = summarize(run)
    plain = parse_html(render_html(run, summary))
    assert not [link for link in plain.links if "explore" in link]
    slowest = max((t for c in run["calls"] for t in c["turns"] if t["voice_to_voice_ms"]),
                  key=lambda t: t["voice_to_voice_ms"])
    assert f"<code>{slowest['trace_id']}</code>" in render_html(run, summary)

    linked = parse_html(render_html(run, summary, grafana_url="https://grafana.example/"))
    explore = [link for link in linked.links if "/explore?" in link]
    assert len(explore) == 20
    assert all(link.startswith("https://grafana.example/explore?") for link in explore)
    assert any(slowest["trace_id"] in link for link in explore)
    assert "voxmesh-tempo" in explore[0]


def test_trace_url_template() -> None:
    url = trace_url("http://g:3000", "abc123", started_wall=1000.0, duration_s=60.0)
    base, _, query = url.partition("?")
    assert base == "http://g:3000/explore"
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    assert params["schemaVersion"] == "1"
    from urllib.parse import unquote_plus
    panes = json.loads(unquote_plus(params["panes"]))["trace"]
    assert panes["datasource"] == "voxmesh-tempo"
    assert panes["queries"][0]["query"] == "abc123"
    assert panes["queries"][0]["queryType"] == "traceql"
    assert panes["range"] == {"from": str(700_000), "to": str(1_360_000)}
    assert trace_url("https://g/d/t?var-id={trace_id}", "a b") == "https://g/d/t?var-id=a%20b"


def test_slo_table_shows_a_failed_slo(tmp_path: Path) -> None:
    run = make_run()
    results = checked(run, "p95_voice_to_voice_ms<=1", "calls>=1", "p95_barge_in_stop_ms<=300")
    _, html_path = write_report(run, tmp_path, results)
    text = html_path.read_text()
    table = text[text.index('id="slos"'):text.index('id="histogram"')]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert len(rows) == 3
    assert 'badge fail">FAIL' in rows[0] and "p95_voice_to_voice_ms&lt;=1" in rows[0]
    assert 'badge pass">pass' in rows[1]
    assert "2 of 3 SLOs missed" in text


def test_json_round_trips_with_summary_and_slos(tmp_path: Path) -> None:
    run = make_run()
    results = checked(run, "error_rate<=0.01", "calls_ok>=1")
    capacity = {"transport": "webrtc", "threshold_ms": 50, "max_concurrency_within_threshold": 4,
                "points": [{"concurrency": 1, "added_p50_ms": 0, "added_p95_ms": 3, "calls": 5,
                            "failed": 0}]}
    json_path, _ = write_report(run, tmp_path, results, capacity=capacity)
    data = json.loads(json_path.read_text())
    assert data["summary"] == json.loads(json.dumps(summarize(run)))
    assert data["calls"] == json.loads(json.dumps(run["calls"]))
    assert data["transport"] == run["transport"]
    assert [s["passed"] for s in data["slos"]] == [False, True]
    assert data["slos"][0]["name"] == "error_rate<=0.01"
    assert data["capacity"] == capacity
    assert "capacity" not in json.loads(write_report(run, tmp_path)[0].read_text())


def test_json_has_no_nan(tmp_path: Path) -> None:
    run = make_run()
    run["calls"][0]["turns"][0]["first_transcript_ms"] = math.nan
    run["duration_s"] = math.inf
    data = json.loads(write_report(run, tmp_path)[0].read_text())
    assert data["calls"][0]["turns"][0]["first_transcript_ms"] is None
    assert data["duration_s"] is None


def test_capacity_chart_when_given() -> None:
    run = make_run(labels={"providers": "latency-model"})
    capacity = [
        {"transport": transport, "threshold_ms": 50, "max_concurrency_within_threshold": best,
         "points": [{"concurrency": n, "added_p50_ms": n * slope, "added_p95_ms": n * slope * 2,
                     "calls": 3 * n, "failed": 0} for n in (1, 2, 4, 8, 16, 32)]}
        for transport, slope, best in (("webrtc", 1.5, 16), ("websocket-pcm16", 0.8, 16))]
    text = render_html(run, summarize(run), capacity=capacity)
    page = parse_html(text)
    assert "capacity" in page.ids
    section = text[text.index('id="capacity"'):]
    assert section.count("<svg") == 1
    assert "threshold 50 ms" in section
    assert "webrtc p50" in section and "websocket-pcm16 p95" in section
    assert "max within threshold" in section
    assert "up to <strong>16</strong> concurrent calls within 50 ms" in section
    one = render_html(run, summarize(run), capacity=capacity[0])
    assert "capacity" in parse_html(one).ids
    capacity[0]["max_concurrency_within_threshold"] = None
    assert "no concurrency measured stayed within 50 ms" in render_html(
        run, summarize(run), capacity=capacity[0])


def test_empty_run_renders_no_data_notes(tmp_path: Path) -> None:
    run = make_run(calls=0)
    run["concurrency"] = []
    results = checked(run, "error_rate<=0.01")
    _, html_path = write_report(run, tmp_path, results,
                                capacity={"transport": "webrtc", "points": []})
    text = html_path.read_text()
    parse_html(text)
    assert "<svg" not in text
    assert text.count('class="nodata"') == 5  # histogram, over time, concurrency, slowest, capacity
    assert "No errors" in text


def test_run_where_no_turn_was_answered() -> None:
    run = make_run(calls=2)
    for call in run["calls"]:
        for turn in call["turns"]:
            turn["voice_to_voice_ms"] = None
    text = render_html(run, summarize(run))
    parse_html(text)
    assert "No answered turns" in text
    assert text.count("<svg") == 1  # only the concurrency chart


@pytest.mark.parametrize(("spec", "slo"), [
    ("p95_voice_to_voice_ms<=1500", Slo("p95_voice_to_voice_ms", "<=", 1500)),
    (" p99_voice_to_voice_ms <= 2500 ", Slo("p99_voice_to_voice_ms", "<=", 2500)),
    ("p95_first_transcript_ms<800", Slo("p95_first_transcript_ms", "<", 800)),
    ("error_rate<=0.01", Slo("error_rate", "<=", 0.01)),
    ("calls_ok>=1e2", Slo("calls_ok", ">=", 100)),
    ("errors_rejected<=0", Slo("errors_rejected", "<=", 0)),
])
def test_slo_parse(spec: str, slo: Slo) -> None:
    assert parse_slo(spec) == slo
    assert parse_slo(str(slo)) == slo


@pytest.mark.parametrize(("spec", "message"), [
    ("p95_v2v_ms<=1500", "unknown metric 'p95_v2v_ms'"),
    ("p95_voice_to_voice<=1500", "did you mean p95_voice_to_voice_ms?"),
    ("p95_voice_to_voice_ms 1500", "no comparison; write METRIC<=NUMBER"),
    ("p95_voice_to_voice_ms>1500", "unsupported operator '>'; use <=, < or >="),
    ("p95_voice_to_voice_ms==1500", "unsupported operator '=='"),
    ("p95_voice_to_voice_ms<=1.5s", "threshold must be a number, got '1.5s'"),
    ("p95_voice_to_voice_ms<=", "threshold must be a number, got nothing"),
    ("<=5", "no metric before '<='"),
    ("error_rate<=nan", "got 'nan'"),
])
def test_slo_parse_errors_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_slo(spec)
    assert message in str(error.value)
    assert repr(spec) in str(error.value)
    if "metric" in message:
        assert "valid metrics: {p50,p90,p95,p99,min,max,mean}_{voice_to_voice_ms," \
            in str(error.value)
        assert "error_rate" in str(error.value)


def test_every_metric_has_a_value_in_a_summary() -> None:
    summary = summarize(make_run())
    for result in check(summary, [Slo(metric, ">=", -math.inf) for metric in METRICS]):
        assert result.actual is not None, result.message


def test_check_pass_and_fail() -> None:
    run = make_run()
    summary = summarize(run)
    p95 = summary["voice_to_voice_ms"]["p95"]
    failed, calls = summary["calls_failed"], summary["calls"]
    results = checked(run, f"p95_voice_to_voice_ms<={p95}", f"p95_voice_to_voice_ms<{p95}",
                      f"error_rate<={failed / calls}", "error_rate<0.01", "calls_ok>=100",
                      "content_failures<=0", "errors_rejected<=1", "errors_barge_in<=0")
    assert [r.passed for r in results] == [True, False, True, False, False, False, True, True]
    assert results[2].actual == pytest.approx(3 / 12)
    assert results[0].message == f"p95_voice_to_voice_ms = {p95:.1f} (<= {p95:.1f}): passed"
    assert results[5].actual == 1 and results[5].describe().endswith("failed")


def test_check_without_data_fails_and_says_so() -> None:
    run = make_run()
    for call in run["calls"]:
        for turn in call["turns"]:
            turn["barge_in_stop_ms"] = None
            turn["content_ok"] = None
    barge_in, content = checked(run, "p95_barge_in_stop_ms<=300", "content_failures<=0")
    assert (barge_in.passed, barge_in.actual) == (False, None)
    assert "no data" in barge_in.message and "barge_in_stop_ms" in barge_in.message
    assert (content.passed, content.actual) == (False, None)
    assert "no answer had its content checked" in content.message
    (rate,) = checked(make_run(calls=0), "error_rate<=0.01")
    assert not rate.passed and "no calls were made" in rate.message
