"""The CRD and the pydantic models agree: field by field, rule by rule, example by example.

The CRD (crds/modeloptimization.yaml) is the source of truth. These tests check that the
models accept every example the CRD accepts (with the same defaults), refuse every invalid
fixture at the field the apiserver names, declare the same fields, types and limits, and mirror
every CEL rule with the same message. tests/e2e/test_crd_validation.py checks the same files
against the real apiserver.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from driftwarden.api import rules
from driftwarden.api.openapi import apply_defaults, iter_schemas, load_crd, root_schema, validate
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import ModelOptimizationStatus

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD = load_crd(ROOT / "crds" / "modeloptimization.yaml")
SCHEMA = root_schema(CRD)
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
STATUS_SCHEMA = SCHEMA["properties"]["status"]
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))


def _examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ModelOptimization":
                found.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return found


EXAMPLES = _examples()


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first.removeprefix("# expect: ")


def _expected_field(expect: str) -> str:
    match = re.search(r"spec(\.[A-Za-z0-9]+|\[\d+\])*", expect)
    assert match, f"the expected message {expect!r} names no spec field"
    return match.group(0)


_UNION_TAGS = {"int", "str", "bool", "float", "constrained-str"}


def _reported_fields(error: ValidationError) -> list[str]:
    """Where pydantic reports each error, written like the apiserver: spec.pipeline[0].prune."""
    fields = []
    for detail in error.errors():
        path = "spec"
        for part in detail["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part not in _UNION_TAGS:
                path += f".{part}"
        # Mirrored CEL rules with a fieldPath say the field first, as the apiserver does.
        named = re.match(r"Value error, ([A-Za-z][\w.]*): ", detail["msg"])
        fields.append(f"{path}.{named.group(1)}" if named else path)
    return fields


def test_the_suite_has_enough_cases() -> None:
    assert len(INVALID) >= 20
    assert {"minimal.yaml", "drift-retrain.yaml", "latency-prune-quantize.yaml"} <= {
        name.split(":")[0] for name, _ in EXAMPLES
    }
    assert any(doc["spec"].get("promotion", {}).get("mode") == "Manual" for _, doc in EXAMPLES)


@pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_is_valid_for_the_crd_and_the_models_with_the_same_defaults(
    name: str, doc: dict[str, Any]
) -> None:
    assert validate(SCHEMA, doc) == []
    defaulted = apply_defaults(SCHEMA, doc)
    assert validate(SCHEMA, defaulted) == []
    spec = ModelOptimizationSpec.model_validate(doc["spec"])
    # What `kubectl get -o yaml` shows after the apiserver's defaulting is what the model holds.
    assert spec.model_dump(mode="json", exclude_none=True) == defaulted["spec"]
    # And the model's own dump is a valid, stable spec.
    assert ModelOptimizationSpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_fixture_is_refused_by_the_models_at_the_field_the_apiserver_names(
    path: Path,
) -> None:
    doc = yaml.safe_load(path.read_text())
    field = _expected_field(_expected(path))
    with pytest.raises(ValidationError) as refused:
        ModelOptimizationSpec.model_validate(doc["spec"])
    reported = _reported_fields(refused.value)
    # Pydantic does not say which item of a set is the duplicate; the list itself is enough.
    assert any(field == r or field.startswith(r + "[") for r in reported), (field, reported)


def _about_a_cel_rule(path: Path) -> bool:
    said = _expected(path).split(": ")[-1]
    return any(rule.message.startswith(said) for rule in rules.ALL_RULES)


# CEL rules are checked by the models (above) and by the real apiserver (e2e).
STRUCTURAL = [p for p in INVALID if not _about_a_cel_rule(p)]


def test_fixtures_cover_both_the_schema_and_the_cel_rules() -> None:
    assert len(STRUCTURAL) >= 10
    assert len(INVALID) - len(STRUCTURAL) >= 10


@pytest.mark.parametrize("path", STRUCTURAL, ids=[p.stem for p in STRUCTURAL])
def test_structural_fixture_is_refused_by_the_schema_itself(path: Path) -> None:
    """Fixtures not about a CEL rule fail the structural schema (types, limits, unknown fields).

    This also proves the test's schema validator refuses things, so that the examples passing
    it means something.
    """
    expect = _expected(path)
    doc = yaml.safe_load(path.read_text())
    errors = validate(SCHEMA, apply_defaults(SCHEMA, doc))
    field = _expected_field(expect)
    assert any(field in error for error in errors), (field, errors)


def _crd_rules() -> set[rules.Rule]:
    found = set()
    for path, schema in iter_schemas(SCHEMA):
        for rule in schema.get("x-kubernetes-validations", []):
            field_path = rule.get("fieldPath", "").removeprefix(".")
            found.add(rules.Rule(path, field_path, rule["message"]))
    return found


def test_every_cel_rule_is_mirrored_with_the_same_field_and_message() -> None:
    assert _crd_rules() == set(rules.ALL_RULES)


def test_rules_that_report_at_a_field_name_a_field_of_the_schema() -> None:
    for rule in rules.ALL_RULES:
        node: dict[str, Any] = SCHEMA
        for part in rule.reported_path.replace("[*]", ".[*]").split("."):
            node = node["items"] if part == "[*]" else node["properties"][part]


# --- field by field: the CRD's schema against the models' JSON schema ---------------------

_LIMITS: tuple[str, ...] = (
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
)


class _ModelSchema:
    def __init__(self, model: type[BaseModel]) -> None:
        self.root = model.model_json_schema(by_alias=True)
        self.defs = self.root.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow $ref and drop the null alternative of an optional field."""
        while True:
            if "$ref" in node:
                node = {
                    **self.defs[node["$ref"].split("/")[-1]],
                    **{k: v for k, v in node.items() if k != "$ref"},
                }
                continue
            options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
            if len(options) == 1:
                rest = {k: v for k, v in node.items() if k != "anyOf"}
                node = {**options[0], **rest}
                continue
            return node


