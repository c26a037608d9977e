"""The load test report: ``report.json`` and one self-contained ``report.html``.

The HTML page needs nothing but a browser: the CSS and the SVG charts are inline, there is no
JavaScript and nothing is fetched. Every string taken from the run is escaped. It shows, top to
bottom: what was run (scenario, transport, arrivals, concurrency limit, duration, calls); a
banner when the run used latency-model providers; the headline figures; the SLOs, when given;
the voice-to-voice histogram; p50/p95 voice-to-voice over time; calls active over time; errors
by kind; the slowest turns; and, for the capacity benchmark, added latency against concurrency.

Latency-model runs
------------------
A run is a latency-model run when its ``labels["providers"]`` mentions ``latency-model``, or when
any call's platform-reported providers do. Its page carries a banner saying the figures are for
capacity only, and ``report.json`` has ``"latency_model_providers": true`` so that tools reading
it can refuse to take quality figures from it.

Grafana links
-------------
With ``grafana_url``, trace ids in the slowest-turns table link to Grafana Explore on the Tempo
datasource provisioned by ``infra/grafana/datasources.yaml`` (uid ``voxmesh-tempo``)::

    {grafana_url}/explore?schemaVersion=1&orgId=1&panes=<PANES>

    PANES = URL-encoded {"trace": {"datasource": "voxmesh-tempo",
             "queries": [{"refId": "A", "datasource": {"type": "tempo", "uid": "voxmesh-tempo"},
                          "queryType": "traceql", "query": "<trace id>"}],
             "range": {"from": "<run start - 5 min, epoch ms>", "to": "<run end + 5 min>"}}}

This is the form Grafana 10 and later write into their own Explore URLs. For a Grafana set up
differently, pass a ``grafana_url`` containing ``{trace_id}``: it is then the whole link, with
the (URL-encoded) trace id substituted, e.g. ``https://grafana.example/d/traces?var-id={trace_id}``.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from voxmesh_loadtest.results import ERROR_KINDS
from voxmesh_loadtest.slo import SloResult
from voxmesh_loadtest.stats import percentile, summarize

#: Tempo datasource uid the trace links use (``infra/grafana/datasources.yaml``).
TEMPO_DATASOURCE_UID = "voxmesh-tempo"
#: Rows of the slowest-turns table.
SLOWEST_TURNS = 20
LATENCY_MODEL = "latency-model"

_P50, _P95, _P99 = "#2f6db5", "#e8743b", "#8e44ad"
_RED, _TEAL, _GREY = "#c0392b", "#2a9d8f", "#8a94a6"
#: Colours of the capacity benchmark's transports, in order.
_TRANSPORT_COLORS = ("#2f6db5", "#e8743b", "#2a9d8f", "#8e44ad", "#b5892f")


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def write_report(run_json: dict[str, Any], out_dir: Path, slos: Sequence[SloResult] = (),
                 grafana_url: str | None = None,
                 capacity: dict[str, Any] | list[dict[str, Any]] | None = None,
                 ) -> tuple[Path, Path]:
    """Writes ``report.json`` and ``report.html`` into ``out_dir`` (created if needed).

    Args:
        run_json: The run, as :func:`voxmesh_loadtest.runner.to_json` makes it.
        out_dir: Where the two files go.
        slos: Checked SLOs (:func:`voxmesh_loadtest.slo.check`), shown as a pass/fail table.
        grafana_url: Base URL of Grafana, to link trace ids (see the module docstring).
        capacity: Capacity benchmark results, one transport's dict or a list of them:
            ``{"transport", "points": [{"concurrency", "added_p50_ms", "added_p95_ms", "calls",
            "failed"}], "threshold_ms", "max_concurrency_within_threshold"}``.

    Returns:
        The paths of ``report.json`` and ``report.html``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    run_json = _finite(run_json)
    summary = summarize(run_json)
    data: dict[str, Any] = {
        **run_json,
        "summary": summary,
        "latency_model_providers": latency_model_run(run_json),
        "slos": [slo.to_dict() for slo in slos],
    }
    if capacity is not None:
        data["capacity"] = capacity
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(run_json, summary, slos, grafana_url, capacity))
    return json_path, html_path


def latency_model_run(run_json: Mapping[str, Any]) -> bool:
    """The run used latency-model providers: labelled so, or reported so by the platform."""
    if LATENCY_MODEL in _providers_text(run_json.get("labels", {}).get("providers")):
        return True
    return any(LATENCY_MODEL in str(name) for call in run_json.get("calls", [])
               for name in (call.get("providers") or {}).values())


