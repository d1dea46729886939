"""The serving Deployment (examples/serving/deployment.yaml) waits for a slow start.

The server listens only once torch and onnxruntime are imported: seconds on an idle node,
about 90 s measured at load 20 on two cores. Before the startup probe, the liveness probe
(10 s initial delay, three failures 10 s apart) killed such a server at 30 s, and every
restart started over: the Pod never became ready (the cause of test_loop_export.py's time
outs under load). Here the server's start is held back by 45 s on purpose, so the
Deployment's probes meet a start slower than liveness alone allows, on any machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from loop_support import apply_yaml, serving_deployment, serving_pods, wait_serving

from devcluster.controlplane import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
pytest_plugins = ["operator_fixtures"]

SERVER = "slow-start"
HELD_BACK_SECONDS = 45


def test_a_server_slower_to_listen_than_liveness_allows_is_waited_for_not_restarted(
    devcluster: Cluster, namespace: str, job_example: Path
) -> None:
    model = f"file://{job_example}/model"
    body = serving_deployment(model, name=SERVER)
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["python", "-m"]
    container["command"] = [
        "sh",
        "-c",
        f"sleep {HELD_BACK_SECONDS} && exec {' '.join(container['command'])}",
    ]
    apply_yaml(devcluster, namespace, body)
    pod = wait_serving(devcluster, namespace, SERVER, model, None)
    (status,) = pod["status"]["containerStatuses"]
    assert status["restartCount"] == 0, status
    (only,) = serving_pods(devcluster, namespace, SERVER)
    assert only["metadata"]["name"] == pod["metadata"]["name"]
