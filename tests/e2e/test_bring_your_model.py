"""Bring your own model from S3, with YAML alone (examples/huggingface-s3.yaml).

A 2-layer BERT saved with save_pretrained (WordPiece tokenizer trained locally) and its
text data are uploaded to a bucket of the devcluster's real S3 server (versitygw). The
example manifest is applied as it is, but for a runRequest: the run's Job first waits for
the Secret it names (Ready=False MissingSecret, read from the Job's Pod: the operator has no
right on Secrets), then fine-tunes and quantizes the model in
a Job that reads and writes s3:// only, promotes it, and the serving Deployment's Pod loads
the new s3:// prefix (checked against its MANIFEST) and says so on /readyz.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import obstore
import pytest
import yaml
from loop_support import (
    PROJECT,
    apply_yaml,
    condition,
    container_of,
    deployment,
    serving_deployment,
    start_loop_operator,
    wait_serving,
    wait_status,
)
from operator_process import OperatorProcess, get_json

from devcluster.controlplane import Cluster
from optimizer_job import storage
from optimizer_job.example_hf import make_text_example

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
pytest_plugins = ["operator_fixtures"]

EXAMPLE = PROJECT / "examples" / "huggingface-s3.yaml"
BUCKET = "models"


def _upload(local: Path, uri: str, env: dict[str, str]) -> None:
    """What `aws s3 cp --recursive` would do."""
    bucket, prefix = storage.parse_s3_uri(uri)
    store = storage.open_store(bucket, env)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        obstore.put(store, f"{prefix}/{path.relative_to(local).as_posix()}", path)


def _secret(name: str, env: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": env,
    }


def test_a_save_pretrained_model_on_s3_is_optimized_and_served(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    endpoint = devcluster.start_s3()
    devcluster.create_bucket(BUCKET)
    env = endpoint.env()
    example = make_text_example(tmp_path / "example")
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]
    name = manifest["metadata"]["name"]
    _upload(Path(example["model"]), spec["model"]["uri"], env)
    _upload(Path(example["data"]), spec["data"]["reference"].rsplit("/", 1)[0], env)

    server = spec["target"]["deployment"]
    secret = spec["storage"]["secretRef"]["name"]
    serving = serving_deployment(spec["model"]["uri"], name=server)
    (server_container,) = serving["spec"]["template"]["spec"]["containers"]
    server_container["envFrom"] = [{"secretRef": {"name": secret}}]
    apply_yaml(devcluster, namespace, serving)

    spec["runRequest"] = "first"
    spec["job"] = {"resources": {"cpu": "1", "memory": "3Gi"}}
    spec["monitoring"] = {"interval": "1h"}
    apply_yaml(devcluster, namespace, manifest)
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)
    missing = wait_status(
        "Ready=False MissingSecret",
        devcluster,
        namespace,
        name,
        lambda s: condition(s, "Ready").get("reason") == "MissingSecret",
        operator,
    )
    assert secret in condition(missing, "Ready")["message"]
    # The operator has no right on Secrets: the run waits in its Job, whose Pod the kubelet
    # holds for want of the Secret - that is what the operator read.
    job_name = missing["activeRun"]["jobName"]
    (pod,) = get_json(
        devcluster, "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job_name}"
    )["items"]
    (state,) = [c["state"] for c in pod["status"]["containerStatuses"]]
    assert state["waiting"]["reason"] == "CreateContainerConfigError"
    assert secret in state["waiting"]["message"]

    # The run's Job starts as soon as the Secret exists (the kubelet retries): under load it
    # may promote before the serving Pod, held by the same Secret, ever served the first
    # model, so the serving side is checked on the promoted s3:// model below.
    apply_yaml(devcluster, namespace, _secret(secret, env))
    promoted = wait_status(
        "the promotion",
        devcluster,
        namespace,
        name,
        lambda s: bool(s.get("promoted")),
        operator,
        timeout=1200,
    )
    (run,) = promoted["runs"]
    artifact = run["artifactUri"]
    assert artifact == f"s3://{BUCKET}/runs/{name}/{run['id']}"
    assert promoted["promoted"]["current"] == artifact
    assert run["candidate"]["accuracyPercent"] >= 90
    served_env = {
        e["name"]: e.get("value")
        for e in container_of(deployment(devcluster, namespace, server))["env"]
    }
    assert served_env["MODEL_URI"] == artifact
    # The run's prefix is complete (MANIFEST written last) and holds an int8 model.
    bucket, prefix = storage.parse_s3_uri(artifact)
    store = storage.open_store(bucket, env)
    obstore.head(store, f"{prefix}/MANIFEST")
    meta = json.loads(bytes(obstore.get(store, f"{prefix}/model.json").bytes()))
    assert meta["quantization"]["mode"] == "int8"
    wait_serving(devcluster, namespace, server, artifact, operator)
    # No credential reached the resource's status or events.
    described = devcluster.kubectl("describe", "mo", name, "-n", namespace).stdout
    for value in (endpoint.secret_key, endpoint.access_key):
        assert value not in described