def trace_url(grafana_url: str, trace_id: str, started_wall: float = 0.0,
              duration_s: float = 0.0) -> str:
    """A link to one trace in Grafana (the template is in the module docstring).

    Args:
        grafana_url: Grafana's base URL, or a whole link containing ``{trace_id}``.
        trace_id: The trace.
        started_wall: Unix time the run started (0: the last 24 hours instead).
        duration_s: How long the run took.
    """
    if "{trace_id}" in grafana_url:
        return grafana_url.replace("{trace_id}", urllib.parse.quote(trace_id, safe=""))
    if started_wall > 0:
        # Tempo finds a trace by id alone, but Explore still applies the time range to it.
        time_range = {"from": str(int((started_wall - 300) * 1000)),
                      "to": str(int((started_wall + duration_s + 300) * 1000))}
    else:
        time_range = {"from": "now-24h", "to": "now"}
    panes = {"trace": {
        "datasource": TEMPO_DATASOURCE_UID,
        "queries": [{"refId": "A", "datasource": {"type": "tempo", "uid": TEMPO_DATASOURCE_UID},
                     "queryType": "traceql", "query": trace_id}],
        "range": time_range,
    }}
    query = urllib.parse.urlencode({"schemaVersion": "1", "orgId": "1",
                                    "panes": json.dumps(panes, separators=(",", ":"))})
    return f"{grafana_url.rstrip('/')}/explore?{query}"


