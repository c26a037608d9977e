"""The AgentPool CRD: structural, printable, and rejecting bad specs with clear messages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from crd_schema import defaulted, structural_problems, validate

from voxmesh_operator.__main__ import crd_text
from voxmesh_operator.spec import PoolSpec

EXAMPLE = Path(__file__).parents[2] / "operator" / "examples" / "restaurant-host-pool.yaml"


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(crd_text())


@pytest.fixture()
def pool() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_schema_is_structural_with_scale_and_status(crd: dict) -> None:
    version = crd["spec"]["versions"][0]
    assert (crd["spec"]["group"], version["name"]) == ("voxmesh.dev", "v1alpha1")
    assert list(structural_problems(version["schema"]["openAPIV3Schema"])) == []
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.minReplicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    assert "status" in version["subresources"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    for state in ("warming", "idle", "busy", "draining"):
        assert columns[state.capitalize()] == f".status.workers.{state}"


def test_example_pool_is_valid_and_defaults_match_the_operator(crd: dict, pool: dict) -> None:
    assert validate(crd, pool) == []
    minimal = {"spec": {"template": pool["spec"]["template"]}}
    assert validate(crd, minimal) == []
    # The operator's own defaults (used when it reads a spec) agree with the CRD's.
    assert PoolSpec.from_resource(defaulted(crd, minimal)["spec"]) == PoolSpec.from_resource({})


@pytest.mark.parametrize(("change", "message"), [
    ({"minReplicas": 5, "maxReplicas": 2}, "spec: Invalid value: minReplicas must not exceed "
                                           "maxReplicas"),
    ({"buffer": "150%"}, "spec.buffer: Invalid value: buffer must be a whole number of idle "
                         "workers"),
    ({"buffer": "some"}, "spec.buffer: Invalid value: buffer must be a whole number"),
    ({"buffer": -1}, "spec.buffer: Invalid value: buffer must be a whole number"),
    ({"maxReplicas": 0}, "maxReplicas: Invalid value: 0 is less than the minimum of 1"),
    ({"maxSessionsPerWorker": 0}, "maxSessionsPerWorker: Invalid value: 0 is less than"),
    ({"drainTimeoutSeconds": "ten"}, "drainTimeoutSeconds: Invalid value: 'ten' is not of "
                                     "type 'integer'"),
    ({"updateStrategy": {"type": "Recreate"}}, "updateStrategy.type: Invalid value: "
                                               "'Recreate' is not one of ['Surge']"),
    ({"updateStrategy": {"maxSurge": "lots"}}, "spec.updateStrategy.maxSurge: Invalid value: "
                                               "maxSurge must be a whole number"),
    ({"replicas": 3}, "Additional properties are not allowed ('replicas' was unexpected)"),
])
def test_bad_specs_are_rejected_with_a_clear_message(crd: dict, pool: dict, change: dict,
                                                     message: str) -> None:
    bad = copy.deepcopy(pool)
    bad["spec"].update(change)
    errors = validate(crd, bad)
    assert any(message in error for error in errors), errors


def test_template_needs_a_container_with_an_image(crd: dict, pool: dict) -> None:
    bad = copy.deepcopy(pool)
    bad["spec"]["template"]["spec"]["containers"] = []
    assert any("should be non-empty" in e or "is too short" in e for e in validate(crd, bad))
    del bad["spec"]["template"]["spec"]["containers"]
    assert any("'containers' is a required property" in e for e in validate(crd, bad))
