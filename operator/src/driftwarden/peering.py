"""Announce a replica to its peers before kopf starts, so that replicas started together
never act together.

kopf's peering decides from the keep-alive records in the peering object: a replica with
mandatory peering starts paused and resumes on the first record list that shows no live
peer of higher priority. Two replicas started at the same moment can each read that list
before the other has written its record, and both resume for a moment. So, before
kopf.run, each replica writes its record itself (kopf's format, which kopf's own keep-alive
then overwrites) and waits SETTLE_SECONDS: a replica started within that window is in
the list that either one reads first. Priorities fall with start time
(driftwarden.config.start_priority), so a replica that comes later stands by.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Final

from driftwarden import settings as operator_settings
from driftwarden.config import OperatorConfig
from driftwarden.k8s import ApiError, Kube, load_api_client

_log = logging.getLogger(__name__)

SETTLE_SECONDS: Final = 5.0


def announce(config: OperatorConfig, identity: str, kube: Kube | None = None) -> int:
    """Write this replica's record into every peering object it will use (the cluster's,
    or one per watched namespace); how many it found. API trouble is logged, not fatal:
    kopf's peering still decides, only without the head start."""
    kube = kube or Kube(load_api_client())
    record = {
        "priority": config.peering_priority,
        "lifetime": operator_settings.PEERING_LIFETIME,
        "lastseen": datetime.now(UTC).isoformat(),
    }
    scopes: list[str | None] = list(config.namespaces) if config.namespaces else [None]
    found = 0
    for namespace in scopes:
        try:
            found += kube.announce_peer(namespace, config.peering_name, identity, record)
        except ApiError as error:
            _log.warning("could not announce this replica in %s: %s", namespace, error)
    if found < len(scopes):
        _log.warning(
            "peering object %r missing in %d of %d scopes: kopf waits until it exists",
            config.peering_name,
            len(scopes) - found,
            len(scopes),
        )
    return found


def announce_and_settle(config: OperatorConfig, identity: str) -> None:
    announce(config, identity)
    time.sleep(SETTLE_SECONDS)