def render_html(run_json: Mapping[str, Any], summary: Mapping[str, Any],
                slos: Sequence[SloResult] = (), grafana_url: str | None = None,
                capacity: dict[str, Any] | list[dict[str, Any]] | None = None) -> str:
    """The whole report page as one HTML string (see :func:`write_report`)."""
    run_json = _finite(run_json)
    turns = [turn for call in run_json.get("calls", []) for turn in call.get("turns", [])]
    sections = [
        ("headline", "Headline figures", _headline(summary)),
        *([("slos", "SLOs", _slo_table(slos))] if slos else []),
        ("histogram", "Voice-to-voice latency", _histogram_section(turns, summary)),
        ("over-time", "Voice-to-voice over time", _percentiles_section(run_json, turns, slos)),
        ("concurrency", "Calls active over time", _concurrency_section(run_json)),
        ("errors", "Errors", _error_table(run_json)),
        ("slowest", f"The {SLOWEST_TURNS} slowest turns", _slowest_turns(run_json, grafana_url)),
        *([("capacity", "Capacity: added latency vs concurrency", _capacity_section(capacity))]
          if capacity is not None else []),
    ]
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}">\n<h2>{escape(title)}</h2>\n{content}\n</section>'
                     for key, title, content in sections)
    scenario = _scenario_name(run_json)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>Voxmesh load test: {escape(scenario)} over "
            f"{escape(str(run_json.get('transport', '?')))}</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"{_header(run_json, summary, slos)}\n"
            f'<nav>{nav}</nav>\n{body}\n{_footer()}\n</main>\n</body>\n</html>\n')


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _header(run: Mapping[str, Any], summary: Mapping[str, Any],
            slos: Sequence[SloResult]) -> str:
    raw_scenario = run.get("scenario")
    scenario: Mapping[str, Any] = raw_scenario if isinstance(raw_scenario, Mapping) else {}
    labels = run.get("labels") or {}
    started = run.get("started_wall") or 0
    facts = [
        ("Scenario", f"{_scenario_name(run)} (agent {scenario.get('agent', '?')}, "
                     f"{len(scenario.get('turns', []))} turns)"),
        ("Transport", str(run.get("transport", "?"))),
        ("Arrivals", str(run.get("arrivals", "?"))),
        ("Concurrency limit", str(run.get("concurrency_limit", "?"))),
        ("Duration", _duration(run.get("duration_s") or 0.0)),
        ("Calls", f"{summary['calls']} ({summary['calls_failed']} failed)"),
        ("Started", datetime.fromtimestamp(started, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
         if started else "?"),
        ("Edge", str(run.get("edge_url", "?"))),
        ("Providers", _providers_text(labels.get("providers")) or "not labelled"),
    ]
    reported = _reported_providers(run) or _providers_text(labels.get("providers_reported"))
    if reported:
        facts.append(("Providers reported", reported))
    facts += [(str(key), _providers_text(value)) for key, value in labels.items()
              if key not in ("providers", "providers_reported")]
    grid = "".join(f"<div><dt>{escape(name)}</dt><dd>{escape(value)}</dd></div>"
                   for name, value in facts)
    description = scenario.get("description")
    parts = [
        "<header>",
        f'<h1>Voxmesh load test <span class="scenario">{escape(_scenario_name(run))}</span> '
        f'<span class="pill">{escape(str(run.get("transport", "?")))}</span></h1>',
        f'<p class="description">{escape(description)}</p>' if description else "",
        f'<dl class="facts">{grid}</dl>',
        "</header>",
    ]
    if latency_model_run(run):
        parts.append(
            '<div class="banner warn" role="alert"><strong>Latency-model providers: capacity '
            "figures only — not a quality measurement.</strong> STT, LLM and TTS were simulated "
            "delays: these figures measure the platform's own overhead and capacity, answers carry "
            "no meaning, and nothing here says how real models sound or how fast they are. "
            f"Providers: {escape(_providers_text(labels.get('providers')) or '?')}"
            + (f"; reported by the platform: {escape(reported)}" if reported else "")
            + ".</div>")
    if slos:
        failed = [slo for slo in slos if not slo.passed]
        if failed:
            parts.append(f'<div class="banner fail"><strong>{len(failed)} of {len(slos)} SLOs '
                         f"missed:</strong> {escape(', '.join(s.name for s in failed))}</div>")
        else:
            parts.append(f'<div class="banner pass"><strong>All {len(slos)} SLOs met.'
                         "</strong></div>")
    return "\n".join(part for part in parts if part)


def _headline(summary: Mapping[str, Any]) -> str:
    v2v = summary["voice_to_voice_ms"]
    tiles = [
        _tile("Calls ok", f"{summary['calls_ok']}", f"of {summary['calls']}"),
        _tile("Calls failed", f"{summary['calls_failed']}",
              _percent(summary["calls_failed"], summary["calls"]),
              bad=summary["calls_failed"] > 0),
        _tile("Turns answered", f"{summary['turns_answered']}", f"of {summary['turns']}",
              bad=summary["turns_answered"] < summary["turns"]),
        _tile("p50 voice-to-voice", _ms(v2v["p50"]), f"{v2v['count']} turns"),
        _tile("p95 voice-to-voice", _ms(v2v["p95"]), f"p99 {_ms(v2v['p99'])}"),
        _tile("Content failures", f"{summary['content_failures']}",
              f"of {summary['content_checked']} checked", bad=summary["content_failures"] > 0),
        _tile("Peak concurrency", f"{summary['peak_concurrency']}", "calls active"),
    ]
    rows = []
    for key, label in (("voice_to_voice_ms", "Voice-to-voice"),
                       ("first_transcript_ms", "First transcript"),
                       ("barge_in_stop_ms", "Barge-in stop")):
        dist = summary[key]
        rows.append([label, str(dist["count"]), *(_ms(dist[stat]) for stat in
                                                  ("p50", "p90", "p95", "p99", "max", "mean"))])
    table = _table(["Latency", "turns", "p50", "p90", "p95", "p99", "max", "mean"], rows,
                   numeric=range(1, 8))
    return f'<div class="tiles">{"".join(tiles)}</div>\n{table}'


def _slo_table(slos: Sequence[SloResult]) -> str:
    rows: list[list[str | _Safe]] = [
        [_Safe(f'<span class="badge {"pass" if slo.passed else "fail"}">'
               f'{"pass" if slo.passed else "FAIL"}</span>'),
         _Safe(f"<code>{escape(slo.name)}</code>"),
         "no data" if slo.actual is None else _number(slo.actual), slo.message]
        for slo in slos]
    return _table(["", "SLO", "actual", "detail"], rows, numeric=[2])


def _histogram_section(turns: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    values = [float(t["voice_to_voice_ms"]) for t in turns
              if t.get("voice_to_voice_ms") is not None]
    if not values:
        return _no_data("No answered turns, so no voice-to-voice latencies to plot.")
    v2v = summary["voice_to_voice_ms"]
    marks = [(name, float(v2v[name]), color)
             for name, color in (("p50", _P50), ("p95", _P95), ("p99", _P99))
             if v2v[name] is not None]
    legend = _legend([(f"{name} {_ms(value)}", color, True) for name, value, color in marks])
    return (f"{_histogram(values, marks)}\n{legend}\n"
            f'<p class="note">{len(values)} answered turns; min {_ms(v2v["min"])}, '
            f'mean {_ms(v2v["mean"])}, max {_ms(v2v["max"])}.</p>')


def _percentiles_section(run: Mapping[str, Any], turns: Sequence[Mapping[str, Any]],
                         slos: Sequence[SloResult]) -> str:
    answered = [(float(t.get("started_s") or 0.0), float(t["voice_to_voice_ms"])) for t in turns
                if t.get("voice_to_voice_ms") is not None]
    if not answered:
        return _no_data("No answered turns, so no latency over time.")
    end = max(float(run.get("duration_s") or 0.0), max(start for start, _ in answered))
    window = _window_s(end)
    windows: dict[int, list[float]] = {}
    for start, value in answered:
        windows.setdefault(int(start // window), []).append(value)
    p50, p95, counts = [], [], []
    for index in sorted(windows):
        middle = (index + 0.5) * window
        p50.append((middle, percentile(windows[index], 50)))
        p95.append((middle, percentile(windows[index], 95)))
        counts.append(len(windows[index]))
    hlines = [_HLine(f"SLO {slo.name}", slo.threshold, _RED) for slo in slos
              if slo.metric in ("p50_voice_to_voice_ms", "p95_voice_to_voice_ms")]
    chart = _line_chart(
        [_Series("p50", _P50, p50, markers=True), _Series("p95", _P95, p95, markers=True)],
        x_label="seconds from the start of the run (turn start)", y_label="voice-to-voice (ms)",
        x_range=(0.0, end), hlines=hlines, x_fmt=_seconds, y_fmt=_int)
    note = (f"Turns grouped by when the caller started speaking, in {window:g} s windows "
            f"({min(counts)}–{max(counts)} answered turns per window).")
    return f'{chart}\n{_legend([("p50", _P50, False), ("p95", _P95, False)], hlines)}\n' \
           f'<p class="note">{escape(note)}</p>'


def _concurrency_section(run: Mapping[str, Any]) -> str:
    samples = sorted((float(t), int(n)) for t, n in run.get("concurrency") or []
                     if t is not None and n is not None)
    if not samples:
        return _no_data("No concurrency samples were recorded.")
    end = max(float(run.get("duration_s") or 0.0), samples[-1][0])
    limit = run.get("concurrency_limit")
    hlines = [_HLine(f"limit {limit}", float(limit), _GREY)] if isinstance(limit, int) else []
    chart = _line_chart([_Series("calls active", _TEAL, samples, step=True, fill=True)],
                        x_label="seconds from the start of the run", y_label="calls active",
                        x_range=(0.0, end), hlines=hlines, x_fmt=_seconds, y_fmt=_int,
                        integer_y=True)
    return f'{chart}\n{_legend([("calls active", _TEAL, False)], hlines)}'


def _error_table(run: Mapping[str, Any]) -> str:
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for call in run.get("calls", []):
        for where, item in [(f"call {call['call_id']}", call),
                            *((f"call {call['call_id']}, turn {turn['index']}", turn)
                              for turn in call.get("turns", []))]:
            kind = item.get("error")
            if not kind:
                continue
            counts[kind] += 1
            if item.get("error_message") and kind not in examples:
                examples[kind] = f"{where}: {item['error_message']}"
    if not counts:
        return '<p class="ok-note">No errors: every call and every turn went fine.</p>'
    rows: list[list[str | _Safe]] = [
        [_Safe(f"<code>{escape(kind)}</code>"), str(count),
         ERROR_KINDS.get(kind, "(not a known error kind)"),
         _truncate(examples.get(kind, "—"), 240)]
        for kind, count in counts.most_common()]
    return _table(["Kind", "count", "what it means", "example"], rows, numeric=[1])


def _slowest_turns(run: Mapping[str, Any], grafana_url: str | None) -> str:
    answered = [(call, turn) for call in run.get("calls", []) for turn in call.get("turns", [])
                if turn.get("voice_to_voice_ms") is not None]
    if not answered:
        return _no_data("No answered turns.")
    answered.sort(key=lambda pair: pair[1]["voice_to_voice_ms"], reverse=True)
    rows: list[list[str | _Safe]] = []
    for call, turn in answered[:SLOWEST_TURNS]:
        trace_id = str(turn.get("trace_id") or "")
        if trace_id and grafana_url:
            link = trace_url(grafana_url, trace_id, float(run.get("started_wall") or 0.0),
                             float(run.get("duration_s") or 0.0))
            # Linked ids are for clicking, not copying: the short form keeps rows on one line.
            trace: str | _Safe = _Safe(
                f'<a href="{escape(link)}" target="_blank" rel="noopener" '
                f'title="{escape(trace_id)}"><code>{escape(_truncate(trace_id, 17))}</code></a>')
        elif trace_id:
            trace = _Safe(f"<code>{escape(trace_id)}</code>")
        else:
            trace = "—"
        rows.append([
            str(call["call_id"]), str(turn["index"]), _seconds(turn.get("started_s") or 0.0),
            _Safe(f"<strong>{_ms(turn['voice_to_voice_ms'])}</strong>"),
            _ms(turn.get("first_transcript_ms")),
            _truncated_cell(turn.get("said") or "", 44),
            _truncated_cell(turn.get("agent_text") or "", 56),
            _Safe(f'<span class="nowrap">{escape(call.get("worker_id") or "—")}</span>'), trace,
        ])
    table = _table(["Call", "turn", "started", "voice-to-voice", "first transcript", "caller said",
                    "agent said", "worker", "trace"], rows, numeric=range(0, 5))
    hint = ("Trace ids link to Grafana Explore (Tempo)." if grafana_url else
            "Pass a Grafana URL to link trace ids to their traces.")
    return f'{table}\n<p class="note">{escape(hint)}</p>'


def _capacity_section(capacity: dict[str, Any] | list[dict[str, Any]] | None) -> str:
    benches = [capacity] if isinstance(capacity, dict) else list(capacity or [])
    series, legend, rows, thresholds = [], [], [], set()
    for index, bench in enumerate(benches):
        color = _TRANSPORT_COLORS[index % len(_TRANSPORT_COLORS)]
        name = str(bench.get("transport", f"run {index + 1}"))
        points = sorted(bench.get("points") or [], key=lambda p: p.get("concurrency") or 0)
        for key, dashed in (("added_p50_ms", False), ("added_p95_ms", True)):
            line = [(float(p["concurrency"]), float(p[key])) for p in points
                    if p.get(key) is not None and p.get("concurrency") is not None]
            label = f"{name} {key[6:9]}"
            series.append(_Series(label, color, line, dashed=dashed, markers=True))
            legend.append((label, color, dashed))
        if bench.get("threshold_ms") is not None:
            thresholds.add(float(bench["threshold_ms"]))
        best = bench.get("max_concurrency_within_threshold")
        for p in points:
            rows.append([name, str(p.get("concurrency", "?")), str(p.get("calls", "—")),
                         str(p.get("failed", "—")), _ms(p.get("added_p50_ms")),
                         _ms(p.get("added_p95_ms")),
                         "◀ max within threshold" if p.get("concurrency") == best else ""])
    hlines = [_HLine(f"threshold {_int(t)} ms", t, _RED) for t in sorted(thresholds)]
    if not any(s.points for s in series):
        return _no_data("The capacity benchmark has no points.")
    top = max(x for s in series for x, _ in s.points)
    chart = _line_chart(series, x_label="concurrent calls", y_label="added latency (ms)",
                        x_range=(0.0, top), hlines=hlines, x_fmt=_int, y_fmt=_int)
    verdicts = "".join(f"<li>{_capacity_verdict(bench)}</li>" for bench in benches)
    table = _table(["Transport", "concurrency", "calls", "failed", "added p50", "added p95", ""],
                   rows, numeric=range(1, 6))
    return (f"{chart}\n{_legend(legend, hlines)}\n<ul class=\"verdicts\">{verdicts}</ul>\n"
            f'<p class="note">Added latency: voice-to-voice above the single-call baseline on '
            f"latency-model providers (solid p50, dashed p95).</p>\n{table}")


def _capacity_verdict(bench: Mapping[str, Any]) -> str:
    name = escape(str(bench.get("transport", "?")))
    threshold = bench.get("threshold_ms")
    limit = f"{_int(float(threshold))} ms" if threshold is not None else "the threshold"
    best = bench.get("max_concurrency_within_threshold")
    if best is None:
        return (f"<strong>{name}</strong>: no concurrency measured stayed within {limit} of "
                "added latency")
    return (f"<strong>{name}</strong>: up to <strong>{escape(str(best))}</strong> concurrent "
            f"calls within {limit} of added latency")


def _footer() -> str:
    return ('<footer><p>Measured at the synthetic caller, on its own clock. '
            "<strong>Voice-to-voice</strong>: the last sample of the caller's utterance sent, to "
            "the first audible agent audio received. <strong>First transcript</strong>: the last "
            "sample sent, to the turn's first transcript event (negative when speculative STT "
            "beat the end of speech). <strong>Barge-in stop</strong>: the caller starting to "
            "interrupt, to the agent's audio going quiet.</p>"
            f"<p>Generated by voxmesh_loadtest on "
            f"{datetime.now(tz=UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p></footer>")


# ---------------------------------------------------------------------------------------------
# Charts: hand-written SVG (no plotting library in the project)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    name: str
    color: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False
    step: bool = False
    markers: bool = False
    fill: bool = False


@dataclass(frozen=True)
class _HLine:
    label: str
    value: float
    color: str


@dataclass(frozen=True)
class _Frame:
    """Maps data coordinates onto one chart's plotting area, in SVG pixels."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 880
    height: int = 300
    left: int = 70
    right: int = 24
    top: int = 20
    bottom: int = 50

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * (
            self.width - self.left - self.right)

    def y(self, value: float) -> float:
        return self.height - self.bottom - (value - self.y0) / (self.y1 - self.y0) * (
            self.height - self.top - self.bottom)


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    exponent = math.floor(math.log10(raw))
    fraction = raw / 10**exponent
    nice = 1 if fraction <= 1 else 2 if fraction <= 2 else 5 if fraction <= 5 else 10
    return nice * 10**exponent


def _ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering ``low..high`` (the axis runs from the first to the last)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    if high <= low:
        high = low + 1
    step = _nice_step((high - low) / count)
    if integer:
        step = max(1.0, round(step))
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - 1e-9:
        ticks.append(first + len(ticks) * step)
    return ticks


def _axes(frame: _Frame, xticks: Sequence[float], yticks: Sequence[float], x_label: str,
          y_label: str, x_fmt: Any, y_fmt: Any) -> list[str]:
    base = frame.height - frame.bottom
    parts = []
    for tick in yticks:
        y = frame.y(tick)
        parts.append(f'<line class="grid" x1="{frame.left}" y1="{y:.1f}" '
                     f'x2="{frame.width - frame.right}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{frame.left - 8}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{escape(y_fmt(tick))}</text>')
    for tick in xticks:
        x = frame.x(tick)
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="{base}" x2="{x:.1f}" '
                     f'y2="{base + 5}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{base + 19}" '
                     f'text-anchor="middle">{escape(x_fmt(tick))}</text>')
    parts.append(f'<line class="axis" x1="{frame.left}" y1="{base}" '
                 f'x2="{frame.width - frame.right}" y2="{base}"/>')
    parts.append(f'<line class="axis" x1="{frame.left}" y1="{frame.top}" x2="{frame.left}" '
                 f'y2="{base}"/>')
    middle_x = (frame.left + frame.width - frame.right) / 2
    middle_y = (frame.top + base) / 2
    parts.append(f'<text class="label" x="{middle_x:.1f}" y="{frame.height - 8}" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text class="label" x="16" y="{middle_y:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 16 {middle_y:.1f})">{escape(y_label)}</text>')
    return parts


def _svg(frame: _Frame, parts: Iterable[str], title: str) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {frame.width} {frame.height}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>\n'
            + "\n".join(parts) + "\n</svg>")


def _histogram(values: Sequence[float], marks: Sequence[tuple[str, float, str]]) -> str:
    """Bars of ``values`` in round-width bins, with vertical lines at ``marks``."""
    low, high = min(values), max(values)
    width = _nice_step(max(high - low, 1.0) / 25)
    start = math.floor(low / width) * width
    bins = int((high - start) // width) + 1
    counts = [0] * bins
    for value in values:
        counts[min(int((value - start) // width), bins - 1)] += 1
    xticks = _ticks(start, start + bins * width, 8)
    yticks = _ticks(0, max(counts), 4, integer=True)
    frame = _Frame(xticks[0], xticks[-1], 0, yticks[-1])
    parts = _axes(frame, xticks, yticks, "voice-to-voice latency (ms)", "turns", _int, _int)
    base = frame.height - frame.bottom
    for index, count in enumerate(counts):
        if not count:
            continue
        left, right = start + index * width, start + (index + 1) * width
        x, top = frame.x(left), frame.y(count)
        parts.append(f'<rect class="bar" x="{x + 0.5:.1f}" y="{top:.1f}" '
                     f'width="{max(frame.x(right) - x - 1, 1):.1f}" height="{base - top:.1f}">'
                     f"<title>{_int(left)}–{_int(right)} ms: {count} turns</title></rect>")
    for row, (name, value, color) in enumerate(marks):
        x = frame.x(value)
        parts.append(f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{base}" '
                     f'stroke="{color}" stroke-width="2" stroke-dasharray="5 3"/>')
        # Percentiles often sit close together: stagger their labels down the line.
        parts.append(f'<text class="mark" x="{x + 4:.1f}" y="{frame.top + 12 + 14 * row}" '
                     f'fill="{color}">{escape(name)} {_int(value)}</text>')
    return _svg(frame, parts, f"Histogram of voice-to-voice latency, {len(values)} turns")


def _line_chart(series: Sequence[_Series], *, x_label: str, y_label: str,
                x_range: tuple[float, float] | None = None, hlines: Sequence[_HLine] = (),
                x_fmt: Any = str, y_fmt: Any = str, integer_y: bool = False) -> str:
    """Lines (or steps) of each series over a shared x axis, with horizontal reference lines."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points] + [line.value for line in hlines]
    low, high = x_range if x_range is not None else (min(xs), max(xs))
    if high - low < 1e-6:
        # A single point (or a run that ended at once) still needs an axis around it.
        low, high = low - 1, high + 1
    xticks = _ticks(low, high, 8, integer=True)
    yticks = _ticks(min(0.0, *ys), max(ys) * 1.05 if max(ys) > 0 else 1.0, 5,
                    integer=integer_y)
    frame = _Frame(xticks[0], xticks[-1], yticks[0], yticks[-1])
    parts = _axes(frame, xticks, yticks, x_label, y_label, x_fmt, y_fmt)
    for line in hlines:
        y = frame.y(line.value)
        parts.append(f'<line x1="{frame.left}" y1="{y:.1f}" x2="{frame.width - frame.right}" '
                     f'y2="{y:.1f}" stroke="{line.color}" stroke-width="1.5" '
                     f'stroke-dasharray="6 4"/>')
        parts.append(f'<text class="mark" x="{frame.width - frame.right - 4}" y="{y - 5:.1f}" '
                     f'text-anchor="end" fill="{line.color}">{escape(line.label)}</text>')
    for s in series:
        if not s.points:
            continue
        path = _path(frame, s.points, s.step)
        if s.fill:
            base = frame.y(max(frame.y0, 0.0))
            parts.append(f'<path d="{path} V{base:.1f} H{frame.x(s.points[0][0]):.1f} Z" '
                         f'fill="{s.color}" fill-opacity="0.12" stroke="none"/>')
        dash = ' stroke-dasharray="7 4"' if s.dashed else ""
        parts.append(f'<path d="{path}" fill="none" stroke="{s.color}" stroke-width="2"'
                     f'{dash} stroke-linejoin="round"/>')
        if s.markers:
            parts.extend(
                f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3" fill="{s.color}">'
                f"<title>{escape(s.name)}: {escape(y_fmt(y))} at {escape(x_fmt(x))}</title>"
                "</circle>" for x, y in s.points)
    title = ", ".join(s.name for s in series) + f" by {x_label}"
    return _svg(frame, parts, title)


def _path(frame: _Frame, points: Sequence[tuple[float, float]], step: bool) -> str:
    x, y = points[0]
    commands = [f"M{frame.x(x):.1f} {frame.y(y):.1f}"]
    for x, y in points[1:]:
        if step:
            # A count holds its value until the next sample: across first, then up or down.
            commands.append(f"H{frame.x(x):.1f} V{frame.y(y):.1f}")
        else:
            commands.append(f"L{frame.x(x):.1f} {frame.y(y):.1f}")
    return " ".join(commands)


def _legend(items: Sequence[tuple[str, str, bool]], hlines: Sequence[_HLine] = ()) -> str:
    keys = [f'<span class="key"><span class="swatch{" dashed" if dashed else ""}" '
            f'style="border-color:{color}"></span>{escape(name)}</span>'
            for name, color, dashed in items]
    keys += [f'<span class="key"><span class="swatch dashed" style="border-color:{line.color}">'
             f"</span>{escape(line.label)}</span>" for line in hlines]
    return f'<div class="legend">{"".join(keys)}</div>'


def _no_data(message: str) -> str:
    return f'<p class="nodata">{escape(message)}</p>'


# ---------------------------------------------------------------------------------------------
# Small HTML and formatting helpers
# ---------------------------------------------------------------------------------------------


class _Safe(str):
    """Markup built here, already escaped: table cells put it in as it is."""

    __slots__ = ()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str | _Safe]],
           numeric: Iterable[int] = ()) -> str:
    numbers = set(numeric)

    def cell_tag(tag: str, index: int) -> str:
        return f'<{tag} class="num">' if index in numbers else f"<{tag}>"

    head = "".join(f"{cell_tag('th', i)}{escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"{cell_tag('td', i)}"
                         f"{cell if isinstance(cell, _Safe) else escape(cell)}</td>"
                         for i, cell in enumerate(row)) + "</tr>\n"
        for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _tile(label: str, value: str, sub: str = "", bad: bool = False) -> str:
    return (f'<div class="tile{" bad" if bad else ""}"><div class="tile-label">{escape(label)}'
            f'</div><div class="tile-value">{escape(value)}</div>'
            f'<div class="tile-sub">{escape(sub)}</div></div>')


def _truncated_cell(text: str, limit: int) -> str | _Safe:
    if len(text) <= limit:
        return text
    return _Safe(f'<span title="{escape(text)}">{escape(_truncate(text, limit))}</span>')


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _finite(value: Any) -> Any:
    # Strict JSON readers reject NaN, and losing a long run's report to one stray NaN (or a
    # chart to an infinite axis) would be worse than a gap in it: non-finite becomes None.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _providers_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(str(item) for item in value)
    return str(value)


def _reported_providers(run: Mapping[str, Any]) -> str:
    seen: dict[str, set[str]] = {}
    for call in run.get("calls", []):
        for role, name in (call.get("providers") or {}).items():
            seen.setdefault(str(role), set()).add(str(name))
    return ", ".join(f"{role}={'/'.join(sorted(names))}" for role, names in sorted(seen.items()))


def _scenario_name(run: Mapping[str, Any]) -> str:
    scenario = run.get("scenario")
    if isinstance(scenario, Mapping):
        return str(scenario.get("name", "?"))
    return str(scenario or "?")


def _window_s(duration_s: float) -> float:
    # Aim for 20-60 points: short runs get 5 s windows, long soaks coarser ones.
    for window in (5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0):
        if duration_s / window <= 60:
            return window
    return 600.0


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.4g}"


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" if value >= 10 or value == int(value) else f"{value:.1f} s"


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:.1%} of calls" if whole else "no calls"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


