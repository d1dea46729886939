"""The README's example manifest is one the API accepts (models mirror the CRD's rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from driftwarden.api.spec import ModelOptimizationSpec

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_is_a_valid_modeloptimization() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.DOTALL)
    manifests = [yaml.safe_load(b) for b in blocks if "kind: ModelOptimization" in b]
    assert manifests, "README has no ModelOptimization example"
    for manifest in manifests:
        assert manifest["apiVersion"] == "driftwarden.io/v1alpha1"
        spec = ModelOptimizationSpec.model_validate(manifest["spec"])
        assert spec.pipeline, "the example should show a pipeline"
