"""The framework switch on the devcluster: a pipeline `prune -> export` promotes an ONNX
model, and the serving Pod answers from ONNX Runtime.

The run prunes the example MLP, exports it to ONNX (verified against PyTorch on the
holdout), and the gates compare the ONNX Runtime candidate with the torch model in use,
measured side by side. Promotion points the Deployment at the ONNX model directory; its new
Pod loads it with onnxruntime and says so on /readyz, and the next evaluation Job measures
the ONNX model in use.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from loop_support import (
    apply_yaml,
    condition,
    pod_readyz,
    serving_deployment,
    start_loop_operator,
    wait_serving,
    wait_status,
)
from operator_process import OperatorProcess, scratch_dir

from devcluster.controlplane import Cluster
from optimizer_job.dataio import load_table

# Two Jobs (prune + export, then an evaluation) and two serving Pods that import torch and
# onnxruntime: 500 s at load average 15 on two cores, past the suite's 900 s cap at load 28.
# Every wait below is for an event; this only raises the safety net of the whole test.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
pytest_plugins = ["operator_fixtures"]

NAME = "onnx"
SERVER = "onnx-server"


def test_prune_then_export_promotes_an_onnx_model_served_by_onnx_runtime(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    tmp_path: Path,
) -> None:
    model = f"file://{job_example}/model"
    apply_yaml(devcluster, namespace, serving_deployment(model, name=SERVER))
    apply_yaml(
        devcluster,
        namespace,
        f"""
apiVersion: driftwarden.io/v1alpha1
kind: ModelOptimization
metadata: {{name: {NAME}}}
spec:
  runRequest: "first"
  model: {{uri: "{model}"}}
  data:
    reference: "file://{job_example}/data/reference.parquet"
    current: "file://{job_example}/data/current.parquet"
    holdout: "file://{job_example}/data/holdout.parquet"
  artifacts: {{uri: "file://{scratch_dir("loop-export-artifacts-")}"}}
  target: {{deployment: {SERVER}}}
  pipeline:
    - prune: {{amountPercent: 30, fineTuneEpochs: 1}}
    - export: {{format: onnx}}
  gates: {{maxAccuracyDropPercent: 5}}
  monitoring:
    interval: 10s
    latency: {{batchSizes: [1, 32], warmup: 2, iterations: 20}}
  job:
    resources: {{cpu: 500m, memory: 1Gi}}
""",
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)
    done = wait_status(
        "the promotion of the ONNX candidate",
        devcluster,
        namespace,
        NAME,
        lambda s: bool(s.get("promoted")) or any(r.get("outcome") for r in s.get("runs") or []),
        operator,
        timeout=600,
    )
    (run,) = done["runs"]
    assert run["outcome"] == "Promoted", (run, condition(done, "Promoted"))
    artifact = run["artifactUri"]
    assert done["promoted"]["current"] == artifact
    directory = Path(artifact.removeprefix("file://"))
    meta = json.loads((directory / "model.json").read_text())
    assert meta["format"] == "onnx" and (directory / "model.onnx").is_file()
    assert meta["onnx"]["opset"] == 18 and meta["onnx"]["inputs"][0]["shape"][0] == "batch"
    result = json.loads((directory / "result.json").read_text())
    export_stage = result["stages"][-1]
    assert export_stage["type"] == "export"
    assert export_stage["notes"]["verify_max_abs_diff"] <= 1e-4

    # The Deployment rolled to the ONNX model; its Pod runs it with ONNX Runtime.
    pod = wait_serving(devcluster, namespace, SERVER, artifact, operator)
    ready = pod_readyz(pod)
    assert ready is not None and ready["runtime"] == "onnxruntime"
    holdout = load_table(f"file://{job_example}/data/holdout.parquet", "label")
    body = json.dumps({"instances": holdout.X[:32].tolist()}).encode()
    request = urllib.request.Request(
        f"http://{pod['status']['podIP']}:8080/predict",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    assert answer["model"] == artifact
    assert holdout.y is not None
    assert np.mean(np.array(answer["predictions"]) == holdout.y[:32]) > 0.5

    # The evaluation Job measures the ONNX model in use.
    evaluated = wait_status(
        "an evaluation of the ONNX model",
        devcluster,
        namespace,
        NAME,
        lambda s: (s.get("lastEvaluation") or {}).get("modelUri") == artifact,
        operator,
    )
    assert evaluated["lastEvaluation"]["accuracyPercent"] == pytest.approx(
        run["candidate"]["accuracyPercent"], abs=0.01
    )
