"""Properties of the CRD itself: names, strictness, bounds for CEL, status, printer columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driftwarden.api.openapi import iter_schemas, load_crd, root_schema, version_of

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD = load_crd(ROOT / "crds" / "modeloptimization.yaml")
VERSION = version_of(CRD)
SCHEMA = root_schema(CRD)


def test_names_group_and_version() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "modeloptimizations.driftwarden.io"
    assert CRD["spec"]["group"] == "driftwarden.io"
    assert CRD["spec"]["scope"] == "Namespaced"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "ModelOptimization",
        "modeloptimizations",
        "modeloptimization",
    )
    assert set(names["shortNames"]) == {"mo", "modelopt"}
    assert "all" not in names.get("categories", [])
    assert [v["name"] for v in CRD["spec"]["versions"]] == ["v1alpha1"]
    assert VERSION["served"] and VERSION["storage"]


def test_status_is_a_subresource() -> None:
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Ready", "Drift", "p95", "Last run", "Age", "Reason"]
    # Measurements are shown rounded (status.display), not as raw floats.
    assert columns["Drift"]["jsonPath"] == ".status.display.drift"
    assert columns["p95"]["jsonPath"] == ".status.display.p95"
    assert columns["Reason"]["priority"] == 1  # -o wide only: `get mo -A` stays narrow
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"]["type"] == "date"
    # Every column reads a field the status schema has.
    for column in columns.values():
        path = column["jsonPath"].split("[")[0].lstrip(".").split(".")
        node: dict[str, Any] = SCHEMA
        for part in path:
            if part == "metadata":
                break
            node = node["properties"][part]


def test_spec_is_strictly_structural() -> None:
    spec = SCHEMA["properties"]["spec"]
    for path, schema in iter_schemas(spec, "spec"):
        assert not schema.get("x-kubernetes-preserve-unknown-fields"), path
        kind = schema.get("type")
        assert kind != "number", f"{path}: no floats in spec (integers or decimal strings)"
        if kind == "object":
            assert "properties" in schema or "additionalProperties" in schema, path


def test_every_list_and_string_under_a_cel_rule_is_bounded() -> None:
    # The apiserver estimates a rule's cost from maxItems / maxLength; unbounded lists or
    # strings under a rule can exceed the budget.
    for path, schema in iter_schemas(SCHEMA["properties"]["spec"], "spec"):
        if schema.get("type") == "array":
            assert "maxItems" in schema, path
        is_string = schema.get("type") == "string" or schema.get("x-kubernetes-int-or-string")
        if is_string and "enum" not in schema:
            assert "maxLength" in schema, path


def test_conditions_have_the_metav1_shape_and_are_a_map_by_type() -> None:
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_run_history_is_bounded() -> None:
    runs = SCHEMA["properties"]["status"]["properties"]["runs"]
    assert runs["maxItems"] == 20
    assert runs["x-kubernetes-list-map-keys"] == ["id"]
