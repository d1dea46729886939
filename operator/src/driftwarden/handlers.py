"""kopf handlers: thin entry points into driftwarden.services.

Every way the operator can learn about a change - the resource created, updated or found
at start-up, an event of one of its Jobs, a claim it waits for being created - wakes the
resource in driftwarden.scheduler, which runs the same level-based reconcile pass on its
own bounded pool of threads. Each pass says when it is due again without an event
(driftwarden.policy.pacing: a cron trigger, a cooldown's end, a fix's expiry, the next
evaluation, else the safety resync minutes apart), so missing an event costs latency,
never correctness, and an idle resource costs nothing between its checks.

Jobs and claims are followed from kopf indexes (services.watches), not LISTed per pass.
Handlers are `def`: they only wake the scheduler (the delete handler reverts and hands
back inline, as before); the kubernetes client blocks, and passes run in the
scheduler's threads, never kopf's.

Peering (several replicas, one works): kopf pauses its own handlers on a replica that sees
a live replica of higher priority, but the passes run in the scheduler, not in kopf. So
the startup handler also follows the peering objects (services.standing, kopf's rules in
policy.standing) and holds the scheduler while this replica stands by: a replica that
worked and then stood by starts no pass at all (one already running finishes; its writes
are conditional), and runs every pass that fell due when it works again.
driftwarden_operator_active says which replica works.

`python -m driftwarden` registers these into its own registry with the configuration from
its arguments; `kopf run -m driftwarden.handlers` gets them in kopf's default registry,
configured from DRIFTWARDEN_* environment variables.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Hashable
from typing import Any, cast

import kopf

from driftwarden import settings as operator_settings
from driftwarden.api.types import now_utc
from driftwarden.builders import names
from driftwarden.config import OperatorConfig
from driftwarden.k8s import ApiError, Kube, load_api_client
from driftwarden.metrics import OperatorMetrics
from driftwarden.runtime import Runtime
from driftwarden.scheduler import Scheduler
from driftwarden.services.reconcile import (
    ReconcileConflictError,
    ReleaseFailedError,
    reconcile,
    release,
)
from driftwarden.services.standing import PeeringFollower
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


def scheduler_of(memo: Any) -> Scheduler:
    scheduler = getattr(memo, "scheduler", None)
    if not isinstance(scheduler, Scheduler):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return scheduler


def scheduled_pass(runtime: Runtime, key: Hashable) -> float | None:
    """One reconcile pass run by the scheduler: the seconds until the next one is due
    (None: the resource is gone). API trouble raises, and the scheduler backs off."""
    namespace, name = cast(tuple[str, str], key)
    try:
        due = reconcile(runtime, namespace, name)
    except ReconcileConflictError as error:
        raise RetryLaterError(str(error)) from error
    except ApiError as error:
        raise RetryLaterError(f"Kubernetes API error, will retry: {error}") from error
    if due is None:
        return None
    return max((due - now_utc()).total_seconds(), 0.0)


class RetryLaterError(Exception):
    """A pass that must be tried again after a backoff."""


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
        runtime = Runtime(
            config=config,
            kube=Kube(api_client),
            metrics=metrics,
            target=KubeTargetApi(api_client),
        )
        memo.runtime = runtime
        following = follows_peering(settings, config)
        scheduler = Scheduler(
            lambda key: scheduled_pass(runtime, key),
            workers=operator_settings.RECONCILE_THREADS,
            active=following is None,  # following peering: idle until the first judgement
        )
        memo.scheduler = scheduler
        metrics.set_active(following is None)
        scheduler.start()
        if following is not None:

            def standing_changed(active: bool, reason: str) -> None:
                scheduler.set_active(active)
                metrics.set_active(active)
                _log.info("%s: %s", "This replica works" if active else "Standing by", reason)

            memo.follower = PeeringFollower(
                Kube(load_api_client()),  # its own connection pool: a watch holds one
                scopes=following,
                peering=settings.peering.name,
                identity=own_identity(),
                priority=settings.peering.priority,
                mandatory=settings.peering.mandatory,
                on_change=standing_changed,
            )
            memo.follower.start()
        _log.info("DriftWarden started; metrics on :%s", config.metrics_port or "(off)")

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: Any, **_: Any) -> None:
        follower = getattr(memo, "follower", None)
        if isinstance(follower, PeeringFollower):
            follower.stop()
        scheduler = getattr(memo, "scheduler", None)
        if isinstance(scheduler, Scheduler):
            scheduler.stop()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same credentials as driftwarden.k8s: in-cluster, else KUBECONFIG."""
        return kopf.login_via_client(**kwargs)

    @kopf.index(
        "batch",
        "v1",
        "jobs",
        labels={names.MANAGED_BY_LABEL: names.MANAGED_BY},
        id="managed_jobs",
        registry=registry,
    )
    def managed_jobs(body: kopf.Body, namespace: str | None, **_: Any) -> Any:
        """Our Jobs by (namespace, owning resource): a pass reads them here, not by LIST."""
        owner = owner_name(body)
        if owner is None or namespace is None:
            return None
        return {(namespace, owner): dict(body)}

    @kopf.index("", "v1", "persistentvolumeclaims", id="claims", registry=registry)
    def claims(namespace: str | None, name: str, **_: Any) -> Any:
        """The names of the claims that exist, by namespace."""
        return {namespace: name} if namespace is not None else None

    @kopf.on.resume(*resource, id="reconcile-on-resume", registry=registry)
    @kopf.on.create(*resource, id="reconcile-on-create", registry=registry)
    @kopf.on.update(*resource, id="reconcile-on-update", registry=registry)
    def changed(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
        runtime = runtime_of(memo)
        # kopf passes each index as the keyword of its id (the same live object each time).
        runtime.jobs.attach(kwargs["managed_jobs"])
        runtime.claims.attach(kwargs["claims"])
        scheduler_of(memo).wake((_namespaced(namespace), name))

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
        if owner is None or namespace is None or not hasattr(memo, "scheduler"):
            return
        scheduler_of(memo).wake((namespace, owner))

    @kopf.on.event("", "v1", "persistentvolumeclaims", id="claim-event", registry=registry)
    def claim_changed(
        type: str | None, namespace: str | None, name: str, memo: Any, **_: Any
    ) -> None:
        if namespace is None or type == "DELETED" or not hasattr(memo, "runtime"):
            return
        for waiting in runtime_of(memo).claims.appeared(namespace, name):
            scheduler_of(memo).wake((namespace, waiting))

    @kopf.on.delete(*resource, id="forget", registry=registry)
    def deleted(namespace: str | None, name: str, memo: Any, retry: int, **_: Any) -> None:
        # Jobs and ConfigMaps go with the resource (ownerReferences); artifacts stay.
        # Until the fix is reverted and the target handed back, kopf keeps the finalizer
        # and calls this again after the delay.
        runtime = runtime_of(memo)
        scheduler_of(memo).forget((_namespaced(namespace), name))
        delay = _backoff(retry)
        try:
            release(runtime, _namespaced(namespace), name, delay)
        except ReleaseFailedError as error:
            raise kopf.TemporaryError(str(error), delay=delay) from error
        runtime.metrics.forget(_namespaced(namespace), name)
        runtime.locks.forget(_namespaced(namespace), name)
        runtime.claims.forget(_namespaced(namespace), name)


def own_identity() -> str:
    """This replica's name in the peering object. kopf takes POD_ID when set (else a name
    with a random part nobody else can know), so set it before kopf starts."""
    return os.environ.setdefault(
        "POD_ID", os.environ.get("POD_NAME") or f"driftwarden@{socket.gethostname()}/{os.getpid()}"
    )


def follows_peering(
    settings: kopf.OperatorSettings, config: OperatorConfig
) -> list[str | None] | None:
    """The peering objects whose records gate the scheduler: kopf's own (the cluster's,
    or one per watched namespace); None when standalone."""
    if settings.peering.standalone:
        return None
    if settings.peering.clusterwide:
        return [None]
    if config.namespaces:
        return list(config.namespaces)
    _log.warning("namespaced peering without known namespaces: passes are not gated")
    return None


def _register_default() -> None:
    """For `kopf run -m driftwarden.handlers`: kopf's default registry, env config."""
    own_identity()
    register(kopf.get_default_registry(), OperatorConfig.from_env())


_register_default()
