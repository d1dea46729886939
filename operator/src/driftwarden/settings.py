"""kopf's settings for DriftWarden, applied once by the startup handler.

- kopf's bookkeeping (handler progress, the last handled spec) goes into annotations
  under our own prefix, never into status: status is the user's view of the model.
- Our finalizer name, so `kubectl get mo -o yaml` says who holds a deletion.
- Only Jobs labelled managed-by=driftwarden are watched (a server-side selector).
- Watches end server-side every few minutes and reconnect; a stream that goes silent
  without closing (a dropped connection, a proxy that stops forwarding: kopf#1276) is
  given up after WATCH_INACTIVITY_TIMEOUT seconds without an event or a bookmark (the
  apiserver sends one about every minute) and opened again.
- Peering: several replicas may run (the chart runs two); only the one with the highest
  priority handles resources, the others stand by and take over when its keep-alive
  expires (PEERING_LIFETIME) or at once when it exits cleanly. --peering makes peering
  mandatory; --standalone turns it off; neither: kopf's auto-detection (peer when the
  peering CRDs exist). Correctness does not depend on peering: Jobs have deterministic
  names, status writes are conditional on resourceVersion and a temporary fix is
  recorded on the Deployment in the same apply that raises it.
- kopf posts Kubernetes events only for warnings and errors (a handler that crashed);
  the operator posts its own events, in words, for what happened to a resource.
"""

from __future__ import annotations

import logging
import socket
from typing import Final

import kopf

from driftwarden.builders import names
from driftwarden.config import OperatorConfig

ANNOTATION_PREFIX: Final = names.GROUP
LAST_HANDLED_KEY: Final = "last-handled-configuration"
WATCH_SERVER_TIMEOUT: Final = 270  # whole seconds: the apiserver parses an integer
WATCH_CLIENT_TIMEOUT: Final = 300.0
CONNECT_TIMEOUT: Final = 10.0
WATCH_INACTIVITY_TIMEOUT: Final = 70.0  # kopf's default, set on purpose
# How long a replica's keep-alive counts (kopf's default): a replica killed without a
# goodbye is replaced by a standby within this many seconds of its last keep-alive.
PEERING_LIFETIME: Final = 60
# Sync handlers run in this many threads: one reconcile per resource at a time, so this
# bounds how many resources progress in parallel, not correctness.
HANDLER_THREADS: Final = 8
# Reconcile passes run in the scheduler's own threads (driftwarden.scheduler): at most this
# many at once, each resource at most once.
RECONCILE_THREADS: Final = 8


def apply(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key=LAST_HANDLED_KEY
    )
    settings.persistence.finalizer = names.FINALIZER

    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT
    # Only our own Jobs are watched: the apiserver filters, not the operator.
    settings.watching.label_selectors["batch", "jobs"] = (
        f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY}"
    )

    if config.namespaces and not config.clusterwide:
        # Exact namespaces need no cluster-wide namespace scan (which would be refused
        # by the namespaced RBAC the chart grants in that mode).
        settings.scanning.disabled = True

    settings.peering.name = config.peering_name
    settings.peering.priority = config.peering_priority
    # settings.peering.clusterwide follows kopf's own --namespace/--all-namespaces.
    settings.peering.stealth = True  # no log line per keep-alive
    settings.peering.lifetime = PEERING_LIFETIME
    if config.standalone is not None:
        settings.peering.standalone = config.standalone

    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = names.FIELD_MANAGER
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "driftwarden-"

    settings.execution.max_workers = HANDLER_THREADS
