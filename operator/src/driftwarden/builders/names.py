"""Deterministic names and labels of what the operator creates.

A restarted operator must compute the same names as the one before it, so that creating
an object that already exists answers 409 and the operator adopts it instead of starting
a second Job. Nothing here is random and nothing uses generateName.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

GROUP: Final = "driftwarden.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelOptimization"
PLURAL: Final = "modeloptimizations"

FIELD_MANAGER: Final = "driftwarden"
FINALIZER: Final = "driftwarden.io/finalizer"

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "driftwarden"
OPTIMIZATION_LABEL: Final = "driftwarden.io/optimization"
RUN_LABEL: Final = "driftwarden.io/run"
KIND_LABEL: Final = "driftwarden.io/kind"
# The full resource name when it does not fit a label value (>63 characters).
OPTIMIZATION_ANNOTATION: Final = "driftwarden.io/optimization-name"
# Why and as which run a Job was created (JSON), so a Job found after a restart can be
# described in status exactly as if the operator had never stopped.
RUN_PLAN_ANNOTATION: Final = "driftwarden.io/run-plan"
# Set when the operator resumed the suspended Job (its ConfigMap exists by then).
RESUMED_ANNOTATION: Final = "driftwarden.io/resumed-at"
# The task a Job runs, as JSON: the ConfigMap is rendered from it, so a Job adopted
# after a restart gets exactly the task it was created for even if the spec changed.
TASK_ANNOTATION: Final = "driftwarden.io/task"

DNS_LABEL_MAX: Final = 63
_HASH_LEN: Final = 8
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def short_hash(*parts: str, length: int = _HASH_LEN) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return digest[:length]


def run_id_for(owner_uid: str, sequence: int, prefix: str = "r") -> str:
    """The id of the resource's `sequence`-th run (status.runCount + 1), e.g. "r7-3fa9c1".

    The same resource and number always give the same id, so an operator that crashed
    after creating a Job but before counting it in status computes that Job's name again
    and adopts it. The owner's uid in the hash keeps a re-created resource of the same
    name from colliding with its predecessor's artifact directories; the number keeps ids
    readable and ordered. Evaluations use prefix "e".
    """
    if sequence < 1:
        raise ValueError(f"run numbers start at 1, got {sequence}")
    return f"{prefix}{sequence}-{short_hash(owner_uid, prefix, str(sequence), length=6)}"


def dns_label(text: str, limit: int = DNS_LABEL_MAX) -> str:
    """`text` as a DNS-1123 label of at most `limit` characters. Text that is already a
    valid label and short enough is kept as is; otherwise it is cleaned and cut, and a
    hash of the original keeps distinct inputs distinct."""
    if len(text) <= limit and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", text):
        return text
    cleaned = _NOT_DNS.sub("-", text.lower()).strip("-")
    suffix = short_hash(text)
    head = cleaned[: limit - _HASH_LEN - 1].rstrip("-")
    return f"{head}-{suffix}" if head else suffix


def label_value(text: str) -> str:
    """A label value (<=63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    valid = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)?[A-Za-z0-9]", text)
    if len(text) <= DNS_LABEL_MAX and valid:
        return text
    return dns_label(text)


def job_name(optimization: str, run_id: str, kind: str, *, limit: int = DNS_LABEL_MAX) -> str:
    """`<optimization>-<kind>-<run id>`, at most `limit` (63) characters (the Job controller
    puts the name into a label of its Pods). A long resource name is cut and hashed; the kind
    and run id always stay readable at the end."""
    tail = f"-{kind}-{run_id}"
    return dns_label(optimization, limit - len(tail)) + tail


def task_configmap_name(job: str) -> str:
    """The task ConfigMap shares its Job's name (a different kind: no collision)."""
    return job


def claim_volume_name(claim: str) -> str:
    return dns_label(f"pvc-{claim}")


def labels(optimization: str, run_id: str, kind: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        OPTIMIZATION_LABEL: label_value(optimization),
        RUN_LABEL: run_id,
        KIND_LABEL: kind,
    }


def owner_reference(
    *, api_version: str, kind: str, name: str, uid: str, controller: bool = True
) -> dict[str, object]:
    """An ownerReference that makes the garbage collector delete the dependent with its
    owner; blockOwnerDeletion lets a foreground deletion wait for it."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }
