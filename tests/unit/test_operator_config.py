from __future__ import annotations

import logging

import kopf
import pytest

from driftwarden import settings as operator_settings
from driftwarden.config import ConfigError, OperatorConfig

pytestmark = pytest.mark.unit


def test_defaults_watch_the_cluster() -> None:
    config = OperatorConfig.from_args([], env={})
    assert config.clusterwide
    assert config.metrics_port == 9090
    assert config.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert config.pvc_mount_root == "/mnt/driftwarden/pvc"
    assert config.initial_run is False  # monitoring first; runs start on triggers
    assert config.standalone is None  # kopf detects peering


def test_environment_then_arguments() -> None:
    env = {
        "DRIFTWARDEN_NAMESPACES": "ml, serving,ml",
        "DRIFTWARDEN_METRICS_PORT": "9100",
        "DRIFTWARDEN_JOB_IMAGE": "registry/opt:2",
        "DRIFTWARDEN_JOB_SERVICE_ACCOUNT": "optimizer",
        "DRIFTWARDEN_RESYNC_SECONDS": "30",
        "DRIFTWARDEN_INITIAL_RUN": "true",
        "DRIFTWARDEN_STANDALONE": "yes",
    }
    config = OperatorConfig.from_args([], env=env)
    assert config.namespaces == ("ml", "serving")
    assert not config.clusterwide
    assert (config.metrics_port, config.job_image, config.job_service_account) == (
        9100,
        "registry/opt:2",
        "optimizer",
    )
    assert config.resync_seconds == 30.0
    assert config.initial_run is True
    assert config.standalone is True
    overridden = OperatorConfig.from_args(
        ["-n", "a", "-n", "b", "--metrics-port", "0", "--no-initial-run"], env=env
    )
    assert overridden.namespaces == ("a", "b")
    assert overridden.metrics_port == 0
    assert overridden.initial_run is False
    assert OperatorConfig.from_args(["--all-namespaces"], env=env).clusterwide


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DRIFTWARDEN_METRICS_PORT": "http"}, "DRIFTWARDEN_METRICS_PORT must be an integer"),
        ({"DRIFTWARDEN_METRICS_PORT": "70000"}, "metrics port must be 0..65535"),
        ({"DRIFTWARDEN_RESYNC_SECONDS": "0"}, "resync seconds must be > 0"),
        ({"DRIFTWARDEN_STANDALONE": "maybe"}, "DRIFTWARDEN_STANDALONE must be true or false"),
        ({"DRIFTWARDEN_PVC_MOUNT_ROOT": "mnt"}, "PVC mount root must be absolute"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OperatorConfig.from_env(env)


def test_kopf_settings() -> None:
    settings = kopf.OperatorSettings()
    config = OperatorConfig.from_args(["-n", "ml", "--peering-priority", "7"], env={})
    operator_settings.apply(settings, config)
    assert settings.persistence.finalizer == "driftwarden.io/finalizer"
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "driftwarden.io"
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "driftwarden.io"
    assert settings.peering.name == "driftwarden"
    assert settings.peering.priority == 7
    assert settings.posting.level == logging.WARNING
    assert settings.posting.reporting_component == "driftwarden"
    assert settings.watching.server_timeout == 270
    # A watch that goes silent without closing (kopf#1276) is reopened after this long
    # without an event or bookmark; an open one ends client-side after client_timeout.
    assert settings.watching.inactivity_timeout == 70.0
    assert settings.watching.client_timeout == 300.0
    assert settings.watching.connect_timeout == 10.0
    assert settings.peering.lifetime == 60
    selectors = list(settings.watching.label_selectors.items())
    assert [value for _, value in selectors] == ["app.kubernetes.io/managed-by=driftwarden"]


def test_peering_flag_requires_peering_and_excludes_standalone() -> None:
    assert OperatorConfig.from_args(["--peering"], env={}).standalone is False
    assert OperatorConfig.from_args(["--standalone"], env={}).standalone is True
    with pytest.raises(SystemExit):
        OperatorConfig.from_args(["--peering", "--standalone"], env={})


def test_an_older_replica_has_the_higher_peering_priority() -> None:
    from driftwarden.config import start_priority

    earlier = [start_priority(1_800_000_000.000) for _ in range(20)]
    later = [start_priority(1_800_000_000.001) for _ in range(20)]
    assert min(earlier) > max(later)  # one millisecond older always wins
    assert max(earlier) < 2**53  # exact in any JSON reader of the peering object
    # Two replicas started in the same millisecond still differ (almost always).
    assert len(set(earlier)) > 1
