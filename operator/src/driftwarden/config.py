"""The operator's own configuration: command-line arguments over environment variables.

Everything a cluster admin sets once per installation (the Helm chart passes it as
environment variables) lives here; everything per model lives in the ModelOptimization.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from driftwarden.policy.admission import DEFAULT_MODEL_ENV_PATTERNS, AdmissionPolicy
from optimizer_job import contract

ENV_PREFIX = "DRIFTWARDEN_"
DEFAULT_JOB_IMAGE = "ghcr.io/driftwarden/optimizer-job:0.1.0"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    # Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    # Port of /metrics (Prometheus); 0 turns the server off.
    metrics_port: int = 9090
    # kopf's liveness probe endpoint; empty turns it off.
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    # Jobs' image and ServiceAccount when spec.job leaves them out. No ServiceAccount
    # means the namespace's default one; the Job gets no API token either way.
    job_image: str = DEFAULT_JOB_IMAGE
    job_service_account: str | None = None
    # Where a Job mounts the claims of pvc:// URIs; the Job resolves URIs against the same
    # root (contract.PVC_MOUNT_ROOT), so change both or neither.
    pvc_mount_root: str = contract.PVC_MOUNT_ROOT
    # The safety resync: every resource is reconciled at least this often (spread over
    # the last quarter of the period), whatever events were missed. Passes are otherwise
    # due when an event or a policy says so (driftwarden.policy.pacing).
    resync_seconds: float = 300.0
    # Whether a new resource starts one run of its pipeline right away (trigger Initial).
    # Off by default: a new resource is monitored first, and runs start on its triggers
    # or spec.runRequest - a run nobody asked for would surprise (and cost GPU time).
    initial_run: bool = False
    # Peering (one active replica): the KopfPeering object's name; replicas must have
    # distinct priorities (the highest one works, the others stand by). By default the
    # priority falls with the start time, so the oldest live replica works and a replica
    # that starts later (a rollout, a restart after a crash) stands by instead of taking
    # over from a healthy one.
    peering_name: str = "driftwarden"
    peering_priority: int = field(default_factory=lambda: start_priority())
    # True: no peering (--standalone); False: peering is required (--peering: without the
    # peering CRD and object kopf stays paused rather than act beside another replica);
    # None: kopf's auto-detection (peer when the peering CRDs exist).
    standalone: bool | None = None
    verbose: bool = False
    # The admin's policy over what a spec may ask for (driftwarden.policy.admission).
    # The default job image and ServiceAccount are always allowed; with nothing listed
    # they are all a spec may name. No Prometheus URL is allowed unless listed.
    allowed_job_images: tuple[str, ...] = ()
    allowed_job_service_accounts: tuple[str, ...] = ()
    allowed_model_env: tuple[str, ...] = DEFAULT_MODEL_ENV_PATTERNS
    allowed_prometheus_urls: tuple[str, ...] = ()
    enforce_policy: bool = True

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def admission_policy(self) -> AdmissionPolicy:
        accounts = self.allowed_job_service_accounts
        if self.job_service_account:
            accounts = (self.job_service_account, *accounts)
        return AdmissionPolicy(
            job_images=tuple(dict.fromkeys((self.job_image, *self.allowed_job_images))),
            job_service_accounts=tuple(dict.fromkeys(accounts)),
            model_env_patterns=self.allowed_model_env,
            prometheus_urls=self.allowed_prometheus_urls,
            enforced=self.enforce_policy,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        config = cls()
        updates: dict[str, object] = {}
        if (value := get("NAMESPACES")) is not None:
            updates["namespaces"] = _namespaces(value)
        for name, attribute in (
            ("METRICS_PORT", "metrics_port"),
            ("PEERING_PRIORITY", "peering_priority"),
        ):
            if (value := get(name)) is not None:
                updates[attribute] = _int(ENV_PREFIX + name, value)
        for name, attribute in (
            ("LIVENESS_ENDPOINT", "liveness_endpoint"),
            ("JOB_IMAGE", "job_image"),
            ("PVC_MOUNT_ROOT", "pvc_mount_root"),
            ("PEERING_NAME", "peering_name"),
        ):
            if (value := get(name)) is not None:
                updates[attribute] = value
        for name, attribute in (
            ("ALLOWED_JOB_IMAGES", "allowed_job_images"),
            ("ALLOWED_JOB_SERVICE_ACCOUNTS", "allowed_job_service_accounts"),
            ("ALLOWED_MODEL_ENV", "allowed_model_env"),
            ("ALLOWED_PROMETHEUS_URLS", "allowed_prometheus_urls"),
        ):
            if (value := source.get(ENV_PREFIX + name)) is not None:
                updates[attribute] = _list(value)
        if (value := get("ENFORCE_POLICY")) is not None:
            updates["enforce_policy"] = _bool(ENV_PREFIX + "ENFORCE_POLICY", value)
        if (value := get("JOB_SERVICE_ACCOUNT")) is not None:
            updates["job_service_account"] = value
        if (value := get("RESYNC_SECONDS")) is not None:
            updates["resync_seconds"] = _float(ENV_PREFIX + "RESYNC_SECONDS", value)
        if (value := get("STANDALONE")) is not None:
            updates["standalone"] = _bool(ENV_PREFIX + "STANDALONE", value)
        if (value := get("INITIAL_RUN")) is not None:
            updates["initial_run"] = _bool(ENV_PREFIX + "INITIAL_RUN", value)
        if (value := get("VERBOSE")) is not None:
            updates["verbose"] = _bool(ENV_PREFIX + "VERBOSE", value)
        return replace(config, **updates).validated()  # type: ignore[arg-type]

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
    ) -> OperatorConfig:
        parser = argparser()
        args = parser.parse_args(argv)
        config = cls.from_env(env)
        updates: dict[str, object] = {}
        if args.all_namespaces:
            updates["namespaces"] = ()
        elif args.namespace:
            updates["namespaces"] = tuple(dict.fromkeys(args.namespace))
        for attribute in (
            "metrics_port",
            "liveness_endpoint",
            "job_image",
            "job_service_account",
            "pvc_mount_root",
            "resync_seconds",
            "peering_name",
            "peering_priority",
        ):
            value = getattr(args, attribute)
            if value is not None:
                updates[attribute] = value
        for attribute in (
            "allowed_job_images",
            "allowed_job_service_accounts",
            "allowed_model_env",
            "allowed_prometheus_urls",
        ):
            values = getattr(args, attribute)
            if values is not None:
                updates[attribute] = tuple(dict.fromkeys(v for v in values if v))
        if args.enforce_policy is not None:
            updates["enforce_policy"] = args.enforce_policy
        if args.standalone:
            updates["standalone"] = True
        elif args.peering:
            updates["standalone"] = False
        if args.initial_run is not None:
            updates["initial_run"] = args.initial_run
        if args.verbose:
            updates["verbose"] = True
        return replace(config, **updates).validated()  # type: ignore[arg-type]

    def validated(self) -> OperatorConfig:
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port must be 0..65535, got {self.metrics_port}")
        if self.resync_seconds <= 0:
            raise ConfigError(f"resync seconds must be > 0, got {self.resync_seconds}")
        if not self.pvc_mount_root.startswith("/"):
            raise ConfigError(f"PVC mount root must be absolute, got {self.pvc_mount_root!r}")
        if not self.job_image:
            raise ConfigError("the default job image must not be empty")
        for url in self.allowed_prometheus_urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"allowed Prometheus URLs must be http(s)://..., got {url!r}")
        return self


# Priorities fall by 1000 per millisecond of start time until this moment (2100-01-01),
# plus a random 0..999 so that replicas started in the same millisecond still differ; the
# result stays below 2**53 (exact in any JSON reader of the peering object).
_PRIORITY_EPOCH_END_MS = 4_102_444_800_000


def start_priority(now: float | None = None) -> int:
    """A peering priority for a replica starting now: older replicas rank higher."""
    ms = int((time.time() if now is None else now) * 1000)
    return max(0, _PRIORITY_EPOCH_END_MS - ms) * 1000 + secrets.randbelow(1000)


def argparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden",
        description="Run the DriftWarden operator. Every option can also be set as an "
        f"environment variable {ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}NAMESPACES=a,b).",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch the whole cluster (default)"
    )
    parser.add_argument("--metrics-port", type=int, help="Prometheus port; 0 turns it off")
    parser.add_argument("--liveness-endpoint", help="e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--job-image", help="the optimizer Job image when spec.job has none")
    parser.add_argument("--job-service-account", help="Jobs' ServiceAccount by default")
    parser.add_argument("--pvc-mount-root", help="where Jobs mount pvc:// claims")
    parser.add_argument(
        "--resync-seconds",
        type=float,
        help="safety resync period (default 300): each resource is reconciled at least this often",
    )
    parser.add_argument("--peering-name", help="KopfPeering object for one active replica")
    parser.add_argument("--peering-priority", type=int, help="highest priority works")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering")
    peering.add_argument(
        "--peering",
        action="store_true",
        help="require kopf peering (several replicas, one works); without the peering "
        "object the operator waits instead of running alone",
    )
    parser.add_argument(
        "--initial-run",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start one run when a resource is created (default: off)",
    )
    policy = parser.add_argument_group(
        "policy",
        "what a ModelOptimization may ask for (repeatable; the environment "
        "variables take comma-separated lists)",
    )
    policy.add_argument(
        "--allowed-job-image",
        dest="allowed_job_images",
        action="append",
        help="an image spec.job.image may name; ending in '/': every image under it "
        "(the default job image is always allowed)",
    )
    policy.add_argument(
        "--allowed-job-service-account",
        dest="allowed_job_service_accounts",
        action="append",
        help="a ServiceAccount spec.job.serviceAccountName may name (besides the default)",
    )
    policy.add_argument(
        "--allowed-model-env",
        dest="allowed_model_env",
        action="append",
        help="a glob of spec.target.modelEnv names (default: *_URI and *_PATH; PATH, "
        "PYTHON*, LD_* and the like are always refused)",
    )
    policy.add_argument(
        "--allowed-prometheus-url",
        dest="allowed_prometheus_urls",
        action="append",
        help="a URL prefix spec.monitoring.prometheus.url may name (default: none)",
    )
    policy.add_argument(
        "--enforce-policy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refuse specs outside the policy (default: on)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _namespaces(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    return () if names == ("*",) else names


def _list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")
