"""`python -m devcluster.node_agent --kubeconfig ... --node-name ...`: run one node."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from devcluster.node_agent.agent import Agent
from devcluster.node_agent.config import parse_args
from devcluster.node_agent.selfcheck import check_container_runtime


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.geteuid() != 0:
        print(
            "the devcluster node agent must run as root: each container gets its own mount "
            "namespace for its volumes, and runs as the Pod's user",
            file=sys.stderr,
        )
        return 2
    problem = check_container_runtime(config.python_bin_dir)
    if problem:
        print(f"the devcluster node agent cannot start containers here: {problem}", file=sys.stderr)
        return 2
    agent = Agent(config)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("received %s", signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
