"""Validates a custom resource against a CRD's schema the way the API server does, offline.

Covers what the AgentPool CRD uses: defaulting, OpenAPI v3 types/ranges/patterns/enums (via
jsonschema), ``x-kubernetes-int-or-string``, ``x-kubernetes-preserve-unknown-fields`` and CEL
``x-kubernetes-validations`` rules (via cel-python) with their messages. Errors read like the
API server's: ``spec.maxReplicas: Invalid value: ...``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema

Schema = dict[str, Any]


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Fills in ``default`` values, depth first, as the API server does before validating."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _to_json_schema(schema: Schema) -> Schema:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema."""
    out: Schema = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _to_json_schema(value)
        elif key.startswith("x-kubernetes-") or key in ("description", "default", "format"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("type") == "object" and "properties" in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _cel_errors(schema: Schema, value: Any, path: str) -> Iterator[str]:
    environment = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or []:
        program = environment.program(environment.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            where = path + rule.get("fieldPath", "")
            yield f"{where.lstrip('.')}: Invalid value: {rule.get('message', rule['rule'])}"
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                yield from _cel_errors(sub, value[name], f"{path}.{name}")


def validate(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Errors the API server would report for ``obj`` (empty when it would be accepted)."""
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    obj = apply_defaults(schema, copy.deepcopy(obj))
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path)}: Invalid value: {error.message}"
        for error in jsonschema.Draft7Validator(_to_json_schema(schema)).iter_errors(body)
    ]
    if errors:
        return errors  # the API server does not run CEL rules on ill-typed objects
    return list(_cel_errors(schema, body, ""))


def defaulted(crd: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the CRD's defaults filled in."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return apply_defaults(schema, copy.deepcopy(obj))


def structural_problems(schema: Schema, path: str = "") -> Iterator[str]:
    """Nodes that break Kubernetes' structural-schema rule: every node has a type, unless it
    is int-or-string or preserves unknown fields."""
    if not (schema.get("type") or schema.get("x-kubernetes-int-or-string")
            or schema.get("x-kubernetes-preserve-unknown-fields")):
        yield f"{path or '<root>'}: no type"
    for name, sub in (schema.get("properties") or {}).items():
        yield from structural_problems(sub, f"{path}.{name}")
    if "items" in schema:
        yield from structural_problems(schema["items"], f"{path}[]")
