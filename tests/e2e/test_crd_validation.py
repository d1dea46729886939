"""The CRD in the real apiserver: examples accepted with the models' defaults, bad input refused
with a message that names the field, status written by the models read back unchanged."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftwarden.api.conditions import ConditionType, Reason, set_condition
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import (
    Evaluation,
    LatencySummary,
    ModelMetrics,
    ModelOptimizationStatus,
    Outcome,
    Phase,
    RunRecord,
    Trigger,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "modeloptimization.yaml"
CRD_NAME = "modeloptimizations.driftwarden.io"
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))


def _examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ModelOptimization":
                found.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return found


EXAMPLES = _examples()


@pytest.fixture(scope="module")
def crd(devcluster: Any) -> Any:
    """The devcluster with this checkout's CRD applied and established."""
    devcluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=driftwarden-tests",
        "-f",
        str(CRD_FILE),
    )
    devcluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return devcluster


@pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_is_accepted_and_defaulted_like_the_models(
    crd: Any, namespace: str, name: str, doc: dict[str, Any]
) -> None:
    result = crd.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
        input=yaml.safe_dump(doc),
    )  # fmt: skip
    stored = json.loads(result.stdout)
    model = ModelOptimizationSpec.model_validate(doc["spec"])
    assert stored["spec"] == model.model_dump(mode="json", exclude_none=True)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_manifest_is_refused_with_a_message_naming_the_field(
    crd: Any, namespace: str, path: Path
) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    result = crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode != 0, f"{path.name} was accepted"
    assert expect in result.stderr


def _full_status(generation: int) -> ModelOptimizationStatus:
    moment = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    status = ModelOptimizationStatus(
        observed_generation=generation,
        phase=Phase.MONITORING,
        last_evaluation=Evaluation(
            id="e-1",
            time=moment,
            drift_metric="psi",
            drift_score=0.31,
            drift_detected=True,
            drifted_features=["petal_width"],
            latency=LatencySummary(source="Benchmark", batch_size=1, p50_ms=0.8, p95_ms=1.5),
            accuracy_percent=96.0,
        ),
    )
    metrics = ModelMetrics(accuracy_percent=96.0, latency_ms={"b1_p95": 1.5}, size_bytes=4096)
    status.record_run(
        RunRecord(
            id="r-1",
            trigger=Trigger.DRIFT,
            outcome=Outcome.PROMOTED,
            started_at=moment,
            finished_at=moment,
            baseline=metrics,
            candidate=metrics,
            artifact_uri="pvc://models/runs/iris/r-1",
            manifest_sha256="0" * 64,
        )
    )
    set_condition(status.conditions, ConditionType.READY, "True", Reason.READY, "ok", generation)
    status.refresh_display()  # what `kubectl get` shows, as the operator writes it
    return status


def test_status_written_from_the_models_reads_back_unchanged_and_shows_in_get(
    crd: Any, namespace: str
) -> None:
    minimal = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    crd.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(minimal))
    status = _full_status(generation=1)
    crd.kubectl(
        "patch", "mo", "iris", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status.to_merge_patch()}),
    )  # fmt: skip
    stored = json.loads(crd.kubectl("get", "mo", "iris", "-n", namespace, "-o", "json").stdout)
    assert stored["status"] == status.to_json_dict()
    assert ModelOptimizationStatus.model_validate(stored["status"]) == status
    # The status subresource never changes spec.
    assert stored["spec"]["model"] == minimal["spec"]["model"]

    table = crd.kubectl("get", "modelopt", "iris", "-n", namespace).stdout.splitlines()
    header, row = (re.split(r"\s{2,}", line.strip()) for line in table[:2])
    assert header == ["NAME", "PHASE", "READY", "DRIFT", "P95", "LAST RUN", "AGE"]
    assert row[:6] == ["iris", "Monitoring", "True", "0.310", "1.50ms", "Promoted"]


def test_the_category_lists_the_resources(crd: Any, namespace: str) -> None:
    minimal = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    crd.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(minimal))
    names = crd.kubectl("get", "driftwarden", "-n", namespace, "-o", "name").stdout.split()
    assert names == ["modeloptimization.driftwarden.io/iris"]


def test_an_update_is_validated_too(crd: Any, namespace: str) -> None:
    minimal = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    crd.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(minimal))
    result = crd.kubectl(
        "patch", "mo", "iris", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"pipeline": [{"prune": {"amountPercent": 99}}]}}),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "spec.pipeline[0].prune.amountPercent" in result.stderr
