"""A Pod's volumes as directories on this machine.

Each volume becomes one host directory (or file) that `container_init` bind-mounts at the
container's mountPath. Data from the API (ConfigMaps, Secrets, service account tokens, the
downward API) is written under the Pod's directory and refreshed while the Pod runs; claims
resolve through their bound PersistentVolume to a host path.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from devcluster.node_agent.downward import DownwardError, field_value, resource_value
from devcluster.node_agent.kube import ApiError, Kube, Obj, path_quote

DEFAULT_FILE_MODE = 0o644
TOKEN_DEFAULT_EXPIRATION = 3600
# Rotate a projected token once 80 % of its lifetime has passed, as the kubelet does.
TOKEN_ROTATE_FRACTION = 0.8


class VolumeError(Exception):
    """A volume cannot be set up yet; the message says why (shown as the waiting reason)."""

    def __init__(self, message: str, *, reason: str = "ContainerCreating") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class HostVolume:
    path: Path
    read_only: bool = False


@dataclass
class _Token:
    token: str
    fetched_at: float
    lifetime: float


@dataclass
class PodVolumes:
    """The host side of one Pod's volumes."""

    root: Path
    volumes: dict[str, HostVolume] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)


def _write_files(target: Path, files: dict[str, tuple[bytes, int]], fs_group: int | None) -> None:
    """Make `target` hold exactly `files` (path -> content, mode), each file replaced atomically."""
    target.mkdir(parents=True, exist_ok=True)
    for relative, (content, mode) in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if fs_group is not None:
            mode |= 0o440
        if _unchanged(path, content, mode, fs_group):
            continue
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_bytes(content)
        if fs_group is not None:
            os.chown(staging, -1, fs_group)
        staging.chmod(mode)
        staging.replace(path)
    wanted = {target / relative for relative in files}
    for path in sorted(target.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _unchanged(path: Path, content: bytes, mode: int, fs_group: int | None) -> bool:
    try:
        info = path.stat()
        return (
            info.st_mode & 0o7777 == mode
            and (fs_group is None or info.st_gid == fs_group)
            and path.read_bytes() == content
        )
    except OSError:
        return False


def _check_relative(path: str) -> str:
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts:
        raise VolumeError(f"volume item path {path!r} must be relative without '..'")
    return path


def apply_fs_group(root: Path, gid: int, *, on_root_mismatch: bool) -> None:
    """Give the Pod's fsGroup read-write access, as the kubelet does for writable volumes."""
    info = root.stat()
    if on_root_mismatch and info.st_gid == gid and info.st_mode & 0o2070 == 0o2070:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            os.chown(path, -1, gid)
            mode = path.stat().st_mode
            extra = 0o2070 if path.is_dir() else 0o060
            path.chmod((mode | extra) & 0o7777)
    os.chown(root, -1, gid)
    root.chmod((root.stat().st_mode | 0o2070) & 0o7777)


class VolumeManager:
    """Sets up and refreshes the volumes of Pods on this node."""

    def __init__(
        self, kube: Kube, pods_dir: Path, node_allocatable: dict[str, str], host_ip: str
    ) -> None:
        self._kube = kube
        self._pods_dir = pods_dir
        self._allocatable = node_allocatable
        self._host_ip = host_ip

    def pod_dir(self, uid: str) -> Path:
        return self._pods_dir / uid

    def setup(self, pod: Obj, pod_ip: str, current: PodVolumes | None) -> PodVolumes:
        """Create (or refresh) every volume of the Pod; raises VolumeError while one cannot be."""
        uid = pod["metadata"]["uid"]
        state = current or PodVolumes(root=self.pod_dir(uid) / "volumes")
        security = pod.get("spec", {}).get("securityContext") or {}
        fs_group = security.get("fsGroup")
        on_root_mismatch = security.get("fsGroupChangePolicy") == "OnRootMismatch"
        for volume in pod.get("spec", {}).get("volumes") or []:
            name = volume["name"]
            try:
                state.volumes[name] = self._setup_one(
                    pod, pod_ip, volume, state, fs_group, on_root_mismatch
                )
            except DownwardError as error:
                raise VolumeError(f"volume {name}: {error}") from error
            except ApiError as error:
                raise VolumeError(f"volume {name}: {error}") from error
        return state

    def remove(self, uid: str) -> None:
        shutil.rmtree(self.pod_dir(uid), ignore_errors=True)

    # --- one volume -----------------------------------------------------------------------

    def _setup_one(
        self,
        pod: Obj,
        pod_ip: str,
        volume: Obj,
        state: PodVolumes,
        fs_group: int | None,
        on_root_mismatch: bool,
    ) -> HostVolume:
        name = volume["name"]
        target = state.root / name
        namespace = pod["metadata"]["namespace"]
        if "emptyDir" in volume:
            if not target.exists():
                target.mkdir(parents=True)
                target.chmod(0o777)  # the kubelet's emptyDir is world-writable
                if fs_group is not None:
                    apply_fs_group(target, fs_group, on_root_mismatch=False)
            return HostVolume(target)
        if "hostPath" in volume:
            return self._host_path(volume["hostPath"])
        if "persistentVolumeClaim" in volume:
            source = volume["persistentVolumeClaim"]
            return self._claim(
                namespace,
                source["claimName"],
                bool(source.get("readOnly")),
                fs_group,
                on_root_mismatch,
            )
        if "ephemeral" in volume:
            claim = f"{pod['metadata']['name']}-{name}"
            return self._claim(namespace, claim, False, fs_group, on_root_mismatch)
        if "configMap" in volume or "secret" in volume:
            files = self._object_files(namespace, volume)
        elif "downwardAPI" in volume:
            source = volume["downwardAPI"]
            files = self._downward_files(
                pod, pod_ip, source.get("items") or [], source.get("defaultMode", DEFAULT_FILE_MODE)
            )
        elif "projected" in volume:
            files = self._projected_files(pod, pod_ip, volume, state)
        else:
            kinds = sorted(set(volume) - {"name"})
            raise VolumeError(
                f"volume {name}: type {', '.join(kinds)} is not supported by the devcluster agent",
                reason="CreateContainerConfigError",
            )
        _write_files(target, files, fs_group)
        return HostVolume(target, read_only=True)

    def _host_path(self, source: Obj) -> HostVolume:
        path = Path(source["path"])
        kind = source.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        elif kind == "Directory" and not path.is_dir():
            raise VolumeError(f"hostPath {path} is not a directory")
        elif kind == "File" and not path.is_file():
            raise VolumeError(f"hostPath {path} is not a file")
        elif kind and kind not in ("Directory", "File") and not path.exists():
            raise VolumeError(f"hostPath {path} does not exist")
        elif not path.exists():
            path.mkdir(parents=True)  # the runtime creates a missing path as a directory
        return HostVolume(path)

    def _claim(
        self,
        namespace: str,
        claim: str,
        read_only: bool,
        fs_group: int | None,
        on_root_mismatch: bool,
    ) -> HostVolume:
        try:
            pvc = self._kube.get(
                f"/api/v1/namespaces/{path_quote(namespace)}/persistentvolumeclaims/{path_quote(claim)}"
            )
        except ApiError as error:
            if error.status == 404:
                raise VolumeError(f'persistentvolumeclaim "{claim}" not found') from error
            raise
        volume_name = pvc.get("spec", {}).get("volumeName")
        if pvc.get("status", {}).get("phase") != "Bound" or not volume_name:
            raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound yet')
        pv = self._kube.get(f"/api/v1/persistentvolumes/{path_quote(volume_name)}")
        pv_spec = pv.get("spec", {})
        source = pv_spec.get("hostPath") or pv_spec.get("local")
        if not source:
            raise VolumeError(
                f"persistentvolume {volume_name} is neither hostPath nor local",
                reason="CreateContainerConfigError",
            )
        path = Path(source["path"])
        if not path.exists():
            path.mkdir(parents=True)
            path.chmod(0o777)
        if fs_group is not None and not read_only:
            apply_fs_group(path, fs_group, on_root_mismatch=on_root_mismatch)
        return HostVolume(path, read_only=read_only)

    # --- API-backed file sets -------------------------------------------------------------

    def _get(self, namespace: str, kind: str, name: str) -> Obj | None:
        try:
            return self._kube.get(
                f"/api/v1/namespaces/{path_quote(namespace)}/{kind}/{path_quote(name)}"
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def _key_files(
        self, namespace: str, kind: str, source: Obj, default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        name = source.get("name") or source.get("secretName") or ""
        obj = self._get(namespace, kind, name)
        if obj is None:
            if source.get("optional"):
                return {}
            raise VolumeError(f'{kind[:-1]} "{name}" not found')
        data: dict[str, bytes] = {}
        if kind == "secrets":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        items = source.get("items")
        if not items:
            return {key: (value, default_mode) for key, value in data.items()}
        files: dict[str, tuple[bytes, int]] = {}
        for item in items:
            key = item["key"]
            if key not in data:
                if source.get("optional"):
                    continue
                raise VolumeError(f'configmap/secret "{name}" has no key {key!r}')
            files[_check_relative(item["path"])] = (data[key], item.get("mode", default_mode))
        return files

    def _object_files(self, namespace: str, volume: Obj) -> dict[str, tuple[bytes, int]]:
        if "configMap" in volume:
            source = volume["configMap"]
            kind = "configmaps"
        else:
            source = volume["secret"]
            kind = "secrets"
        return self._key_files(
            namespace, kind, source, source.get("defaultMode", DEFAULT_FILE_MODE)
        )

    def _downward_files(
        self, pod: Obj, pod_ip: str, items: list[Obj], default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        files: dict[str, tuple[bytes, int]] = {}
        for item in items:
            if "fieldRef" in item:
                value = field_value(
                    pod, item["fieldRef"]["fieldPath"], pod_ip=pod_ip, host_ip=self._host_ip
                )
            elif "resourceFieldRef" in item:
                value = resource_value(pod, "", item["resourceFieldRef"], self._allocatable)
            else:
                raise VolumeError(f"downwardAPI item {item.get('path')!r} has no source")
            files[_check_relative(item["path"])] = (value.encode(), item.get("mode", default_mode))
        return files

    def _projected_files(
        self, pod: Obj, pod_ip: str, volume: Obj, state: PodVolumes
    ) -> dict[str, tuple[bytes, int]]:
        projected = volume["projected"]
        default_mode = projected.get("defaultMode", DEFAULT_FILE_MODE)
        namespace = pod["metadata"]["namespace"]
        files: dict[str, tuple[bytes, int]] = {}
        for index, source in enumerate(projected.get("sources") or []):
            if "serviceAccountToken" in source:
                token_source = source["serviceAccountToken"]
                key = f"{volume['name']}/{index}"
                token = self._token(pod, token_source, state.tokens.get(key))
                state.tokens[key] = token
                path = _check_relative(token_source["path"])
                files[path] = (token.token.encode(), default_mode)
            elif "configMap" in source:
                files |= self._key_files(namespace, "configmaps", source["configMap"], default_mode)
            elif "secret" in source:
                files |= self._key_files(namespace, "secrets", source["secret"], default_mode)
            elif "downwardAPI" in source:
                files |= self._downward_files(
                    pod, pod_ip, source["downwardAPI"].get("items") or [], default_mode
                )
            else:
                raise VolumeError(
                    f"projected source {sorted(source)} is not supported by the devcluster agent",
                    reason="CreateContainerConfigError",
                )
        return files

    def _token(self, pod: Obj, source: Obj, current: _Token | None) -> _Token:
        lifetime = float(source.get("expirationSeconds") or TOKEN_DEFAULT_EXPIRATION)
        now = time.time()
        if current and now - current.fetched_at < TOKEN_ROTATE_FRACTION * current.lifetime:
            return current
        metadata = pod["metadata"]
        account = pod.get("spec", {}).get("serviceAccountName") or "default"
        audience = source.get("audience")
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": int(lifetime),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        answer = self._kube.create(
            f"/api/v1/namespaces/{path_quote(metadata['namespace'])}/serviceaccounts/"
            f"{path_quote(account)}/token",
            request,
        )
        return _Token(answer["status"]["token"], now, lifetime)
