"""Generates the Voxmesh Grafana dashboards (``make dashboards``).

Dashboards are code (grafana-foundation-sdk); the JSON in ``dashboards/`` is generated, checked
in for the Helm chart's ConfigMaps, and verified by ``tests/e2e/test_observability.py``
against the metrics the processes actually serve. Datasource uids match
``datasources.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.table import Panel as Table
from grafana_foundation_sdk.builders.tempo import TempoQuery
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="voxmesh-prometheus")
TEMPO = DataSourceRef(type_val="tempo", uid="voxmesh-tempo")
RATE = "$__rate_interval"
#: The TraceQL query that finds slow turns (also in docs/tracing.md).
SLOW_TURNS_TRACEQL = '{ name = "turn" && span.voxmesh.turn.voice_to_voice_ms > 1500 }'


def _quantile(q: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))"


def _prom(expr: str, legend: str, ref: str = "A") -> PromQuery:
    return PromQuery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROMETHEUS)


def _latency(title: str, *targets: PromQuery) -> Timeseries:
    panel = Timeseries().title(title).unit("ms").min(0).datasource(PROMETHEUS).height(8)
    for target in targets:
        panel = panel.with_target(target)
    return panel.span(12)


def turns_dashboard() -> Dashboard:
    """Turn latency by stage, calls, errors and worker pool states."""
    v2v = "voxmesh_turn_voice_to_voice_milliseconds"
    stage = "voxmesh_turn_stage_milliseconds"
    return (
        Dashboard("Voxmesh / Turns")
        .uid("voxmesh-turns")
        .tags(["voxmesh", "generated"])
        .refresh("30s")
        .time("now-1h", "now")
        .with_row(Row("Latency"))
        .with_panel(_latency(
            "Voice-to-voice",
            _prom(_quantile(0.5, v2v), "p50", "A"),
            _prom(_quantile(0.95, v2v), "p95", "B")))
        .with_panel(_latency("Stage first-byte p50", _prom(_quantile(0.5, stage, "stage"),
                                                            "{{stage}}")))
        .with_panel(_latency("Stage first-byte p95", _prom(_quantile(0.95, stage, "stage"),
                                                            "{{stage}}")))
        .with_panel(_latency(
            "Services p95",
            _prom(_quantile(0.95, "voxmesh_stt_processing_milliseconds"), "stt decode", "A"),
            _prom(_quantile(0.95, "voxmesh_llm_first_token_milliseconds"), "llm first token",
                  "B"),
            _prom(_quantile(0.95, "voxmesh_tts_first_audio_milliseconds"), "tts first audio",
                  "C")))
        .with_row(Row("Traffic"))
        .with_panel(Stat().title("Active calls").datasource(PROMETHEUS).span(6).height(6)
                    .with_target(_prom("sum(voxmesh_sessions_active)", "calls")))
        .with_panel(Timeseries().title("Calls, turns and interruptions per second")
                    .datasource(PROMETHEUS).span(18).height(6)
                    .with_target(_prom(f"sum(rate(voxmesh_calls_total[{RATE}]))", "calls", "A"))
                    .with_target(_prom(f"sum(rate(voxmesh_turns_total[{RATE}]))", "turns", "B"))
                    .with_target(_prom(f"sum(rate(voxmesh_interruptions_total[{RATE}]))",
                                       "interruptions", "C")))
        .with_row(Row("Errors and workers"))
        .with_panel(Timeseries().title("Errors by component and code").datasource(PROMETHEUS)
                    .span(12).height(8)
                    .with_target(_prom(
                        f"sum by (component, code) (rate(voxmesh_errors_total[{RATE}]))",
                        "{{component}} {{code}}", "A"))
                    .with_target(_prom(
                        f"sum by (component, code) (rate(voxmesh_rpc_errors_total[{RATE}]))",
                        "rpc {{component}} {{code}}", "B")))
        .with_panel(Timeseries().title("Worker pool by state").datasource(PROMETHEUS)
                    .span(12).height(8)
                    .with_target(_prom("sum by (state) (voxmesh_worker_state)", "{{state}}")))
        .with_row(Row("Slow turns"))
        .with_panel(Table().title("Turns slower than 1.5 s (Tempo)").datasource(TEMPO)
                    .span(24).height(8)
                    .with_target(TempoQuery().query(SLOW_TURNS_TRACEQL).query_type("traceql")
                                 .limit(50).ref_id("A").datasource(TEMPO)))
    )


def main(out_dir: Path) -> None:
    """Writes every dashboard as JSON into ``out_dir``."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    for builder in (turns_dashboard(),):
        built = builder.build()
        (out_dir / f"{built.uid}.json").write_text(encoder.encode(built) + "\n")


#: The Helm chart ships the same JSON (a chart cannot read files outside its folder).
CHART_DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "voxmesh" / "dashboards"

if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        main(Path(__file__).parent / "dashboards")
        main(CHART_DASHBOARDS)