def _compare(
    crd: dict[str, Any], model: _ModelSchema, node: dict[str, Any], path: str, *, spec: bool
) -> list[str]:
    node = model.resolve(node)
    problems: list[str] = []
    if crd.get("x-kubernetes-int-or-string"):
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        kinds = sorted(o.get("type", "") for o in options)
        patterns = [o["pattern"] for o in options if "pattern" in o]
        lengths = [o["maxLength"] for o in options if "maxLength" in o]
        if (
            kinds != ["integer", "string"]
            or patterns != [crd.get("pattern")]
            or lengths != [crd.get("maxLength")]
        ):
            problems.append(f"{path}: int-or-string with the CRD's pattern, got {node}")
        return problems
    if crd.get("type") != node.get("type"):
        return [f"{path}: type {crd.get('type')} in the CRD, {node.get('type')} in the model"]
    # Status text is cut to its maxLength instead of refused, so only spec compares lengths.
    for key in _LIMITS if spec else ("enum",):
        if crd.get(key) != node.get(key):
            problems.append(f"{path}: {key} {crd.get(key)!r} in the CRD, {node.get(key)!r}")
    if spec:
        # Object and list defaults come from default factories, which the JSON schema does
        # not show; the examples test compares those after defaulting.
        default, crd_default = node.get("default"), crd.get("default")
        scalar = crd_default is not None and not isinstance(crd_default, dict | list)
        if (default is not None or scalar) and default != crd_default:
            problems.append(f"{path}: default {crd_default!r} in the CRD, {default!r}")
    if crd["type"] == "array":
        problems += _compare(crd["items"], model, node["items"], f"{path}[*]", spec=spec)
    elif crd["type"] == "object" and "properties" in crd:
        problems += _compare_object(crd, model, node, path, spec=spec)
    elif crd["type"] == "object" and isinstance(crd.get("additionalProperties"), dict):
        extra = node.get("additionalProperties", {})
        problems += _compare(crd["additionalProperties"], model, extra, f"{path}[*]", spec=spec)
    return problems


def _compare_object(
    crd: dict[str, Any], model: _ModelSchema, node: dict[str, Any], path: str, *, spec: bool
) -> list[str]:
    crd_fields, model_fields = set(crd["properties"]), set(node.get("properties", {}))
    if crd_fields != model_fields:
        return [
            f"{path}: fields only in the CRD {crd_fields - model_fields}, "
            f"only in the model {model_fields - crd_fields}"
        ]
    problems = []
    crd_required, model_required = set(crd.get("required", [])), set(node.get("required", []))
    if spec and crd_required != model_required:
        problems.append(f"{path}: required {crd_required} in the CRD, {model_required}")
    if not spec:
        # Whatever the CRD requires, the model always writes.
        for name in crd_required - model_required:
            if model.resolve(node["properties"][name]).get("default") is None:
                problems.append(f"{path}.{name}: required by the CRD, optional in the model")
    for name in sorted(crd_fields):
        problems += _compare(
            crd["properties"][name], model, node["properties"][name], f"{path}.{name}", spec=spec
        )
    return problems


def test_spec_fields_types_limits_and_defaults_agree() -> None:
    model = _ModelSchema(ModelOptimizationSpec)
    assert _compare(SPEC_SCHEMA, model, model.root, "spec", spec=True) == []


def test_status_fields_and_types_agree() -> None:
    model = _ModelSchema(ModelOptimizationStatus)
    assert _compare(STATUS_SCHEMA, model, model.root, "status", spec=False) == []


def test_the_comparison_notices_a_disagreement() -> None:
    """A changed limit in the CRD is reported: the agreement tests can fail."""
    model = _ModelSchema(ModelOptimizationSpec)
    altered = yaml.safe_load(yaml.safe_dump(SPEC_SCHEMA))
    prune = altered["properties"]["pipeline"]["items"]["properties"]["prune"]
    prune["properties"]["amountPercent"]["maximum"] = 90
    altered["properties"]["job"]["properties"]["backoffLimit"]["default"] = 3
    problems = _compare(altered, model, model.root, "spec", spec=True)
    assert len(problems) == 2
    assert any("spec.pipeline[*].prune.amountPercent: maximum 90" in p for p in problems)
    assert any("spec.job.backoffLimit: default 3" in p for p in problems)


def test_the_status_comparison_notices_a_missing_field() -> None:
    model = _ModelSchema(ModelOptimizationStatus)
    altered = yaml.safe_load(yaml.safe_dump(STATUS_SCHEMA))
    del altered["properties"]["runs"]["items"]["properties"]["manifestSha256"]
    problems = _compare(altered, model, model.root, "status", spec=False)
    assert len(problems) == 1
    assert "status.runs[*]: fields only in the CRD set(), only in the model" in problems[0]
