"""From a Pod's container spec to a LaunchSpec: environment, mounts and identity."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devcluster.node_agent.envvars import (
    EnvError,
    ObjectGetter,
    expand,
    expand_command,
    resolve_env,
)
from devcluster.node_agent.kube import Obj
from devcluster.node_agent.launch_spec import BindMount, LaunchSpec
from devcluster.node_agent.volumes import PodVolumes

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Identity:
    uid: int | None
    gid: int | None
    groups: list[int]
    no_new_privileges: bool


def identity_of(pod: Obj, container: Obj) -> Identity:
    """The user a container runs as; pod-level securityContext is the default."""
    pod_context = pod.get("spec", {}).get("securityContext") or {}
    own = container.get("securityContext") or {}

    def pick(key: str) -> object:
        return own[key] if own.get(key) is not None else pod_context.get(key)

    uid = pick("runAsUser")
    gid = pick("runAsGroup")
    if pick("runAsNonRoot") and (uid is None or uid == 0):
        raise EnvError(
            "container has runAsNonRoot and image will run as root "
            f"(pod: {pod['metadata']['name']!r}, container: {container['name']})"
        )
    groups = [int(g) for g in pod_context.get("supplementalGroups") or []]
    if pod_context.get("fsGroup") is not None:
        groups.append(int(pod_context["fsGroup"]))
    return Identity(
        uid=int(uid) if isinstance(uid, int) else None,
        gid=int(gid) if isinstance(gid, int) else None,
        groups=sorted(set(groups)),
        no_new_privileges=own.get("allowPrivilegeEscalation") is False,
    )


@dataclass(frozen=True)
class LaunchContext:
    """Everything about the node and the Pod that the spec needs beyond the container."""

    python_bin_dir: Path
    apiserver_host: str
    apiserver_port: int
    inherited_env: Mapping[str, str]
    keep_reachable: list[str]
    node_allocatable: dict[str, str]
    host_ip: str
    pod_ip: str
    pod_dir: Path
    gpu_env: Mapping[str, str]
    cluster_dns: str = ""
    cluster_domain: str = "cluster.local"


def service_env(host: str, port: int) -> dict[str, str]:
    """The `kubernetes` Service's variables, pointing straight at the API server."""
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def _volume_mounts(container: Obj, volumes: PodVolumes, env: Mapping[str, str]) -> list[BindMount]:
    mounts: list[BindMount] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.volumes.get(mount["name"])
        if volume is None:
            raise EnvError(f"volumeMount {mount['name']!r} names no volume of the Pod")
        source = volume.path
        sub_path = mount.get("subPath") or expand(mount.get("subPathExpr") or "", env)
        if sub_path:
            if Path(sub_path).is_absolute() or ".." in Path(sub_path).parts:
                raise EnvError(f"subPath {sub_path!r} must be relative without '..'")
            source = volume.path / sub_path
            if not source.exists() and not source.is_symlink():
                source.mkdir(parents=True)
                source.chmod(0o777 if volume.path.stat().st_mode & 0o002 else 0o755)
            real_root = volume.path.resolve()
            if source.resolve() != real_root and real_root not in source.resolve().parents:
                raise EnvError(f"subPath {sub_path!r} leaves its volume")
        mounts.append(
            BindMount(
                source=str(source),
                target=mount["mountPath"],
                read_only=bool(mount.get("readOnly")) or volume.read_only,
            )
        )
    # Parents before children, whatever order the manifest lists them in.
    return sorted(mounts, key=lambda m: len(Path(m.target).parts))


def pod_hostname(pod: Obj) -> str:
    """The kubelet's rule: spec.hostname, else the Pod's name (at most 63 characters)."""
    spec = pod.get("spec") or {}
    name: str = spec.get("hostname") or pod["metadata"]["name"]
    return name[:63].rstrip("-.")


def pod_fqdn(pod: Obj, cluster_domain: str) -> str | None:
    """<hostname>.<subdomain>.<namespace>.svc.<domain> for a Pod with a subdomain."""
    subdomain = (pod.get("spec") or {}).get("subdomain")
    if not subdomain:
        return None
    namespace = pod["metadata"].get("namespace", "default")
    return f"{pod_hostname(pod)}.{subdomain}.{namespace}.svc.{cluster_domain}"


