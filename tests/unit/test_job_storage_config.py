"""The S3 client's settings from AWS SDK environment names, and redaction of credentials."""

from __future__ import annotations

import pytest

from optimizer_job.storage import _redact, store_config

pytestmark = pytest.mark.unit


def test_endpoint_region_and_credentials_come_from_aws_names() -> None:
    config, options = store_config(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        }
    )
    assert config["endpoint"] == "http://127.0.0.1:9000" and config["region"] == "eu-west-1"
    assert config["access_key_id"] == "AKIAEXAMPLE"
    assert config["secret_access_key"] == "s3cr3t-value"
    assert config["virtual_hosted_style_request"] is False
    assert options["allow_http"] is True and options["timeout"] and options["connect_timeout"]


def test_without_static_credentials_the_client_finds_its_own() -> None:
    config, options = store_config({"AWS_DEFAULT_REGION": "us-west-2"})
    assert "access_key_id" not in config and "endpoint" not in config
    assert config["region"] == "us-west-2" and options["allow_http"] is False


def test_store_errors_never_carry_a_credential() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}
    text = _redact("denied for AKIAEXAMPLE signature s3cr3t-value\nmore", env)
    assert "s3cr3t-value" not in text and "AKIAEXAMPLE" not in text and "\n" not in text
