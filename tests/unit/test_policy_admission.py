"""The admin's policy over what a spec may ask for (driftwarden.policy.admission)."""

from __future__ import annotations

import pytest

from driftwarden.config import ConfigError, OperatorConfig
from driftwarden.policy.admission import (
    AdmissionPolicy,
    Requested,
    artifact_refusal,
    env_name_allowed,
    image_allowed,
    model_env_in_use_elsewhere,
    url_allowed,
    violations,
)

pytestmark = pytest.mark.unit

POLICY = AdmissionPolicy(
    job_images=("ghcr.io/driftwarden/optimizer-job:0.1.0", "registry.example/ml/"),
    job_service_accounts=("driftwarden-job",),
    prometheus_urls=("http://prometheus.monitoring:9090",),
)


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("ghcr.io/driftwarden/optimizer-job:0.1.0", True),
        ("ghcr.io/driftwarden/optimizer-job:0.1.0-evil", False),  # exact entries are exact
        ("ghcr.io/driftwarden/optimizer-job:latest", False),
        ("registry.example/ml/trainer:3", True),
        ("registry.example/ml/team/trainer@sha256:" + "a" * 64, True),
        ("registry.example/mlx/trainer:3", False),
        ("registry.example/ml/../evil/x:1", False),
        ("docker.io/library/python:3", False),
    ],
)
def test_images(image: str, allowed: bool) -> None:
    assert image_allowed(image, POLICY.job_images) is allowed


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("MODEL_URI", True),
        ("CLASSIFIER_MODEL_PATH", True),
        ("PATH", False),
        ("PYTHONPATH", False),
        ("LD_PRELOAD", False),
        ("LD_LIBRARY_PATH", False),  # matches *_PATH, refused anyway
        ("DYLD_INSERT_LIBRARIES", False),
        ("NODE_PATH", False),
        ("SSL_CERT_FILE", False),
        ("LOG_LEVEL", False),
        ("model_uri", False),  # globs are case-sensitive like env names
    ],
)
def test_model_env_names(name: str, allowed: bool) -> None:
    assert env_name_allowed(name, ("*_URI", "*_PATH")) is allowed


def test_denied_env_names_stay_denied_whatever_the_globs() -> None:
    assert not env_name_allowed("PYTHONPATH", ("*",))
    assert not env_name_allowed("LD_PRELOAD", ("LD_*",))
    assert env_name_allowed("LOG_LEVEL", ("*",))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://prometheus.monitoring:9090", True),
        ("http://prometheus.monitoring:9090/", True),
        ("http://Prometheus.monitoring:9090/api/v1", True),
        ("http://prometheus.monitoring:9090.evil.example/", False),
        ("http://prometheus.monitoring:9091", False),
        ("https://prometheus.monitoring:9090", False),
        ("http://user:pw@prometheus.monitoring:9090", False),
        ("http://prometheus.monitoring", False),
        ("http://169.254.169.254/latest/meta-data", False),
    ],
)
def test_prometheus_urls(url: str, allowed: bool) -> None:
    assert url_allowed(url, POLICY.prometheus_urls) is allowed


def test_paths_are_allowed_segment_wise() -> None:
    allowed = ("http://gateway:80/prometheus/team-a",)
    assert url_allowed("http://gateway/prometheus/team-a/api", allowed)
    assert not url_allowed("http://gateway/prometheus/team-ab", allowed)
    assert not url_allowed("http://gateway/prometheus/team-a/../team-b", allowed)
    assert not url_allowed("http://gateway/prometheus/team-a/%2e%2e/team-b", allowed)


def test_violations_name_the_field_and_the_rule() -> None:
    found = violations(
        Requested(
            job_image="evil:1",
            job_service_account="admin",
            model_env="LD_PRELOAD",
            prometheus_url="http://10.0.0.1/",
        ),
        POLICY,
    )
    assert [v.field for v in found] == [
        "spec.job.image",
        "spec.job.serviceAccountName",
        "spec.target.modelEnv",
        "spec.monitoring.prometheus.url",
    ]
    assert "registry.example/ml/" in found[0].message
    assert "'driftwarden-job'" in found[1].message
    assert "loads code" in found[2].message
    assert found[3].message.startswith("spec.monitoring.prometheus.url: ")
    assert violations(Requested(), POLICY) == []
    off = AdmissionPolicy(job_images=(), job_service_accounts=(), enforced=False)
    assert violations(Requested(job_image="evil:1"), off) == []


def test_a_model_env_the_container_uses_for_something_else() -> None:
    assert not model_env_in_use_elsewhere(None, managed_by_us=False)
    assert not model_env_in_use_elsewhere("pvc://models/v1", managed_by_us=False)
    assert model_env_in_use_elsewhere("/usr/lib/python3/site-packages", managed_by_us=False)
    assert not model_env_in_use_elsewhere("whatever", managed_by_us=True)


def test_artifact_containment() -> None:
    ok = artifact_refusal(
        "pvc://models/runs/digits/r1-abc/", "pvc://models/runs/", "digits", "r1-abc"
    )
    assert ok is None
    assert artifact_refusal(None, "pvc://m/runs", "digits", "r1") is None
    refused = artifact_refusal("pvc://m/prod", "pvc://m/runs", "digits", "r1")
    assert refused is not None and "'pvc://m/runs/digits/r1/'" in refused


def test_the_operator_config_carries_the_policy() -> None:
    config = OperatorConfig.from_args(
        [
            "--job-image=ghcr.io/x/job:1",
            "--job-service-account=job-sa",
            "--allowed-job-image=registry.example/ml/",
            "--allowed-prometheus-url=http://prom:9090",
            "--allowed-model-env=*_URI",
        ],
        env={},
    )
    policy = config.admission_policy
    assert policy.job_images == ("ghcr.io/x/job:1", "registry.example/ml/")
    assert policy.job_service_accounts == ("job-sa",)
    assert policy.model_env_patterns == ("*_URI",)
    assert policy.prometheus_urls == ("http://prom:9090",)
    from_env = OperatorConfig.from_env(
        {
            "DRIFTWARDEN_ALLOWED_JOB_SERVICE_ACCOUNTS": "a, b",
            "DRIFTWARDEN_ALLOWED_PROMETHEUS_URLS": "",
            "DRIFTWARDEN_ENFORCE_POLICY": "false",
        }
    )
    assert from_env.admission_policy.job_service_accounts == ("a", "b")
    assert from_env.admission_policy.prometheus_urls == ()
    assert not from_env.admission_policy.enforced
    with pytest.raises(ConfigError, match="http"):
        OperatorConfig.from_args(["--allowed-prometheus-url=prom:9090"], env={})
