"""A storage provisioner: a local directory per PersistentVolumeClaim.

It keeps a default StorageClass `devcluster-local` and, for each pending claim of that class,
creates a hostPath PersistentVolume pre-bound to the claim (claimRef) at
`<state-dir>/pvc/<namespace>/<claim>`; the cluster's own PV controller then binds the two.
When such a volume is Released and its reclaim policy is Delete, the directory and the volume
are removed — the external-provisioner protocol the PV controller expects.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from devcluster.node_agent.kube import ApiError, Kube, Obj, path_quote

log = logging.getLogger(__name__)

STORAGE_CLASS = "devcluster-local"
PROVISIONER = "devcluster.io/local"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def storage_class() -> Obj:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def volume_for(claim: Obj, root: Path, reclaim_policy: str) -> Obj:
    metadata = claim["metadata"]
    spec = claim.get("spec", {})
    size = (spec.get("resources", {}).get("requests") or {}).get("storage", "1Gi")
    path = root / metadata["namespace"] / metadata["name"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{metadata['uid']}",
            "annotations": {PROVISIONED_BY: PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": reclaim_policy,
            "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": metadata["namespace"],
                "name": metadata["name"],
                "uid": metadata["uid"],
            },
        },
    }


class LocalProvisioner:
    def __init__(self, kube: Kube, root: Path, *, interval: float = 2.0) -> None:
        self._kube = kube
        self._root = root
        self._interval = interval
        self._class_ready = False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.reconcile()
            except (ApiError, OSError) as error:
                log.warning("storage provisioner: %s", error)
            except Exception:
                log.exception("storage provisioner crashed; retrying")
            stop.wait(self._interval)

    def reconcile(self) -> None:
        if not self._class_ready:
            self._ensure_class()
        reclaim = "Delete"
        try:
            existing = self._kube.get(f"/apis/storage.k8s.io/v1/storageclasses/{STORAGE_CLASS}")
            reclaim = existing.get("reclaimPolicy") or "Delete"
        except ApiError as error:
            if error.status == 404:
                self._class_ready = False
                return
            raise
        claims = self._kube.get("/api/v1/persistentvolumeclaims").get("items", [])
        for claim in claims:
            if self._wants_volume(claim):
                self._provision(claim, reclaim)
        volumes = self._kube.get("/api/v1/persistentvolumes").get("items", [])
        for volume in volumes:
            self._maybe_delete(volume)

    def _ensure_class(self) -> None:
        try:
            self._kube.create("/apis/storage.k8s.io/v1/storageclasses", storage_class())
            log.info("created StorageClass %s", STORAGE_CLASS)
        except ApiError as error:
            if error.status != 409:
                raise
        self._class_ready = True

    @staticmethod
    def _wants_volume(claim: Obj) -> bool:
        spec = claim.get("spec", {})
        return (
            spec.get("storageClassName") == STORAGE_CLASS
            and not spec.get("volumeName")
            and claim.get("status", {}).get("phase", "Pending") == "Pending"
            and not claim["metadata"].get("deletionTimestamp")
        )

    def _provision(self, claim: Obj, reclaim: str) -> None:
        volume = volume_for(claim, self._root, reclaim)
        path = Path(volume["spec"]["hostPath"]["path"])
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # any Pod user may write, as with a fresh volume of most CSI drivers
        try:
            self._kube.create("/api/v1/persistentvolumes", volume)
            log.info(
                "provisioned %s for %s/%s",
                volume["metadata"]["name"],
                claim["metadata"]["namespace"],
                claim["metadata"]["name"],
            )
        except ApiError as error:
            if error.status != 409:
                raise

    def _maybe_delete(self, volume: Obj) -> None:
        annotations = volume["metadata"].get("annotations") or {}
        spec = volume.get("spec", {})
        if (
            annotations.get(PROVISIONED_BY) != PROVISIONER
            or volume.get("status", {}).get("phase") != "Released"
            or spec.get("persistentVolumeReclaimPolicy") != "Delete"
        ):
            return
        path = Path(spec.get("hostPath", {}).get("path", ""))
        if self._root in path.parents:
            shutil.rmtree(path, ignore_errors=True)
        try:
            self._kube.delete(f"/api/v1/persistentvolumes/{path_quote(volume['metadata']['name'])}")
            log.info("deleted released volume %s", volume["metadata"]["name"])
        except ApiError as error:
            if error.status != 404:
                raise