def resolv_conf(pod: Obj, cluster_dns: str, cluster_domain: str) -> str | None:
    """The Pod's /etc/resolv.conf as the kubelet writes it; None: the host's file.

    dnsPolicy ClusterFirst (the default) uses the cluster DNS with the namespace's search
    domains, except for hostNetwork Pods (ClusterFirstWithHostNet opts them in); Default is
    the host's resolver; None takes only dnsConfig. dnsConfig's nameservers and searches are
    appended and its options override.
    """
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    config = spec.get("dnsConfig") or {}
    cluster = bool(cluster_dns) and (
        policy == "ClusterFirstWithHostNet"
        or (policy == "ClusterFirst" and not spec.get("hostNetwork"))
    )
    if policy != "None" and not cluster:
        return None
    namespace = pod["metadata"].get("namespace", "default")
    nameservers: list[str] = [cluster_dns] if cluster else []
    searches = (
        [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        if cluster
        else []
    )
    options: dict[str, str | None] = {"ndots": "5"} if cluster else {}
    nameservers += [str(n) for n in config.get("nameservers") or []]
    searches += [str(s) for s in config.get("searches") or []]
    for option in config.get("options") or []:
        options[str(option["name"])] = option.get("value")
    lines = [f"nameserver {n}" for n in nameservers[:3]]
    if searches:
        lines.append("search " + " ".join(searches[:32]))
    if options:
        lines.append(
            "options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items())
        )
    return "\n".join(lines) + "\n"


def _etc_files(pod: Obj, context: LaunchContext) -> list[BindMount]:
    name = pod_hostname(pod)
    hosts = context.pod_dir / "etc-hosts"
    hostname = context.pod_dir / "etc-hostname"
    resolv = context.pod_dir / "etc-resolv.conf"
    resolv_text = resolv_conf(pod, context.cluster_dns, context.cluster_domain)
    if not hosts.exists():
        hosts.parent.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        fqdn = pod_fqdn(pod, context.cluster_domain)
        if context.pod_ip != "127.0.0.1":
            lines.append(
                f"{context.pod_ip}\t{fqdn}\t{name}" if fqdn else f"{context.pod_ip}\t{name}"
            )
        for alias in pod.get("spec", {}).get("hostAliases") or []:
            lines.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames') or [])}")
        hosts.write_text("\n".join(lines) + "\n")
        hosts.chmod(0o644)
        hostname.write_text(name + "\n")
        hostname.chmod(0o644)
        if resolv_text is not None:
            resolv.write_text(resolv_text)
            resolv.chmod(0o644)
    mounts = [BindMount(str(hosts), "/etc/hosts"), BindMount(str(hostname), "/etc/hostname")]
    if resolv_text is not None:
        mounts.append(BindMount(str(resolv), "/etc/resolv.conf"))
    return mounts


def build_launch_spec(
    pod: Obj,
    container: Obj,
    volumes: PodVolumes,
    context: LaunchContext,
    *,
    get: ObjectGetter,
    termination_log: Path,
    start_error: Path,
    scratch_dir: Path,
) -> LaunchSpec:
    identity = identity_of(pod, container)
    declared = resolve_env(
        pod,
        container,
        service_env(context.apiserver_host, context.apiserver_port),
        get=get,
        pod_ip=context.pod_ip,
        host_ip=context.host_ip,
        node_allocatable=context.node_allocatable,
    )
    as_root = identity.uid in (None, 0)
    image_env = {
        "PATH": f"{context.python_bin_dir}:{SYSTEM_PATH}",
        "HOME": "/root" if as_root else "/",
        "HOSTNAME": pod_hostname(pod),
        # Like `ENV PYTHONUNBUFFERED=1` in a Python image: logs appear as they are written.
        "PYTHONUNBUFFERED": "1",
        # A Pod IP here is routed to lo but sits on no interface, and gloo / NCCL look their
        # host's address up among the interfaces: on this one-host network, point them at lo
        # (a Pod's env overrides it). On a cluster the Pod IP is on the Pod's eth0.
        "GLOO_SOCKET_IFNAME": "lo",
        "NCCL_SOCKET_IFNAME": "lo",
    }
    env = {**image_env, **context.inherited_env, **declared, **context.gpu_env}
    mounts = _volume_mounts(container, volumes, env)
    message_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    mounts.append(BindMount(str(termination_log), message_path))
    host_network = bool(pod.get("spec", {}).get("hostNetwork"))
    if not host_network:
        mounts.extend(_etc_files(pod, context))
    return LaunchSpec(
        argv=expand_command(container, declared),
        env=env,
        working_dir=container.get("workingDir") or "/",
        hostname="" if host_network else pod_hostname(pod),
        mounts=mounts,
        uid=identity.uid,
        gid=identity.gid,
        groups=identity.groups,
        no_new_privileges=identity.no_new_privileges,
        keep_reachable=context.keep_reachable,
        start_error_path=str(start_error),
        scratch_dir=str(scratch_dir),
    )


def interpreter_paths() -> list[str]:
    """Directories the project's Python needs: its prefix, the venv, editable sources."""
    candidates = {Path(sys.base_prefix).resolve(), Path(sys.prefix), Path(sys.prefix).resolve()}
    candidates |= {Path(p).resolve() for p in sys.path if p and Path(p).is_absolute()}
    return sorted(str(p) for p in candidates if p.is_dir())
