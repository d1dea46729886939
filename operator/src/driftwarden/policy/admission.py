"""The cluster admin's policy over what a ModelOptimization may ask for (pure).

Whoever may create a ModelOptimization must not get more than they could do themselves:
the operator runs Jobs and patches Deployments with its own rights. So the admin decides,
once per installation (chart values -> operator options, the same values render the
ValidatingAdmissionPolicy's parameters), which job images, job ServiceAccounts, model env
var names and Prometheus URLs a spec may name. A spec outside the policy gets no Job and
no Deployment write, and one message that names the field and the rule.

Matching rules, deliberately simple so the CEL of the admission policy says the same:
- images: an entry ending in "/" allows every image under that path, any other entry
  allows exactly that image; an image containing ".." is never allowed;
- ServiceAccounts: exact names;
- env names: shell-style globs (`*_URI`); names in DENIED_ENV_NAMES / DENIED_ENV_PREFIXES
  are refused whatever the globs say: they change how the container's program loads code;
- Prometheus URLs: an entry allows its scheme://host:port and paths at or below its path
  (segment-wise: http://p:9090/api allows /api/v1, never /apix); userinfo never.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

POLICY_VIOLATION: Final = "PolicyViolation"

DEFAULT_MODEL_ENV_PATTERNS: Final = ("*_URI", "*_PATH")
# Variables that decide which code a process loads or where it looks for programs:
# never a model location, whatever the admin's globs allow.
DENIED_ENV_NAMES: Final = frozenset(
    {
        "PATH",
        "HOME",
        "SHELL",
        "ENV",
        "BASH_ENV",
        "IFS",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONSAFEPATH",
        "PYTHONPYCACHEPREFIX",
        "PYTHONEXECUTABLE",
        "NODE_PATH",
        "NODE_OPTIONS",
        "PERL5LIB",
        "PERL5OPT",
        "RUBYLIB",
        "RUBYOPT",
        "CLASSPATH",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "GCONV_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "KUBECONFIG",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "HF_HOME",
        "TORCH_HOME",
        "TMPDIR",
    }
)
DENIED_ENV_PREFIXES: Final = ("LD_", "DYLD_", "PYTHON", "MALLOC_", "GLIBC_", "KUBERNETES_")
# What a model location looks like: the value a modelEnv variable may already hold.
MODEL_URI_SCHEMES: Final = ("pvc://", "file://", "s3://")


@dataclass(frozen=True)
class AdmissionPolicy:
    # Empty tuples allow nothing but the operator's defaults (see the fields' users).
    job_images: tuple[str, ...]
    job_service_accounts: tuple[str, ...]
    model_env_patterns: tuple[str, ...] = DEFAULT_MODEL_ENV_PATTERNS
    prometheus_urls: tuple[str, ...] = ()
    enforced: bool = True


@dataclass(frozen=True)
class Requested:
    """What a spec asks for, in the terms of the policy (None: not asked)."""

    job_image: str | None = None
    job_service_account: str | None = None
    model_env: str | None = None
    prometheus_url: str | None = None


@dataclass(frozen=True)
class Violation:
    field: str  # e.g. "spec.job.image"
    rule: str  # the rule in words, with the allowed values

    @property
    def message(self) -> str:
        return f"{self.field}: {self.rule}"


def image_allowed(image: str, allowed: Sequence[str]) -> bool:
    if ".." in image or any(c.isspace() for c in image):
        return False
    return any(
        image == entry or (entry.endswith("/") and image.startswith(entry)) for entry in allowed
    )


def env_name_denied(name: str) -> bool:
    upper = name.upper()
    return upper in DENIED_ENV_NAMES or upper.startswith(DENIED_ENV_PREFIXES)


def env_name_allowed(name: str, patterns: Sequence[str]) -> bool:
    if env_name_denied(name):
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _url_parts(url: str) -> tuple[str, str, str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = f"{parts.hostname.lower()}:{port or default}"
    return parts.scheme, host, parts.path.rstrip("/")


def url_allowed(url: str, allowed: Sequence[str]) -> bool:
    wanted = _url_parts(url)
    if wanted is None or "/../" in f"{wanted[2]}/" or "%2e" in url.lower():
        return False
    for entry in allowed:
        base = _url_parts(entry)
        if base is None:
            continue
        if wanted[:2] == base[:2] and (wanted[2] == base[2] or wanted[2].startswith(base[2] + "/")):
            return True
    return False


def _listed(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values) if values else "none"


def violations(requested: Requested, policy: AdmissionPolicy) -> list[Violation]:
    """Every field of the request the policy refuses, in the order of the spec."""
    if not policy.enforced:
        return []
    found: list[Violation] = []
    if requested.job_image is not None and not image_allowed(
        requested.job_image, policy.job_images
    ):
        found.append(
            Violation(
                "spec.job.image",
                f"image {requested.job_image!r} is not allowed by the cluster's DriftWarden "
                f"policy (allowed images: {_listed(policy.job_images)}; an entry ending in "
                "'/' allows the images under it)",
            )
        )
    if (
        requested.job_service_account is not None
        and requested.job_service_account not in policy.job_service_accounts
    ):
        found.append(
            Violation(
                "spec.job.serviceAccountName",
                f"ServiceAccount {requested.job_service_account!r} is not allowed by the "
                "cluster's DriftWarden policy (allowed: "
                f"{_listed(policy.job_service_accounts)})",
            )
        )
    if requested.model_env is not None and not env_name_allowed(
        requested.model_env, policy.model_env_patterns
    ):
        why = (
            "it changes how the container loads code or credentials"
            if env_name_denied(requested.model_env)
            else f"allowed names: {_listed(policy.model_env_patterns)}"
        )
        found.append(
            Violation(
                "spec.target.modelEnv",
                f"env var {requested.model_env!r} is not allowed by the cluster's DriftWarden "
                f"policy ({why})",
            )
        )
    if requested.prometheus_url is not None and not url_allowed(
        requested.prometheus_url, policy.prometheus_urls
    ):
        found.append(
            Violation(
                "spec.monitoring.prometheus.url",
                f"Prometheus URL {requested.prometheus_url!r} is not allowed by the cluster's "
                f"DriftWarden policy (allowed URL prefixes: {_listed(policy.prometheus_urls)})",
            )
        )
    return found


def model_env_in_use_elsewhere(current_value: str | None, managed_by_us: bool) -> bool:
    """Whether the target container already sets the model env var for another purpose:
    a value that is not a model location, which DriftWarden did not write."""
    if current_value is None or managed_by_us or current_value == "":
        return False
    return not current_value.startswith(MODEL_URI_SCHEMES)


def artifact_refusal(
    reported: str | None, artifacts_uri: str, optimization: str, run_id: str
) -> str | None:
    """Why a run's reported artifact may not be recorded as its candidate (None: it may).

    Only `<artifacts.uri>/<optimization>/<run-id>` of that very run is accepted: a Job
    (its image may be the user's) must not point promotion at any other model."""
    if reported is None:
        return None
    expected = f"{artifacts_uri.rstrip('/')}/{optimization}/{run_id}"
    if reported.rstrip("/") == expected:
        return None
    return (
        f"the Job reported artifact {reported!r}, but run {run_id} may only produce "
        f"{expected + '/'!r}; it is not a candidate"
    )
