from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_collector_pipelines_use_defined_components() -> None:
    config = yaml.safe_load((REPO / "infra" / "otel-collector" / "config.yaml").read_text())
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}: {kind[:-1]} {component} undefined"
    assert config["exporters"]["otlp/tempo"]["endpoint"]
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
