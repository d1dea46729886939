"""kopf handlers: thin entry points into driftwarden.services.

Every way the operator can learn about a change — the resource created, updated or found
at start-up, a resync tick, an event of one of its Jobs — runs the same level-based
reconcile pass, so missing any one of them costs latency, never correctness.

Handlers are `def`, not `async def`: the kubernetes client blocks, and kopf runs sync
handlers in its thread pool.

`python -m driftwarden` registers these into its own registry with the configuration from
its arguments; `kopf run -m driftwarden.handlers` gets them in kopf's default registry,
configured from DRIFTWARDEN_* environment variables.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from driftwarden import settings as operator_settings
from driftwarden.builders import names
from driftwarden.config import OperatorConfig
from driftwarden.k8s import ApiError, Kube, load_api_client
from driftwarden.metrics import OperatorMetrics
from driftwarden.runtime import Runtime
from driftwarden.services.reconcile import (
    ReconcileConflictError,
    ReleaseFailedError,
    reconcile,
    release,
)
from driftwarden.services.target import KubeTargetApi

_log = logging.getLogger(__name__)

# Retry delays after an API error (seconds); kopf counts the attempts.
_API_ERROR_BACKOFF = (2, 5, 10, 30, 60)


def _backoff(retry: int) -> float:
    return float(_API_ERROR_BACKOFF[min(retry, len(_API_ERROR_BACKOFF) - 1)])


def runtime_of(memo: Any) -> Runtime:
    runtime = getattr(memo, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return runtime


def reconcile_resource(memo: Any, namespace: str, name: str, retry: int = 0) -> None:
    """Reconcile, turning API trouble into a kopf retry with backoff (never a crash)."""
    try:
        reconcile(runtime_of(memo), namespace, name)
    except ReconcileConflictError as error:
        raise kopf.TemporaryError(str(error), delay=_backoff(retry)) from error
    except ApiError as error:
        raise kopf.TemporaryError(
            f"Kubernetes API error, will retry: {error}", delay=_backoff(retry)
        ) from error


def owner_name(body: Any) -> str | None:
    """The ModelOptimization that owns a Job, from the Job's ownerReferences."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == names.KIND and ref.get("apiVersion") == names.API_VERSION:
            return str(ref["name"])
    return None


def _namespaced(namespace: str | None) -> str:
    if namespace is None:  # the CRD is namespaced: kopf always passes one
        raise kopf.PermanentError("a ModelOptimization without a namespace")
    return namespace


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    resource = (names.GROUP, names.VERSION, names.PLURAL)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        """The one place where kopf is configured and the runtime is built."""
        operator_settings.apply(settings, config)
        metrics = OperatorMetrics()
        if config.metrics_port:
            metrics.serve(config.metrics_port)
        api_client = load_api_client()
        memo.runtime = Runtime(
            config=config,
            kube=Kube(api_client),
            metrics=metrics,
            target=KubeTargetApi(api_client),
        )
        _log.info("DriftWarden started; metrics on :%s", config.metrics_port or "(off)")

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same credentials as driftwarden.k8s: in-cluster, else KUBECONFIG."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(*resource, id="reconcile-on-resume", registry=registry)
    @kopf.on.create(*resource, id="reconcile-on-create", registry=registry)
    @kopf.on.update(*resource, id="reconcile-on-update", registry=registry)
    def changed(namespace: str | None, name: str, memo: Any, retry: int, **_: Any) -> None:
        reconcile_resource(memo, _namespaced(namespace), name, retry)

    @kopf.timer(
        *resource,
        id="resync",
        interval=config.resync_seconds,
        initial_delay=config.resync_seconds,
        registry=registry,
    )
    def resync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        reconcile_resource(memo, _namespaced(namespace), name)

    @kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={names.MANAGED_BY_LABEL: names.MANAGED_BY},
        id="job-event",
        registry=registry,
    )
    def job_changed(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
        owner = owner_name(body)
        if owner is None or namespace is None:
            return
        try:
            reconcile_resource(memo, namespace, owner)
        except kopf.TemporaryError as error:
            # Event handlers are not retried; the resync timer catches up.
            _log.info("job event for %s/%s deferred to the resync: %s", namespace, owner, error)

    @kopf.on.delete(*resource, id="forget", registry=registry)
    def deleted(namespace: str | None, name: str, memo: Any, retry: int, **_: Any) -> None:
        # Jobs and ConfigMaps go with the resource (ownerReferences); artifacts stay.
        # Until the fix is reverted and the target handed back, kopf keeps the finalizer
        # and calls this again after the delay.
        runtime = runtime_of(memo)
        delay = _backoff(retry)
        try:
            release(runtime, _namespaced(namespace), name, delay)
        except ReleaseFailedError as error:
            raise kopf.TemporaryError(str(error), delay=delay) from error
        runtime.metrics.forget(_namespaced(namespace), name)
        runtime.locks.forget(_namespaced(namespace), name)


def _register_default() -> None:
    """For `kopf run -m driftwarden.handlers`: kopf's default registry, env config."""
    register(kopf.get_default_registry(), OperatorConfig.from_env())


_register_default()
