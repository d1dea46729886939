"""Print a container's log: `python -m devcluster.node_agent.logs NAMESPACE POD [CONTAINER]`.

The agent's state directory comes from --state-dir, or else from the annotation the agent puts
on its Node (found through the Pod's spec.nodeName with --kubeconfig or $KUBECONFIG).
`kubectl logs` works too, through the agent's log endpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from devcluster.node_agent.log_files import find_log, is_running, tail_bytes


def _state_dir_from_cluster(kubeconfig: Path, namespace: str, pod: str) -> Path:
    from devcluster.node_agent.kube import Kube, path_quote
    from devcluster.node_agent.node import STATE_DIR_ANNOTATION

    kube = Kube(kubeconfig)
    found = kube.get(f"/api/v1/namespaces/{path_quote(namespace)}/pods/{path_quote(pod)}")
    node_name = found.get("spec", {}).get("nodeName")
    if not node_name:
        raise SystemExit(f"pod {namespace}/{pod} is not bound to a node yet")
    node = kube.get(f"/api/v1/nodes/{path_quote(node_name)}")
    annotation = (node["metadata"].get("annotations") or {}).get(STATE_DIR_ANNOTATION)
    if not annotation:
        raise SystemExit(f"node {node_name} is not run by a devcluster node agent")
    return Path(annotation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.node_agent.logs")
    parser.add_argument("namespace")
    parser.add_argument("pod")
    parser.add_argument("container", nargs="?")
    parser.add_argument("--state-dir", type=Path, help="the agent's --state-dir")
    parser.add_argument("--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--tail", type=int, default=None, help="only the last N lines")
    parser.add_argument("-f", "--follow", action="store_true")
    args = parser.parse_args(argv)
    state_dir = args.state_dir
    if state_dir is None:
        if not args.kubeconfig:
            parser.error("give --state-dir, or --kubeconfig / $KUBECONFIG to ask the cluster")
        state_dir = _state_dir_from_cluster(Path(args.kubeconfig), args.namespace, args.pod)
    path = find_log(state_dir, args.namespace, args.pod, args.container)
    if path is None:
        print(f"no log for {args.namespace}/{args.pod} under {state_dir}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    whole = path.read_bytes()
    out.write(tail_bytes(whole, args.tail, None))
    out.flush()
    offset = len(whole)
    while args.follow:
        with path.open("rb") as handle:
            handle.seek(offset)
            more = handle.read()
        if more:
            offset += len(more)
            out.write(more)
            out.flush()
        elif not is_running(state_dir, path):
            break
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
