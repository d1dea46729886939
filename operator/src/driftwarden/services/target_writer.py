"""Writing the target Deployment: DriftWarden's intent by server-side apply, and releasing
ownership of fields by guarded JSON patches (policy.deployment_apply, policy.ownership).

A target that cannot be used - missing, without the container, refusing our apply - raises
``TargetUnavailableError`` with a reason for Ready; other API errors propagate (the handler
retries the pass).

Most writes go to ``spec.target``. A temporary fix is reverted on the Deployment and
container recorded when it was applied (``apply_to``, ``detach(name)``), which need not be
the target any more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final

from driftwarden import k8s
from driftwarden.api.conditions import Reason
from driftwarden.k8s import ApiError
from driftwarden.policy import from_api, ownership
from driftwarden.policy.admission import POLICY_VIOLATION, model_env_in_use_elsewhere
from driftwarden.policy.deployment_apply import (
    PROMOTED_RUN_ANNOTATION,
    DeploymentIntent,
    TargetRef,
    build_apply,
)
from driftwarden.services.loop_context import Json, LoopStep
from driftwarden.services.target import is_stale_write

GUARDED_PATCH_ATTEMPTS: Final = 5
TARGET_WRITE_FAILED: Final = "TargetWriteFailed"


class TargetUnavailableError(Exception):
    """The target Deployment or its container is missing, or refuses our writes."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TargetWriter(LoopStep):
    def read_deployment(self) -> Json:
        target = self.spec.target
        assert target is not None
        deployment = self.ctx.target_api.get_deployment(self.namespace, target.deployment)
        if deployment is None:
            raise TargetUnavailableError(
                Reason.TARGET_NOT_FOUND,
                f"Deployment {target.deployment} (spec.target.deployment) not found in "
                f"namespace {self.namespace}",
            )
        return deployment

    def container(self, deployment: Json, name: str) -> Json:
        for container in deployment["spec"]["template"]["spec"].get("containers") or []:
            if container.get("name") == name:
                return dict(container)
        raise TargetUnavailableError(
            Reason.CONTAINER_NOT_FOUND,
            f"Deployment {deployment['metadata']['name']} has no container {name}",
        )

    def target(self) -> tuple[Json, str]:
        deployment = self.read_deployment()
        container = from_api.target_container(self.spec, deployment)
        if container is None:
            wanted = self.spec.target.container if self.spec.target else None
            raise TargetUnavailableError(
                Reason.CONTAINER_NOT_FOUND,
                f"Deployment {deployment['metadata']['name']} has no container "
                f"{wanted or '(none)'} (spec.target.container)",
            )
        self._check_model_env(container)
        return deployment, str(container["name"])

    def read_named(self, name: str) -> Json | None:
        """A Deployment of the resource's namespace by name (None when it is gone)."""
        return self.ctx.target_api.get_deployment(self.namespace, name)

    def intent(self, deployment: Json, container: str) -> DeploymentIntent:
        """DriftWarden's whole intent for a container of ``deployment`` (read just now): the
        promoted model and, if the active fix is on it, the raised fields nobody changed
        since, with the fix's record."""
        meta = deployment["metadata"]
        body = self.container(deployment, container)
        live = from_api.resource_values(body)
        wanted = from_api.intent(
            self.status,
            meta["name"],
            container,
            from_api.fix_record(self.status, self.ctx.owner.uid, self.ctx.owner.name),
            live,
        )
        # Whatever else we own there stays as it is: an apply that left it out would delete
        # it (policy.ownership.owned_resources). The model env var too, when status lost
        # the promotion that set it (its Job gone before the run was recorded).
        managed = meta.get("managedFields") or []
        owned = ownership.owned_resources(managed, container, live)
        wanted = replace(wanted, resources=wanted.resources.union(owned))
        env = self.spec.target.model_env if self.spec.target is not None else None
        if wanted.model_uri is None and env in ownership.owned_env_names(managed, container):
            value = from_api.env_value(body, env)
            if value is not None:
                promoted = (meta.get("annotations") or {}).get(PROMOTED_RUN_ANNOTATION)
                wanted = replace(wanted, model_uri=value, promoted_run=promoted)
        return wanted

    def _check_model_env(self, container: Json) -> None:
        """The model env var must not be one the container sets for another purpose (a
        value that is not a model location, or one taken from elsewhere): promotion would
        overwrite it."""
        assert self.spec.target is not None
        name = self.spec.target.model_env
        for env in container.get("env") or []:
            if env.get("name") != name:
                continue
            value = env.get("value")
            if "valueFrom" in env or model_env_in_use_elsewhere(value, managed_by_us=False):
                raise TargetUnavailableError(
                    POLICY_VIOLATION,
                    f"spec.target.modelEnv: container {container.get('name')} already sets "
                    f"{name} for another purpose (not a pvc://, file:// or s3:// model "
                    "location); DriftWarden never overwrites it: name another variable",
                )

    def apply(self, container: str, intent: DeploymentIntent) -> None:
        self.apply_to(from_api.target_ref(self.namespace, self.spec, container), intent)

    def apply_to(self, target: TargetRef, intent: DeploymentIntent) -> None:
        try:
            self.ctx.target_api.apply_deployment(build_apply(target, intent))
        except k8s.NotFoundError as error:
            raise TargetUnavailableError(Reason.TARGET_NOT_FOUND, str(error)) from error
        except ApiError as error:
            if error.status in (400, 403, 422):
                raise TargetUnavailableError(
                    TARGET_WRITE_FAILED,
                    f"Deployment {target.deployment} refused our apply: {error}",
                ) from error
            raise

    def release_fields(self, deployment: str, paths: list[ownership.FieldPath]) -> None:
        self._guarded_patch(
            deployment,
            lambda body: ownership.release_patch(
                body["metadata"].get("managedFields") or [],
                body["metadata"]["resourceVersion"],
                paths,
            ),
        )

    def _guarded_patch(self, deployment: str, build: Callable[[Json], list[Json] | None]) -> None:
        """A JSON patch guarded by the resourceVersion, rebuilt from a fresh read when the
        Deployment changed in between (its controller writes status all the time)."""
        for _ in range(GUARDED_PATCH_ATTEMPTS):
            body = self.ctx.target_api.get_deployment(self.namespace, deployment)
            if body is None:
                return
            patch = build(body)
            if patch is None:
                return
            try:
                self.ctx.target_api.json_patch_deployment(self.namespace, deployment, patch)
                return
            except ApiError as error:
                if not is_stale_write(error):
                    raise
        raise ApiError(409, f"Deployment {deployment} kept changing; will try again")

    def detach(self, deployment: str | None = None) -> None:
        """Hand a Deployment back (the target by default): our annotations go, our
        managedFields entry goes, every value stays (see policy.ownership.detach_patch).
        A Deployment that is gone needs nothing."""
        if deployment is None:
            if self.spec.target is None:
                return
            deployment = self.spec.target.deployment
        self._guarded_patch(
            deployment,
            lambda body: ownership.detach_patch(
                body["metadata"].get("managedFields") or [],
                body["metadata"]["resourceVersion"],
                body["metadata"].get("annotations") or {},
            ),
        )
