"""`python -m driftwarden`: run the operator.

    python -m driftwarden --namespace ml            # one namespace (repeatable)
    python -m driftwarden                           # the whole cluster
    python -m driftwarden --peering                 # one of several replicas (kopf peering)

Options and their DRIFTWARDEN_* environment variables: `python -m driftwarden --help`.
Credentials: in-cluster when running in a Pod, else KUBECONFIG / ~/.kube/config.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import kopf

from driftwarden import handlers, peering
from driftwarden.config import ConfigError, OperatorConfig


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = OperatorConfig.from_args(argv)
    except ConfigError as error:
        print(f"driftwarden: {error}", file=sys.stderr)
        return 2
    kopf.configure(verbose=config.verbose)
    if not config.verbose:
        # The kubernetes client logs every request at DEBUG; keep INFO readable.
        logging.getLogger("kubernetes").setLevel(logging.WARNING)
    # kopf names itself after getpass.getuser() unless POD_ID is set, and that fails for
    # a uid with no passwd entry (65532 in the restricted images): use the Pod's name.
    identity = handlers.own_identity()
    if config.standalone is False:
        # --peering: be in the peering object before kopf decides who works.
        peering.announce_and_settle(config, identity)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    kopf.run(
        registry=registry,
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness_endpoint or None,
        standalone=config.standalone,
        priority=config.peering_priority,
        # --peering: kopf's peering is mandatory (paused until the peering object shows no
        # replica of higher priority), never a silent fall-back to running alone.
        peering_name=config.peering_name if config.standalone is False else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
