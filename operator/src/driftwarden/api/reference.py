"""Generate docs/reference.md, the ModelOptimization field reference, from the CRD.

    python -m driftwarden.api.reference [crds/modeloptimization.yaml] > docs/reference.md

A unit test regenerates it and compares, so the reference never drifts from the CRD.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from driftwarden.api.openapi import (
    CRD_FILE,
    VERSION,
    Field,
    Schema,
    iter_fields,
    iter_schemas,
    load_crd,
    root_schema,
    version_of,
)


def _cell(text: str) -> str:
    # GitHub tables: escape pipes (also inside code spans) and keep each row on one line.
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str) -> str:
    # Descriptions say things like pvc://<claim>/<path>: not HTML tags.
    return _cell(text).replace("<", "&lt;").replace(">", "&gt;")


def _literal(value: Any) -> str:
    # JSON, so a string default shows its quotes: decimals and quantities are strings.
    return f"`{json.dumps(value)}`"


def _type(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map[string]{_type(schema['additionalProperties'])}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return kind


def _limits(schema: Schema) -> str:
    parts: list[str] = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(_literal(v) for v in schema["enum"]))
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        parts.append(f"{low} to {high}")
    elif low is not None:
        parts.append(f">= {low}")
    elif high is not None:
        parts.append(f"<= {high}")
    for key, label in (
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("minItems", "items >="),
        ("maxItems", "items <="),
        ("maxProperties", "entries <="),
    ):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        parts.append("unique items")
    elif list_type == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys", []))
        parts.append(f"unique by {keys}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    for rule in schema.get("x-kubernetes-validations", []):
        if not rule.get("fieldPath"):
            parts.append(f"rule: {rule['message']}")
    return "; ".join(parts)


def _field_rows(fields: list[Field]) -> list[str]:
    rows = [
        "| Field | Type | Required | Default | Limits | Description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for field in fields:
        schema = field.schema
        default = _literal(schema["default"]) if "default" in schema else ""
        cells = [
            f"`{field.path.replace('[*]', '[]')}`",
            _type(schema),
            "yes" if field.required else "",
            default,
            _limits(schema),
        ]
        rows.append(
            "| " + " | ".join([*map(_cell, cells), _prose(schema.get("description", ""))]) + " |"
        )
    return rows


def _cross_field_rules(schema: Schema) -> list[str]:
    rows = ["| Reported at | Rule | Message |", "| --- | --- | --- |"]
    for path, sub in iter_schemas(schema, "spec"):
        for rule in sub.get("x-kubernetes-validations", []):
            # A rule about one field alone is listed in that field's row instead.
            if not rule.get("fieldPath") and not path.endswith("[*]"):
                continue
            where = (path + rule.get("fieldPath", "")).replace("[*]", "[]")
            cells = [_cell(f"`{where}`"), _cell(f"`{rule['rule']}`"), _prose(rule["message"])]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def render(crd: dict[str, Any], version: str = VERSION) -> str:
    names = crd["spec"]["names"]
    entry = version_of(crd, version)
    schema = root_schema(crd, version)
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    columns = [
        f"| {_cell(c['name'])} | `{_cell(c['jsonPath'])}` |"
        for c in entry.get("additionalPrinterColumns", [])
    ]
    lines = [
        f"# {names['kind']} reference ({crd['spec']['group']}/{version})",
        "",
        f"<!-- Generated from {CRD_FILE} by `python -m driftwarden.api.reference`."
        " Do not edit: change the CRD and regenerate. -->",
        "",
        _prose(schema.get("description", "")),
        "",
        f"- API: `apiVersion: {crd['spec']['group']}/{version}`, `kind: {names['kind']}`,"
        f" {crd['spec']['scope'].lower()}",
        f"- Names: `{names['plural']}`, short names "
        + ", ".join(f"`{n}`" for n in names.get("shortNames", []))
        + ", categories "
        + ", ".join(f"`{c}`" for c in names.get("categories", [])),
        '- Conventions: percentages are integers; decimals are strings (`"0.001"`);'
        " durations are strings like `30s`, `5m`, `1h30m`, `2d6h` (days first);"
        " quantities are Kubernetes quantities (`500m`, `2Gi`). Unknown fields are refused.",
        "",
        "`kubectl get mo` columns:",
        "",
        "| Column | From |",
        "| --- | --- |",
        *columns,
        "",
        "## spec",
        "",
        _prose(spec.get("description", "")),
        "",
        *_field_rows(list(iter_fields(spec, "spec"))),
        "",
        "### Cross-field rules",
        "",
        "Checked by the API server (CEL); a violation is refused with the message below, reported"
        " at the field named. Rules on a single field are listed with it above.",
        "",
        *_cross_field_rules(spec),
        "",
        "## status",
        "",
        _prose(status.get("description", "")),
        "",
        *_field_rows(list(iter_fields(status, "status"))),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sys.stdout.write(render(load_crd(args[0] if args else CRD_FILE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