_CSS = """
:root { --ink: #1d2433; --muted: #5b6474; --line: #e3e7ee; --bg: #f5f7fa; --card: #fff;
        --p50: #2f6db5; --red: #c0392b; --green: #1e8449; --amber: #b9770e; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 48px; }
header { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
         padding: 20px 24px; }
h1 { margin: 0 0 6px; font-size: 22px; font-weight: 600; }
h1 .scenario { color: var(--p50); }
h2 { margin: 0 0 14px; font-size: 17px; font-weight: 600; }
.pill { display: inline-block; vertical-align: middle; margin-left: 6px; padding: 2px 10px;
        border-radius: 999px; background: #e8eef8; color: var(--p50); font-size: 13px;
        font-weight: 600; }
.description { margin: 0 0 10px; color: var(--muted); }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr));
         gap: 10px 24px; margin: 14px 0 0; }
.facts dt { color: var(--muted); font-size: 12px; text-transform: uppercase;
            letter-spacing: .04em; }
.facts dd { margin: 0; font-weight: 500; overflow-wrap: anywhere; }
.banner { margin: 14px 0 0; padding: 12px 16px; border-radius: 8px; border: 1px solid; }
.banner.warn { background: #fff6e0; border-color: #f0c36d; color: #6b4a00; }
.banner.fail { background: #fdecea; border-color: #f1a9a0; color: #7b1f16; }
.banner.pass { background: #e9f7ef; border-color: #9fd8b5; color: #145a32; }
nav { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 16px 4px; font-size: 13px; }
nav a { color: var(--muted); text-decoration: none; }
nav a:hover { color: var(--p50); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
          padding: 18px 24px; margin: 16px 0; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(124px, 1fr));
         gap: 12px; margin-bottom: 18px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
        border-top: 3px solid var(--p50); }
.tile.bad { border-top-color: var(--red); }
.tile.bad .tile-value { color: var(--red); }
.tile-label { color: var(--muted); font-size: 12px; }
.tile-value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile-sub { color: var(--muted); font-size: 12px; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th { text-align: left; color: var(--muted); font-weight: 600; font-size: 12px;
     border-bottom: 2px solid var(--line); padding: 6px 8px; }
td { border-bottom: 1px solid var(--line); padding: 6px 8px; vertical-align: top; }
tbody tr:hover { background: #f8fafc; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
a { color: var(--p50); }
.badge { display: inline-block; min-width: 44px; text-align: center; padding: 1px 8px;
         border-radius: 4px; font-size: 12px; font-weight: 700; color: #fff; }
.badge.pass { background: var(--green); }
.badge.fail { background: var(--red); }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font-family: inherit; }
svg.chart .tick { font-size: 11px; fill: var(--muted); }
svg.chart .label { font-size: 12px; fill: var(--ink); }
svg.chart .mark { font-size: 11px; font-weight: 600; stroke: #fff; stroke-width: 3px;
                  paint-order: stroke; }
svg.chart .grid { stroke: var(--line); }
svg.chart .axis { stroke: #9aa3b2; }
svg.chart .bar { fill: var(--p50); fill-opacity: .85; }
svg.chart .bar:hover { fill-opacity: 1; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 6px 0 0 70px;
          font-size: 12px; color: var(--muted); }
.swatch { display: inline-block; width: 22px; margin-right: 6px; vertical-align: middle;
          border-top: 3px solid; }
.swatch.dashed { border-top-style: dashed; }
.note { color: var(--muted); font-size: 12px; margin: 10px 0 0; }
.nodata { color: var(--muted); font-style: italic; padding: 18px; text-align: center;
          background: var(--bg); border-radius: 8px; margin: 0; }
.nowrap { white-space: nowrap; }
.ok-note { color: var(--green); margin: 0; }
.verdicts { margin: 12px 0 0; padding-left: 20px; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
footer p { margin: 4px 0; }
"""
