"""The target's model env var is never one the serving container uses for something else
(services.target_writer): promotion would overwrite it."""

from __future__ import annotations

from typing import Any, cast

import pytest

from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import ModelOptimizationStatus
from driftwarden.api.types import now_utc
from driftwarden.builders.job import Owner
from driftwarden.config import OperatorConfig
from driftwarden.k8s import Kube
from driftwarden.metrics import OperatorMetrics
from driftwarden.services.loop_context import LoopContext
from driftwarden.services.target import TargetApi
from driftwarden.services.target_writer import TargetUnavailableError, TargetWriter

pytestmark = pytest.mark.unit

Json = dict[str, Any]


class OneDeployment:
    def __init__(self, env: list[Json]) -> None:
        self.deployment: Json = {
            "metadata": {"name": "serving", "namespace": "ml"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "env": env}]}}},
        }

    def get_deployment(self, namespace: str, name: str) -> Json | None:
        return self.deployment


def writer(env: list[Json], model_env: str = "MODEL_URI") -> TargetWriter:
    spec = ModelOptimizationSpec.model_validate(
        {
            "model": {"uri": "file:///srv/model"},
            "data": {
                "reference": "file:///srv/ref.parquet",
                "current": "file:///srv/cur.parquet",
                "holdout": "file:///srv/hold.parquet",
            },
            "artifacts": {"uri": "file:///srv/runs"},
            "target": {"deployment": "serving", "modelEnv": model_env},
            "pipeline": [{"quantize": {"mode": "int8"}}],
        }
    )
    context = LoopContext(
        kube=cast(Kube, None),
        target_api=cast(TargetApi, OneDeployment(env)),
        metrics=OperatorMetrics(),
        config=OperatorConfig(),
        owner=Owner("ml", "digits", "uid-1"),
        created_at=now_utc(),
        generation=1,
        spec=spec,
        status=ModelOptimizationStatus(),
        now=now_utc(),
        emit=lambda *_: None,
    )
    return TargetWriter(context)


@pytest.mark.parametrize(
    "env",
    [
        [],
        [{"name": "MODEL_URI", "value": "pvc://models/v1"}],
        [{"name": "MODEL_URI", "value": "file:///models/v1"}, {"name": "X", "value": "/usr"}],
        [{"name": "MODEL_URI", "value": ""}],
    ],
)
def test_a_model_location_or_nothing_may_be_replaced(env: list[Json]) -> None:
    _, container = writer(env).target()
    assert container == "app"


@pytest.mark.parametrize(
    "env",
    [
        [{"name": "DATA_PATH", "value": "/usr/share/app/data"}],
        [{"name": "DATA_PATH", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
    ],
)
def test_a_variable_the_container_uses_for_something_else_is_refused(env: list[Json]) -> None:
    with pytest.raises(TargetUnavailableError) as refused:
        writer(env, model_env="DATA_PATH").target()
    assert refused.value.reason == "PolicyViolation"
    assert refused.value.message.startswith("spec.target.modelEnv: ")
    assert "another purpose" in refused.value.message
