"""Starts and stops a real Kubernetes control plane on 127.0.0.1.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local
processes with generated certificates; the process node agent joins as a Node.
All state (certificates, etcd data, logs, kubeconfigs, PIDs) lives in one state
directory, so several clusters can run side by side on free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from devcluster import build, cluster_dns, pki, s3
from devcluster.ports import free_port

if TYPE_CHECKING:
    from devcluster.faultproxy import FaultProxyControl

SERVICE_CIDR = "10.0.0.0/24"
# The apiserver's audit policy of `up(audit_log=True)`: what every ServiceAccount asked for
# (an operator running in a Pod, not the tests' admin), at Metadata level - who, which verb
# on which resource, and the answer - never request or response bodies.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # The controller-manager's controllers (--use-service-account-credentials).
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}
DEFAULT_NODE = "devnode"


RESTARTABLE = ("etcd", "kube-apiserver")


class ComponentFailedError(RuntimeError):
    """A component did not come up; the message names it and its log."""


@dataclass
class State:
    """What `up` started, persisted as state.json so `down` and `status` can find it."""

    state_dir: str
    bin_dir: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    # Cluster DNS: CoreDNS's address (port 53) and where Pod IPs come from ("" = loopback).
    dns_ip: str = ""
    pod_cidr: str = ""
    # The command line of each component as started, so that etcd and kube-apiserver can
    # be restarted in place (Cluster.restart_component: same ports, same data).
    argv: dict[str, list[str]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.state_dir)

    @property
    def kubeconfig(self) -> Path:
        return self.path / "admin.kubeconfig"

    @property
    def api_server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    def log(self, component: str) -> Path:
        return self.path / "logs" / f"{component}.log"

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log (JSON lines), when started with audit_log=True."""
        return self.path / "logs" / "audit.log"

    def save(self) -> None:
        (self.path / "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> State:
        file = state_dir / "state.json"
        if not file.exists():
            raise FileNotFoundError(f"no devcluster state in {state_dir} (is it up?)")
        data = json.loads(file.read_text())
        return cls(**data)


def _kubeconfig(state: State, user: str, pair: pki.Pair) -> Path:
    ca = state.path / "pki" / "ca.crt"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devcluster",
                "cluster": {"server": state.api_server, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)},
            }
        ],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}],
        "current-context": "devcluster",
    }
    path = state.path / ("admin.kubeconfig" if user == "admin" else f"{user}.kubeconfig")
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _start(
    state: State, component: str, argv: Sequence[str], env: dict[str, str] | None = None
) -> None:
    log_path = state.log(component)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A new session: the components outlive `devcluster up` and ignore its Ctrl-C.
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    state.pids[component] = proc.pid
    state.argv[component] = list(argv)
    state.save()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == 0


def _tls_context(state: State) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(state.path / "pki" / "ca.crt"))
    ctx.load_cert_chain(
        str(state.path / "pki" / "admin.crt"), str(state.path / "pki" / "admin.key")
    )
    return ctx


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _wait(state: State, component: str, probe: str | None, timeout: float) -> None:
    """Wait for a component's health endpoint; fail naming it and its log."""
    deadline = time.monotonic() + timeout
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs of kcm/scheduler
    ctx = _tls_context(state) if component == "kube-apiserver" else insecure
    while time.monotonic() < deadline:
        pid = state.pids[component]
        if not _alive(pid):
            raise ComponentFailedError(
                f"{component} exited during start-up; see its log: {state.log(component)}"
            )
        if probe is None or _https_ok(probe, ctx):
            return
        time.sleep(0.3)
    raise ComponentFailedError(
        f"{component} was not healthy after {timeout:.0f} s; see its log: {state.log(component)}"
    )


