"""docs/reference.md is generated from the CRD and up to date."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from driftwarden.api.openapi import iter_fields, load_crd, root_schema
from driftwarden.api.reference import render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD = load_crd(ROOT / "crds" / "modeloptimization.yaml")
REFERENCE = ROOT / "docs" / "reference.md"


def test_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == render(CRD), (
        "docs/reference.md is stale: run "
        "`.venv/bin/python -m driftwarden.api.reference > docs/reference.md`"
    )


def test_every_field_has_a_row_with_its_default_and_limits() -> None:
    text = render(CRD)
    schema = root_schema(CRD)
    for top in ("spec", "status"):
        for field in iter_fields(schema["properties"][top], top):
            assert f"| `{field.path.replace('[*]', '[]')}` |" in text, field.path
    row = next(
        line for line in text.splitlines() if "`spec.pipeline[].prune.amountPercent`" in line
    )
    assert "| yes |" in row
    assert "1 to 95" in row
    row = next(line for line in text.splitlines() if "`spec.monitoring.interval`" in line)
    assert '`"5m"`' in row
    assert "interval must be at least 10s" in row


def test_every_spec_field_has_a_description() -> None:
    spec = root_schema(CRD)["properties"]["spec"]
    missing = [f.path for f in iter_fields(spec, "spec") if not f.schema.get("description")]
    assert missing == []


def test_tables_are_well_formed() -> None:
    # Same number of unescaped cell separators on every row of a table.
    for table in re.split(r"\n\n", render(CRD)):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) <= 1, table[:200]
