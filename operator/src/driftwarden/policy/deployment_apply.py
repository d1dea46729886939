"""The server-side-apply configuration DriftWarden sends for a target Deployment.

Why one configuration for everything
------------------------------------
Server-side apply (SSA) records, per field manager, the set of fields that manager applied.
An apply *replaces* that set: a field the manager applied before and leaves out now is
removed from the object when nobody else owns it. Promotion (the model env var) and the
temporary fix (requests/limits) both write as field manager ``driftwarden``, so each apply
must carry DriftWarden's whole intent for the Deployment - a promotion sent alone would
delete the resources a temporary fix had raised (and the reverse). ``DeploymentIntent``
is that whole intent; the services keep it in status and rebuild the configuration from it.

Why it co-owns nothing else
---------------------------
The configuration holds only: the Deployment's identity (apiVersion, kind, name,
namespace), our annotations, and one container of ``spec.template.spec.containers`` with
its ``name`` plus the fields we set (one env var, some requests/limits). ``containers`` is a
list keyed by ``name`` and ``env`` a list keyed by ``name``, so SSA merges our item into the
existing one instead of replacing the list; the key fields carry the same value as the
owner's and are shared, which is never a conflict. Image, command, ports, probes, replicas,
other env vars and other resources are absent, so they stay with their owners (kubectl,
Argo CD, Flux, Helm) and we never change them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FIELD_MANAGER = "driftwarden"
ANNOTATION_PREFIX = "driftwarden.io/"
PROMOTED_RUN_ANNOTATION = "driftwarden.io/promoted-run"
MODEL_URI_ANNOTATION = "driftwarden.io/model-uri"
TEMPORARY_FIX_ANNOTATION = "driftwarden.io/temporary-fix-expires"
# The record of an active temporary fix (policy.fix_record), written with the raise.
FIX_RECORD_ANNOTATION = "driftwarden.io/temporary-fix"


@dataclass(frozen=True)
class TargetRef:
    """``spec.target`` resolved: the container name is known (the first one by default)."""

    namespace: str
    deployment: str
    container: str
    model_env: str = "MODEL_URI"


@dataclass(frozen=True)
class ResourceValues:
    """Some requests and limits of one container, as quantity strings."""

    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.requests and not self.limits

    def union(self, other: ResourceValues) -> ResourceValues:
        """These values, and those of ``other`` for fields these do not set."""
        return ResourceValues(
            requests={**other.requests, **self.requests},
            limits={**other.limits, **self.limits},
        )

    def without(self, other: ResourceValues) -> ResourceValues:
        """These values, less the fields ``other`` names (whatever their values)."""
        return ResourceValues(
            requests={n: v for n, v in self.requests.items() if n not in other.requests},
            limits={n: v for n, v in self.limits.items() if n not in other.limits},
        )

    def to_dict(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


@dataclass(frozen=True)
class DeploymentIntent:
    """Everything DriftWarden wants set on the target, and nothing else."""

    model_uri: str | None = None  # the model env var's value; None: we do not set it
    promoted_run: str | None = None  # the run whose model the env var names
    resources: ResourceValues = ResourceValues()  # requests/limits a temporary fix sets
    fix_expires_at: str | None = None  # RFC 3339, shown on the Deployment while a fix is on
    fix_record: str | None = None  # policy.fix_record.FixRecord.to_annotation() of that fix
    # The Deployment's resourceVersion the apply is conditional on (409 when it changed):
    # set for the raise, so a record that appeared since the read is never raised over.
    resource_version: str | None = None

    def is_empty(self) -> bool:
        return self.model_uri is None and self.resources.is_empty()


def build_apply(target: TargetRef, intent: DeploymentIntent) -> dict[str, Any]:
    """The apply configuration (a Deployment body) to PATCH with
    ``application/apply-patch+yaml``, ``fieldManager=driftwarden`` and ``force=true``."""
    container: dict[str, Any] = {"name": target.container}
    if intent.model_uri is not None:
        container["env"] = [{"name": target.model_env, "value": intent.model_uri}]
    if not intent.resources.is_empty():
        container["resources"] = intent.resources.to_dict()

    metadata: dict[str, Any] = {"name": target.deployment, "namespace": target.namespace}
    if intent.resource_version is not None:
        metadata["resourceVersion"] = intent.resource_version
    annotations = _annotations(intent)
    if annotations:
        metadata["annotations"] = annotations

    body: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata}
    if len(container) > 1:
        body["spec"] = {"template": {"spec": {"containers": [container]}}}
    return body


def _annotations(intent: DeploymentIntent) -> dict[str, str]:
    annotations: dict[str, str] = {}
    if intent.model_uri is not None:
        annotations[MODEL_URI_ANNOTATION] = intent.model_uri
        if intent.promoted_run:
            annotations[PROMOTED_RUN_ANNOTATION] = intent.promoted_run
    if not intent.resources.is_empty():
        if intent.fix_expires_at is not None:
            annotations[TEMPORARY_FIX_ANNOTATION] = intent.fix_expires_at
        if intent.fix_record is not None:
            annotations[FIX_RECORD_ANNOTATION] = intent.fix_record
    return annotations