def _wait_http(state: State, component: str, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(state.pids[component]):
            raise ComponentFailedError(
                f"{component} exited during start-up; see its log: {state.log(component)}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as resp,  # noqa: S310 (local http)
        ):
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise ComponentFailedError(
        f"{component} was not ready after {timeout:.0f} s; see its log: {state.log(component)}"
    )


def _etcd_ready(state: State, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{state.ports['etcd']}/health"
    while time.monotonic() < deadline:
        if not _alive(state.pids["etcd"]):
            raise ComponentFailedError(
                f"etcd exited during start-up; see its log: {state.log('etcd')}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if json.loads(resp.read()).get("health") == "true":
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.2)
    raise ComponentFailedError(
        f"etcd was not healthy after {timeout:.0f} s; log: {state.log('etcd')}"
    )


def node_agent_argv(
    state: State,
    node_name: str,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    pods: int = 110,
    gpus: int = 0,
    labels: Sequence[str] = (),
    taints: Sequence[str] = (),
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "devcluster.node_agent",
        "--kubeconfig",
        str(state.kubeconfig),
        "--state-dir",
        str(state.path / "nodes" / node_name),
        "--node-name",
        node_name,
        "--cpu",
        cpu,
        "--memory",
        memory,
        "--pods",
        str(pods),
        "--gpus",
        str(gpus),
        "--apiserver-host",
        "127.0.0.1",
        "--apiserver-port",
        str(state.ports["kube-apiserver"]),
    ]
    if state.dns_ip:
        argv += ["--cluster-dns", state.dns_ip, "--cluster-domain", cluster_dns.CLUSTER_DOMAIN]
    if state.pod_cidr:
        argv += ["--pod-cidr", state.pod_cidr]
    for label in labels:
        argv += ["--label", label]
    for taint in taints:
        argv += ["--taint", taint]
    return argv


class Cluster:
    """A devcluster in one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()

    @property
    def state(self) -> State:
        return State.load(self.state_dir)

    @property
    def kubeconfig(self) -> Path:
        return self.state.kubeconfig

    @property
    def bin_dir(self) -> Path:
        return Path(self.state.bin_dir)

    @property
    def api_server(self) -> str:
        return self.state.api_server

    def up(
        self,
        *,
        gpus: int = 0,
        node_cpu: str = "4",
        node_memory: str = "16Gi",
        node: bool = True,
        dns: bool = True,
        timeout: float = 120.0,
        audit_log: bool = False,
    ) -> State:
        if (self.state_dir / "state.json").exists():
            existing = State.load(self.state_dir)
            alive = [_alive(p) for p in existing.pids.values()]
            if alive and all(alive):
                return existing
            if any(alive):
                raise ComponentFailedError(
                    f"{self.state_dir} holds a cluster that is partly down: run `devcluster "
                    f"down --state-dir {self.state_dir}` first"
                )
            # Left over from a failed or killed start: nothing runs, start afresh.
            _unmount_below(self.state_dir)
            shutil.rmtree(self.state_dir)
        bins = build.ensure_all()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = State(state_dir=str(self.state_dir), bin_dir=str(bins["kube-apiserver"].parent))
        # The binaries live in per-module cache dirs; link them into one PATH entry.
        (self.state_dir / "bin").mkdir(exist_ok=True)
        for name, path in bins.items():
            (self.state_dir / "bin" / name).symlink_to(path)
        state.bin_dir = str(self.state_dir / "bin")
        for component in (
            "etcd",
            "etcd-peer",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ):
            state.ports[component] = free_port()
        state.save()
        try:
            self._start_control_plane(state, timeout, audit_log=audit_log)
            if dns:
                self._start_dns(state, timeout)
            if node:
                _start(
                    state,
                    f"node-{DEFAULT_NODE}",
                    node_agent_argv(
                        state, DEFAULT_NODE, cpu=node_cpu, memory=node_memory, gpus=gpus
                    ),
                )
                self.wait_node_ready(DEFAULT_NODE, timeout=timeout)
        except BaseException:
            self.down(remove=False)
            raise
        return state

    def _start_control_plane(self, state: State, timeout: float, *, audit_log: bool) -> None:
        pki_dir = state.path / "pki"
        pki_dir.mkdir(exist_ok=True)
        ca = pki.CertificateAuthority(pki_dir)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns_names=pki.APISERVER_DNS_NAMES,
            ips=pki.APISERVER_IPS,
        )
        admin = ca.issue("admin", "admin", organization="system:masters")
        kcm = ca.issue("controller-manager", "system:kube-controller-manager")
        sched = ca.issue("scheduler", "system:kube-scheduler")
        _kubeconfig(state, "coredns", ca.issue("coredns", cluster_dns.USER))
        sa = pki.service_account_keys(pki_dir)
        _kubeconfig(state, "admin", admin)
        kcm_config = _kubeconfig(state, "controller-manager", kcm)
        sched_config = _kubeconfig(state, "scheduler", sched)
        bins = Path(state.bin_dir)
        ports = state.ports

        _start(
            state,
            "etcd",
            [
                str(bins / "etcd"),
                "--name",
                "devcluster",
                "--data-dir",
                str(state.path / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{ports['etcd']}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{ports['etcd']}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{ports['etcd-peer']}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{ports['etcd-peer']}",
                "--initial-cluster",
                f"devcluster=http://127.0.0.1:{ports['etcd-peer']}",
                "--listen-metrics-urls",
                "",
                # A throw-away test cluster: durability is not worth the fsync latency.
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        _etcd_ready(state, timeout)

        _start(
            state,
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                "--etcd-servers",
                f"http://127.0.0.1:{ports['etcd']}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(ports["kube-apiserver"]),
                "--tls-cert-file",
                str(serving.cert),
                "--tls-private-key-file",
                str(serving.key),
                "--client-ca-file",
                str(ca.pair.cert),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(sa.cert),
                "--service-account-signing-key-file",
                str(sa.key),
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--authorization-mode",
                "RBAC",
                "--enable-admission-plugins",
                "PodSecurity",
                # Loopback endpoints are invalid in Endpoints objects; pods reach the
                # apiserver through KUBERNETES_SERVICE_HOST set by the node agent.
                "--endpoint-reconciler-type",
                "none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v",
                "1",
                *self._audit_flags(state, audit_log),
            ],
        )
        _wait(
            state, "kube-apiserver", f"https://127.0.0.1:{ports['kube-apiserver']}/readyz", timeout
        )

        _start(
            state,
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                "--kubeconfig",
                str(kcm_config),
                "--authentication-kubeconfig",
                str(kcm_config),
                "--authorization-kubeconfig",
                str(kcm_config),
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(ports["kube-controller-manager"]),
                "--service-account-private-key-file",
                str(sa.key),
                "--root-ca-file",
                str(ca.pair.cert),
                "--cluster-signing-cert-file",
                str(ca.pair.cert),
                "--cluster-signing-key-file",
                str(ca.pair.key),
                # Each controller acts as its own ServiceAccount: RBAC as in a real cluster.
                "--use-service-account-credentials",
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--leader-elect=false",
                "--profiling=false",
                "--v",
                "1",
            ],
        )
        _start(
            state,
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"),
                "--kubeconfig",
                str(sched_config),
                "--authentication-kubeconfig",
                str(sched_config),
                "--authorization-kubeconfig",
                str(sched_config),
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(ports["kube-scheduler"]),
                "--leader-elect=false",
                "--profiling=false",
                "--v",
                "1",
            ],
        )
        _wait(
            state,
            "kube-controller-manager",
            f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz",
            timeout,
        )
        _wait(
            state, "kube-scheduler", f"https://127.0.0.1:{ports['kube-scheduler']}/healthz", timeout
        )
        self._wait_default_service_account(timeout)

    @staticmethod
    def _audit_flags(state: State, enabled: bool) -> list[str]:
        if not enabled:
            return []
        policy = state.path / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        state.audit_log.parent.mkdir(parents=True, exist_ok=True)
        return [
            "--audit-policy-file",
            str(policy),
            "--audit-log-path",
            str(state.audit_log),
            "--audit-log-format",
            "json",
            # Written as requests complete: a test reads what happened so far.
            "--audit-log-mode",
            "blocking",
        ]

    def _start_dns(self, state: State, timeout: float) -> None:
        """CoreDNS on port 53 of its own loopback address; Pods get it in resolv.conf."""
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager",
            "devcluster",
            "-f",
            "-",
            input=cluster_dns.RBAC,
        )
        if cluster_dns.ensure_pod_route():
            state.pod_cidr = cluster_dns.POD_CIDR
        state.dns_ip = cluster_dns.pick_address(str(state.path))
        state.ports["coredns-health"] = free_port()
        state.ports["coredns-ready"] = free_port()
        conf = state.path / "Corefile"
        conf.write_text(
            cluster_dns.corefile(
                address=state.dns_ip,
                kubeconfig=state.path / "coredns.kubeconfig",
                health_port=state.ports["coredns-health"],
                ready_port=state.ports["coredns-ready"],
            )
        )
        state.save()
        _start(state, "coredns", [str(Path(state.bin_dir) / "coredns"), "-conf", str(conf)])
        _wait_http(
            state, "coredns", f"http://127.0.0.1:{state.ports['coredns-ready']}/ready", timeout
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        state = self.state
        result = subprocess.run(
            [str(Path(state.bin_dir) / "kubectl"), "--kubeconfig", str(state.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    def _wait_default_service_account(self, timeout: float) -> None:
        # Pods are refused until the serviceaccount controller made "default".
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.kubectl(
                    "get", "serviceaccount", "default", "-n", "default", check=False
                ).returncode
                == 0
            ):
                return
            time.sleep(0.5)
        raise ComponentFailedError(
            "kube-controller-manager did not create the default ServiceAccount; see "
            f"{self.state.log('kube-controller-manager')}"
        )

    def start_node(self, node_name: str, **kwargs: object) -> None:
        """Start another node agent (e.g. one that advertises GPUs)."""
        state = self.state
        _start(state, f"node-{node_name}", node_agent_argv(state, node_name, **kwargs))  # type: ignore[arg-type]

    def start_s3(self, timeout: float = 60.0) -> s3.S3Endpoint:
        """Start the cluster's S3 server (versitygw) on 127.0.0.1, or return the running one.

        Pods reach it at the same address: they run in the host's network namespace.
        """
        state = self.state
        running = s3.load_endpoint(state.path)
        pid = state.pids.get(s3.COMPONENT)
        if running is not None and pid is not None and _alive(pid):
            return running
        endpoint, argv, env = s3.prepare(state.path, build.binary("versitygw"), free_port())
        _start(state, s3.COMPONENT, argv, env=env)
        deadline = time.monotonic() + timeout
        while not s3.healthy(endpoint):
            if not _alive(state.pids[s3.COMPONENT]) or time.monotonic() > deadline:
                raise ComponentFailedError(
                    f"S3 server did not come up; see {state.log(s3.COMPONENT)}"
                )
            time.sleep(0.2)
        s3.save_endpoint(state.path, endpoint)
        return endpoint

    def create_bucket(self, name: str) -> None:
        """Create a bucket on the cluster's S3 server (start_s3 first)."""
        s3.create_bucket(self.state.path, name)

    def start_fault_proxy(self, config: dict[str, object] | None = None) -> FaultProxyControl:
        """Start the fault-injecting proxy (devcluster.faultproxy) in front of the apiserver
        as a component of this cluster, with a serving certificate from the cluster's CA.
        Clients that use the returned kubeconfig (the admin's credentials, the proxy's
        address) reach the apiserver through it; ``config`` sets FaultConfig fields."""
        from devcluster.faultproxy import FaultProxyControl

        state = self.state
        if "faultproxy" in state.pids and _alive(state.pids["faultproxy"]):
            self.stop_component("faultproxy")
            state = self.state
        pki_dir = state.path / "pki"
        ca = pki.CertificateAuthority(pki_dir, existing=True)
        ca.issue(
            "faultproxy", "faultproxy", server=True, dns_names=("localhost",), ips=("127.0.0.1",)
        )
        state.ports["faultproxy"] = free_port()
        state.ports["faultproxy-control"] = free_port()
        url = f"https://127.0.0.1:{state.ports['faultproxy']}"
        kubeconfig = yaml.safe_load(state.kubeconfig.read_text())
        kubeconfig["clusters"][0]["cluster"]["server"] = url
        path = state.path / "faultproxy.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        state.save()
        _start(
            state,
            "faultproxy",
            [
                sys.executable,
                "-m",
                "devcluster.faultproxy",
                "--upstream",
                state.api_server,
                "--pki",
                str(pki_dir),
                "--port",
                str(state.ports["faultproxy"]),
                "--control-port",
                str(state.ports["faultproxy-control"]),
                "--config",
                json.dumps(config or {}),
            ],
        )
        control = FaultProxyControl(path, url, state.ports["faultproxy-control"])
        deadline = time.monotonic() + 30
        while True:
            try:
                control.stats()
                return control
            except OSError:
                if not _alive(self.state.pids["faultproxy"]) or time.monotonic() > deadline:
                    raise ComponentFailedError(
                        f"faultproxy did not start; see its log: {state.log('faultproxy')}"
                    ) from None
                time.sleep(0.2)

    def stop_in_place(self, component: str, *, kill: bool = False, grace: float = 30.0) -> None:
        """Stop etcd or kube-apiserver so that start_in_place can bring it back: same
        command line, ports, certificates and data. ``kill``: SIGKILL, as a crash."""
        if component not in RESTARTABLE:
            raise ValueError(f"only {RESTARTABLE} restart in place, not {component}")
        state = self.state
        if component not in state.argv:
            raise ComponentFailedError(f"{component}'s command line was not recorded")
        pid = state.pids.pop(component, None)
        state.save()
        if pid is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            _terminate(pid, grace)

    def start_in_place(self, component: str, timeout: float = 120.0) -> None:
        """Start a component stopped by stop_in_place again and wait until it is healthy
        (etcd: /health; kube-apiserver: /readyz)."""
        if component not in RESTARTABLE:
            raise ValueError(f"only {RESTARTABLE} restart in place, not {component}")
        state = self.state
        if component in state.pids and _alive(state.pids[component]):
            raise ComponentFailedError(f"{component} is running")
        _start(state, component, state.argv[component])
        if component == "etcd":
            _etcd_ready(state, timeout)
        else:
            url = f"https://127.0.0.1:{state.ports['kube-apiserver']}/readyz"
            _wait(state, component, url, timeout)

    def restart_component(
        self, component: str, *, kill: bool = False, down_for: float = 0.0, timeout: float = 120.0
    ) -> None:
        """Restart etcd or kube-apiserver in place; returns once it is healthy again."""
        self.stop_in_place(component, kill=kill)
        time.sleep(down_for)
        self.start_in_place(component, timeout)

    def stop_component(self, component: str, grace: float = 20.0) -> None:
        state = self.state
        pid = state.pids.pop(component, None)
        if pid is not None:
            _terminate(pid, grace)
        state.save()

    def wait_node_ready(self, node_name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
        while time.monotonic() < deadline:
            got = self.kubectl("get", "node", node_name, "-o", f"jsonpath={jsonpath}", check=False)
            if got.returncode == 0 and got.stdout.strip() == "True":
                return
            agent = self.state.pids.get(f"node-{node_name}")
            if agent is not None and not _alive(agent):
                raise ComponentFailedError(
                    f"node agent {node_name} exited; see {self.state.log(f'node-{node_name}')}"
                )
            time.sleep(0.5)
        raise ComponentFailedError(
            f"node {node_name} not Ready after {timeout:.0f} s; see "
            f"{self.state.log(f'node-{node_name}')}"
        )

    def status(self) -> dict[str, bool]:
        state = self.state
        return {component: _alive(pid) for component, pid in state.pids.items()}

    def down(self, *, remove: bool = True) -> None:
        try:
            state = self.state
        except FileNotFoundError:
            return
        # Node agents first (they stop their containers), then the control plane.
        order = sorted(
            state.pids,
            key=lambda c: (not c.startswith("node-"), c == "etcd", c == "kube-apiserver"),
        )
        for component in order:
            _terminate(state.pids[component], grace=30.0 if component.startswith("node-") else 10)
        if remove:
            _unmount_below(self.state_dir)
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            state.pids.clear()
            state.save()


def _terminate(pid: int, grace: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _unmount_below(directory: Path) -> None:
    """Containers bind-mount in private namespaces, but be safe before rm -rf."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(directory)
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
