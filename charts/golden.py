"""Renders the chart's scenarios with the Helm SDK; keeps the golden copies (``make chart-golden``).

Golden files are the chart rendered with each values file under ``voxmesh/ci/`` (and the
defaults), release ``voxmesh`` in namespace ``voxmesh``. The chart tests fail when a render
drifts from its golden file, so every change to the output is reviewed in a diff.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).parent / "voxmesh"
GOLDEN = CHART / "golden"
RELEASE, NAMESPACE = "voxmesh", "voxmesh"


def scenarios() -> dict[str, dict[str, Any]]:
    """Scenario name -> values: the defaults and every ``ci/*.yaml``."""
    found: dict[str, dict[str, Any]] = {"default": {}}
    for path in sorted((CHART / "ci").glob("*.yaml")):
        found[path.stem] = yaml.safe_load(path.read_text()) or {}
    return found


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template file -> rendered text, as ``helm template`` would produce."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return {name: text for name, text in sorted(rendered.items()) if text.strip()}


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders, CRDs aside."""
    return [doc for text in render(values).values() for doc in yaml.safe_load_all(text) if doc]


def golden_text(values: dict[str, Any]) -> str:
    """One file: each template's output under a ``# Source:`` line, as ``helm template``."""
    return "".join(f"---\n# Source: {name}\n{text.strip()}\n"
                   for name, text in render(values).items())


def main() -> None:
    """Writes the golden files, or with ``--check`` reports which ones drifted."""
    check = sys.argv[1:] == ["--check"]
    GOLDEN.mkdir(exist_ok=True)
    drifted = []
    for name, values in scenarios().items():
        path, text = GOLDEN / f"{name}.yaml", golden_text(values)
        if check:
            if not path.exists() or path.read_text() != text:
                drifted.append(path.name)
        else:
            path.write_text(text)
    if drifted:
        raise SystemExit(f"golden files out of date: {', '.join(drifted)}; "
                         "review the change and run `make chart-golden`")
    if not check:
        print(f"wrote {len(scenarios())} golden files to {GOLDEN}")


if __name__ == "__main__":
    main()
