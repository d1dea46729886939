from __future__ import annotations

import re

import pytest

from driftwarden.builders import names

pytestmark = pytest.mark.unit

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_run_id_is_deterministic_per_owner_and_number() -> None:
    first = names.run_id_for("uid-1", 1)
    assert first == names.run_id_for("uid-1", 1)
    assert first.startswith("r1-")
    assert first != names.run_id_for("uid-1", 2)
    # A re-created resource of the same name must not collide with old artifact dirs.
    assert first != names.run_id_for("uid-2", 1)
    assert names.run_id_for("uid-1", 1, prefix="e") != first
    assert DNS_LABEL.match(first)
    with pytest.raises(ValueError, match="start at 1"):
        names.run_id_for("uid-1", 0)


def test_short_names_are_kept() -> None:
    assert names.job_name("digits", "r1-abc123", "optimize") == "digits-optimize-r1-abc123"
    assert names.label_value("digits") == "digits"


@pytest.mark.parametrize("length", [40, 63, 64, 120, 253])
def test_long_names_are_cut_to_63_and_stay_distinct(length: int) -> None:
    base = ("a" * (length - 1))[: length - 1]
    one = names.job_name(base + "x", "r12-abcdef", "evaluate")
    two = names.job_name(base + "y", "r12-abcdef", "evaluate")
    assert len(one) <= 63
    assert DNS_LABEL.match(one)
    assert one.endswith("-evaluate-r12-abcdef")
    assert one != two


def test_dotted_resource_names_become_dns_labels() -> None:
    name = "model.v2.team-a"  # a valid custom resource name, not a valid DNS label
    job = names.job_name(name, "r1-abcdef", "optimize")
    assert DNS_LABEL.match(job)
    assert job.startswith("model-v2-team-a-")
    value = names.label_value(name)
    assert value == name  # dots are fine in label values


def test_label_values_of_long_names_are_valid_and_distinct() -> None:
    a = names.label_value("m" * 100 + "a")
    b = names.label_value("m" * 100 + "b")
    assert LABEL_VALUE.match(a) and len(a) <= 63
    assert a != b


def test_claim_volume_names_are_dns_labels() -> None:
    assert names.claim_volume_name("models") == "pvc-models"
    long = names.claim_volume_name("c" * 250)
    assert DNS_LABEL.match(long) and len(long) <= 63


def test_labels_carry_the_contract_keys() -> None:
    labels = names.labels("digits", "r1-abcdef", "optimize")
    assert labels == {
        "app.kubernetes.io/managed-by": "driftwarden",
        "driftwarden.io/optimization": "digits",
        "driftwarden.io/run": "r1-abcdef",
        "driftwarden.io/kind": "optimize",
    }
