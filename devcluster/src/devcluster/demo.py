"""`make demo`: DriftWarden's whole loop on the embedded devcluster.

Brings a devcluster up in ./.devcluster, installs the Helm chart (the operator runs as the
chart's Deployment, its Pod a process of the devcluster's node agent), writes a trained
model and its data into a volume, starts a serving Deployment, applies a
ModelOptimization, and then shows what the operator does on its own:

1. the model is too slow for its latency SLO: the serving container gets more CPU (the
   temporary fix), a run prunes and retrains the model, the gates pass, the Deployment is
   pointed at the new model, and once it meets the SLO the original resources come back;
2. the data shifts (a Job swaps in new current data, as a pipeline would): the evaluation
   detects drift, a run retrains on the new data, the gates pass and it is promoted.

It ends with a report read from the resource's status, in the terminal and as
demo-report.html in the checkout (``devcluster.demo_report``). The cluster keeps running so you
can look around; `make demo-down` removes it. `--ci` (or DEMO_FAST=1) runs the same steps
with less training and shorter intervals.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import yaml

from devcluster import demo_manifests as m
from devcluster import demo_report
from devcluster.controlplane import Cluster, ComponentFailedError
from devcluster.demo_kube import DemoKube, StepTimeoutError, wait_for
from devcluster.demo_show import (
    EventLog,
    Progress,
    command,
    condition,
    evaluation_rows,
    indented,
    metrics_up,
    run_header,
    run_rows,
    say,
    show_metrics,
    show_mo,
    table,
)
from devcluster.demo_traffic import Traffic, send
from devcluster.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_STATE_DIR = REPO_ROOT / ".devcluster"  # where `make demo-down` looks
MO_FILE = "examples/demo/modeloptimization.yaml"
SERVING_FILE = "examples/serving/deployment.yaml"
STORAGE_FILE = "examples/demo/storage.yaml"
DEMO_REPORT = REPO_ROOT / "demo-report.html"
# The SLO is this share of the model's median latency measured on this machine: the model
# breaks it, a model with half the channels (about 2.5x faster) meets it.
SLO_SHARE_OF_MEDIAN = 0.75
STEPS = 12
POLL_SECONDS = 3.0
# Latency runs the demo follows before it gives up (a rejected one is retried after the
# cooldown while the SLO stays breached); within spec.triggers.maxRunsPerDay.
RUN_ATTEMPTS = 3

T = TypeVar("T")
Json = dict[str, Any]


class DemoFailedError(Exception):
    """A step of the demo could not be shown; the message says which and why."""


class Demo:
    def __init__(self, cluster: Cluster, pace: m.Pace, report_path: Path = DEMO_REPORT) -> None:
        self.cluster = cluster
        self.report_path = report_path
        self.fix_reverted_at: datetime | None = None
        self.pace = pace
        self.kube = DemoKube(cluster, m.NAMESPACE)
        self.events = EventLog(self.kube, m.MO_NAME)
        self.progress = Progress(STEPS)
        self.metrics_url = ""
        self.slo_ms = 0
        self.latency_batch = 0
        self.original_resources: Json = {}
        self.missing: list[str] = []  # steps that could not be shown, and why
        self.evaluations: dict[str, Json] = {}  # every lastEvaluation seen, by id, in order

    # ---- helpers --------------------------------------------------------------------

    def status(self) -> Json:
        body = self.kube.custom("modeloptimizations", m.MO_NAME) or {}
        status: Json = body.get("status") or {}
        last = status.get("lastEvaluation") or {}
        if last.get("id") and last.get("time"):
            self.evaluations[str(last["id"])] = last
        return status

    def watch(self, what: str, check: Callable[[Json], T | None], timeout: float) -> T:
        """Wait for ``check(status)`` while printing the resource's new events."""
        last_stage: str | None = None

        def poll() -> T | None:
            nonlocal last_stage
            status = self.status()
            self.events.show_new()
            run = status.get("activeRun") or {}
            stage = f"{run.get('id')}:{run.get('stageType')}" if run else None
            if stage and stage != last_stage:
                say(
                    f"... run {run.get('id')} ({run.get('trigger')}) is running"
                    + (f", stage {run.get('stageType')}" if run.get("stageType") else "")
                )
            last_stage = stage
            return check(status)

        try:
            return wait_for(what, poll, timeout, interval=POLL_SECONDS)
        except StepTimeoutError as error:
            raise DemoFailedError(f"{error}; the resource's status: {self._summary()}") from None

    def _summary(self) -> str:
        status = self.status()
        conditions = ", ".join(
            f"{c.get('type')}={c.get('status')} ({c.get('reason')})"
            for c in status.get("conditions") or []
        )
        return f"phase {status.get('phase')}; {conditions or 'no conditions'}"

    def serving_traffic(
        self, shifted: bool, expect_model: str | None = None, *, show: bool = True
    ) -> Traffic:
        """Requests to a ready serving Pod (the one serving ``expect_model`` if given)."""

        def ready() -> Traffic | None:
            for ip in self.kube.ready_pod_ips(m.SERVING_SELECTOR):
                try:
                    traffic = send(ip, shifted, requests=3)
                    if expect_model is None or traffic.model_uri == expect_model:
                        return send(ip, shifted)
                except (OSError, http.client.HTTPException):
                    continue  # a Pod of the old ReplicaSet going away during a rollout
            return None

        traffic = wait_for(f"serving Pod with {expect_model or 'a model'}", ready, 240)
        if show:
            say("serving: " + traffic.line())
        return traffic

    def container_resources(self) -> Json:
        deployment = self.kube.get("deployment", m.SERVING) or {}
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container["name"] == "server":
                resources: Json = container.get("resources") or {}
                return resources
        return {}

    # ---- the steps ------------------------------------------------------------------

    def start_cluster(self) -> None:
        self.progress.step(
            "Starting the devcluster (etcd, kube-apiserver, controller-manager, "
            "scheduler, node agent)"
        )
        state_file = self.cluster.state_dir / "state.json"
        if state_file.exists():
            say(
                f"a devcluster from an earlier demo is in {self.cluster.state_dir}: "
                "removing it for a clean run"
            )
            self.cluster.down()
        started = time.monotonic()
        self.cluster.up()
        say(f"up in {time.monotonic() - started:.0f} s: {self.cluster.api_server}")
        indented(self.kube.kubectl("get", "nodes"))

    def install_chart(self) -> None:
        self.progress.step("Installing the Helm chart charts/driftwarden (CRD, RBAC, operator)")
        self.kube.kubectl("apply", "-f", "-", input=m.namespace())
        metrics_port, health_port = free_port(), free_port()
        values = self.cluster.state_dir / "demo-values.yaml"
        values.write_text(m.helm_values(health_port, metrics_port, resync_seconds=3))
        command(
            f"helm upgrade --install {m.RELEASE} charts/driftwarden -n {m.OPERATOR_NAMESPACE} "
            f"--create-namespace -f {values}"
        )
        self.kube.helm(
            "upgrade", "--install", m.RELEASE, str(REPO_ROOT / "charts" / "driftwarden"),
            "-n", m.OPERATOR_NAMESPACE, "--create-namespace", "-f", str(values),
        )  # fmt: skip
        self.wait_operator()
        say("the operator runs as the chart's Deployment; its Pod is a process of the node agent")
        indented(self.kube.kubectl("get", "deploy,pods", "-n", m.OPERATOR_NAMESPACE))
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        wait_for("operator metrics", lambda: metrics_up(self.metrics_url), 60)
        say(f"operator metrics: {self.metrics_url}")

    def wait_operator(self) -> None:
        """The operator Deployment available; a crash loop fails at once with its log."""
        operator = DemoKube(self.cluster, m.OPERATOR_NAMESPACE)

        def available() -> bool | None:
            deployment = operator.get("deployment", m.RELEASE) or {}
            if (deployment.get("status") or {}).get("availableReplicas") == 1:
                return True
            for pod in (operator.get("pods") or {}).get("items") or []:
                for state in (pod.get("status") or {}).get("containerStatuses") or []:
                    if state.get("restartCount", 0) >= 2:
                        log = operator.ns("logs", pod["metadata"]["name"], "--tail=15", check=False)
                        raise DemoFailedError(
                            f"the operator crash-loops; its log ends with:\n{log}"
                        )
            return None

        wait_for("available operator Deployment", available, 180)

    def prepare_data(self) -> None:
        self.progress.step("A volume with a trained model and its data (a Job writes them)")
        self.kube.ns("apply", "-f", str(REPO_ROOT / STORAGE_FILE))
        mo = yaml.safe_load((REPO_ROOT / MO_FILE).read_text())
        self.latency_batch = int(mo["spec"]["triggers"]["latency"].get("batchSize", 1))
        self.kube.apply(m.prepare_job(self.pace, self.latency_batch))
        command(f"kubectl -n {m.NAMESPACE} logs -f job/demo-prepare")
        say(f"training a small CNN on 800 digits ({self.pace.prepare_epochs} epochs) ...")
        logs = self.kube.wait_job("demo-prepare", timeout=900)
        summary = json.loads(logs.strip().splitlines()[-1])
        p50 = float(summary["latency_ms"][f"b{self.latency_batch}_p50"])
        self.slo_ms = max(1, int(p50 * SLO_SHARE_OF_MEDIAN))
        say(
            f"model {m.MODEL_URI}: holdout accuracy {summary['accuracy']['holdout']:.1%} "
            f"(on shifted digits it would be {summary['accuracy']['shifted-holdout']:.1%}), "
            f"{summary['size_bytes'] / 1024:.0f} KiB, latency at batch {self.latency_batch}: "
            f"p50 {p50:.2f} ms on this machine"
        )
        say(
            f"latency SLO for this demo: p95 <= {self.slo_ms} ms at batch {self.latency_batch} "
            f"({SLO_SHARE_OF_MEDIAN:.0%} of the measured median): the model is too slow for it"
        )

    def start_serving(self) -> None:
        self.progress.step(f"The serving Deployment ({SERVING_FILE})")
        command(f"kubectl -n {m.NAMESPACE} apply -f {SERVING_FILE}")
        self.kube.ns("apply", "-f", str(REPO_ROOT / SERVING_FILE))
        self.kube.rollout(m.SERVING, timeout=240)
        indented(self.kube.ns("get", "deploy,pods", "-l", m.SERVING_SELECTOR, "-o", "wide"))
        self.original_resources = self.container_resources()
        say(f"container resources: {json.dumps(self.original_resources)}")
        self.serving_traffic(shifted=False)

    def apply_optimization(self) -> None:
        self.progress.step(f"Applying the ModelOptimization ({MO_FILE})")
        text = (REPO_ROOT / MO_FILE).read_text()
        self.kube.apply(text, dry_run=True)
        say("the API server validated the file (kubectl apply --dry-run=server)")
        rendered = m.modeloptimization(text, self.slo_ms, self.pace)
        say(
            f"applied with triggers.latency.p95Ms={self.slo_ms}, monitoring.interval="
            f"{self.pace.interval}, cooldown {self.pace.cooldown}"
        )
        self.kube.apply(rendered)
        show_mo(self.kube)

    def first_evaluation(self) -> Json:
        self.progress.step("The first evaluation Job: drift, latency, accuracy of the model in use")
        status = self.watch(
            "first evaluation",
            lambda s: s if (s.get("lastEvaluation") or {}).get("time") else None,
            self.pace.step_timeout,
        )
        self._show_evaluation(status)
        show_mo(self.kube)
        show_metrics(self.metrics_url, m.MO_NAME)
        return status

    def _show_evaluation(self, status: Json) -> None:
        last = status.get("lastEvaluation") or {}
        latency = last.get("latency") or {}
        say(
            f"evaluation {last.get('id')} of {last.get('modelUri')}: drift "
            f"{last.get('driftScore', float('nan')):.3f} "
            f"({'over' if last.get('driftDetected') else 'under'} the threshold), "
            f"p95 {latency.get('p95Ms', float('nan')):.2f} ms (SLO {self.slo_ms} ms), "
            f"accuracy {last.get('accuracyPercent', float('nan')):.1f}%"
        )
        for type_ in ("DriftDetected", "LatencyWithinSLO"):
            c = condition(status, type_)
            if c:
                say(f"{type_}={c.get('status')} ({c.get('reason')}): {c.get('message')}")

    def temporary_fix(self) -> None:
        self.progress.step(
            "The SLO is breached twice in a row: the temporary fix gives the container more CPU"
        )
        status = self.watch(
            "TemporaryFixActive=True",
            lambda s: s if condition(s, "TemporaryFixActive").get("status") == "True" else None,
            self.pace.step_timeout,  # the second evaluation in a row over the SLO applies it
        )
        say(condition(status, "TemporaryFixActive").get("message", ""))
        after = self.container_resources()
        say(f"Deployment {m.SERVING}: {json.dumps(self.original_resources)}")
        say(f"                 now: {json.dumps(after)}")
        command(f"kubectl -n {m.NAMESPACE} get deploy {m.SERVING} --show-managed-fields -o yaml")
        self.kube.rollout(m.SERVING, timeout=240)
        traffic = self.serving_traffic(shifted=False, show=False)
        say(
            f"the Pods rolled; the server now computes with {traffic.threads} torch threads: they "
            "follow the CPU limit, as the devcluster has no cgroups to enforce it (its latency "
            "says little right now: the optimization Job trains on the same cores)"
        )

    def optimization_run(self, trigger: str, step_text: str, shifted: bool) -> Json:
        """Follow the runs of one trigger until one is promoted.

        A rejected candidate is part of the story: the model in use stays. A latency
        breach goes on, so its trigger fires again after the cooldown (within the daily
        budget); a drift episode gets one run, so a rejected drift run ends the demo.
        """
        self.progress.step(step_text)
        seen: set[str] = set()
        for _attempt in range(RUN_ATTEMPTS):

            def finished(status: Json) -> Json | None:
                for run in status.get("runs") or []:
                    if run.get("trigger") == trigger and run["id"] not in seen:
                        return dict(run)
                return None

            run = self.watch(f"finished {trigger} run", finished, self.pace.step_timeout)
            seen.add(run["id"])
            self._show_run(run)
            if run.get("outcome") == "Promoted":
                break
            why = run.get("message") or run.get("outcome")
            if trigger != "Latency":
                raise DemoFailedError(f"run {run['id']} was not promoted: {why}")
            say(
                f"run {run['id']} was not promoted ({why}); the model in use stays. The SLO is "
                f"still breached: the next run starts after the cooldown of {self.pace.cooldown}."
            )
        else:
            raise DemoFailedError(f"none of {RUN_ATTEMPTS} {trigger} runs was promoted")
        artifact = str(run.get("artifactUri"))
        deployment = self.kube.get("deployment", m.SERVING) or {}
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env") or []:
                if env["name"] == "MODEL_URI":
                    say(f"Deployment {m.SERVING}: MODEL_URI={env.get('value')}")
        say("the Pods roll to the new model:")
        self.serving_traffic(shifted=shifted, expect_model=artifact)
        show_mo(self.kube)
        show_metrics(self.metrics_url, m.MO_NAME)
        return run

    def _show_run(self, run: Json) -> None:
        say(f"run {run['id']} ({run.get('trigger')}): {run.get('reason') or ''}")
        self._show_stages(run)
        say(f"outcome {run.get('outcome')} after {run.get('durationSeconds') or 0:.0f} s")
        for gate in run.get("gates") or []:
            passed = "passed" if gate.get("passed") else "FAILED"
            say(f"gate {gate['name']}: {passed} - {gate.get('message')}")
        evaluations = list(self.evaluations.values())
        indented(table(
            run_header(self.latency_batch),
            run_rows({"runs": [run]}, self.latency_batch, evaluations),
        ))  # fmt: skip

    def _show_stages(self, run: Json) -> None:
        """What the run's Job did, stage by stage, from its log."""
        for job in run.get("jobNames") or []:
            command(f"kubectl -n {m.NAMESPACE} logs job/{job}")
            log = self.kube.ns("logs", f"job/{job}", "--tail=200", check=False)
            lines = [
                line.split(" INFO ", 1)[-1] for line in log.splitlines() if "INFO stage " in line
            ]
            indented("\n".join(line for line in lines if ": start" not in line) or "(no log)")

    def first_evaluation_of(self, model_uri: str) -> None:
        """The first evaluation of a promoted model: it keeps the promotion or rolls it back."""
        say(f"waiting for the first evaluation of {model_uri} ...")
        status = self.watch(
            f"evaluation of {model_uri}",
            lambda s: s if (s.get("lastEvaluation") or {}).get("modelUri") == model_uri else None,
            self.pace.step_timeout,
        )
        self._show_evaluation(status)
        kept = condition(status, "Promoted")
        say(f"Promoted={kept.get('status')} ({kept.get('reason')}): {kept.get('message')}")

    def revert_fix(self) -> None:
        self.progress.step("The promoted model meets the SLO: the temporary fix is taken back")

        def reverted(status: Json) -> Json | None:
            fix = status.get("temporaryFix") or {}
            return status if fix and not fix.get("active") else None

        status = self.watch("reverted temporary fix", reverted, self.pace.step_timeout)
        self.fix_reverted_at = datetime.now(UTC)
        fix_condition = condition(status, "TemporaryFixActive")
        say(
            f"TemporaryFixActive={fix_condition.get('status')} ({fix_condition.get('reason')}): "
            f"{fix_condition.get('message')}"
        )
        self._show_evaluation(status)
        self.kube.rollout(m.SERVING, timeout=240)
        restored = self.container_resources()
        exact = restored == self.original_resources
        say(
            f"Deployment {m.SERVING} resources: {json.dumps(restored)} - "
            + ("exactly the original values" if exact else "DIFFERENT from the original values")
        )
        if not exact:
            raise DemoFailedError(f"the revert left {restored}, not {self.original_resources}")

    def shift_data(self) -> None:
        self.progress.step("The data shifts: new current data (a moved, dimmer, noisier camera)")
        self.kube.apply(m.shift_job())
        command(f"kubectl -n {m.NAMESPACE} logs job/demo-shift")
        indented(self.kube.wait_job("demo-shift", timeout=300).strip().splitlines()[-1])
        say("clients now send shifted digits; the model in use gets many wrong:")
        self.serving_traffic(shifted=True)

    def _operator_log_tail(self, lines: int = 20) -> None:
        """The operator's last log lines that say something (not timers and probes)."""
        command(f"kubectl -n {m.OPERATOR_NAMESPACE} logs deploy/{m.RELEASE}")
        log = self.kube.kubectl(
            "-n", m.OPERATOR_NAMESPACE, "logs", f"deploy/{m.RELEASE}", "--tail=400", check=False
        )  # fmt: skip
        telling = [
            line
            for line in log.splitlines()
            if not ("' succeeded." in line or "GET /healthz" in line)
        ]
        indented("\n".join(telling[-lines:]) or "(empty)")

    def report(self, failed: bool) -> None:
        self.progress.number = STEPS - 1  # the report is the last step, even after a failure
        self.progress.step("Report (from the ModelOptimization's status)")
        status = self.status()
        evaluations = list(self.evaluations.values())
        rows = run_rows(status, self.latency_batch, evaluations)
        say("optimization runs (accuracy, latency and size: model in use -> candidate):")
        indented(table(run_header(self.latency_batch), rows) if rows else "(no runs recorded)")
        say(
            f"evaluations seen (* drift over the threshold; SLO p95 <= {self.slo_ms} ms at "
            f"batch {self.latency_batch}):"
        )
        indented(
            table(
                ["evaluation", "time", "model", "drift", "p95 ms", "accuracy"],
                evaluation_rows(evaluations),
            )
            if evaluations
            else "(none)"
        )
        for run in status.get("runs") or []:
            say(f"{run['id']}: {run.get('trigger')} - {run.get('reason') or ''}")
        last = status.get("lastEvaluation") or {}
        if last:
            self._show_evaluation(status)
        fix = status.get("temporaryFix") or {}
        if fix:
            say(
                f"temporary fix: applied {fix.get('appliedAt')}, "
                f"{'still active' if fix.get('active') else 'reverted'} - {fix.get('reason')}"
            )
        promoted = status.get("promoted") or {}
        if promoted:
            say(
                f"serving {promoted.get('current')} (previous {promoted.get('previous')}, "
                "kept for rollback)"
            )
        show_metrics(self.metrics_url, m.MO_NAME)
        self._write_report(status)
        if self.missing:
            print("\n    NOT SHOWN:", flush=True)
            for line in self.missing:
                say(f"- {line}")
        self._look_around(failed)

    def _write_report(self, status: Json) -> None:
        history = demo_report.DemoHistory(
            slo_ms=self.slo_ms,
            latency_batch=self.latency_batch,
            evaluations=list(self.evaluations.values()),
            fix_reverted_at=self.fix_reverted_at,
        )
        path = demo_report.write(self.report_path, status, history, self._local_path)
        say(f"report with plots: {path.resolve()} (open it in a browser; the runs' and")
        say(f"evaluations' own reports are copied to {path.parent / demo_report.REPORTS_FOLDER})")

    def _local_path(self, uri: str) -> Path | None:
        """Where a pvc://ml/... URI of the demo's volume lies on this machine (the
        devcluster's PersistentVolume is a local directory)."""
        parsed = urlparse(uri)
        relative = PurePosixPath(unquote(parsed.path).lstrip("/"))
        if parsed.scheme != "pvc" or parsed.netloc != m.CLAIM or ".." in relative.parts:
            return None
        claim = self.kube.get("pvc", m.CLAIM) or {}
        volume = (claim.get("spec") or {}).get("volumeName")
        if not volume:
            return None
        pv = json.loads(self.kube.kubectl("get", "pv", volume, "-o", "json"))
        source = pv["spec"].get("hostPath") or pv["spec"].get("local") or {}
        return Path(source["path"]) / relative if source.get("path") else None

    def _look_around(self, failed: bool) -> None:
        state = self.cluster.state_dir
        print(f"\nDone in {self.progress.elapsed()}" + (" with missing steps." if failed else "."))
        print("The devcluster keeps running. Look around:")
        print(f'  eval "$(.venv/bin/devcluster env --state-dir {state})"')
        print(f"  kubectl -n {m.NAMESPACE} describe mo {m.MO_NAME}")
        print(f"  kubectl -n {m.NAMESPACE} get mo,jobs,deploy,pods")
        print(f"  kubectl -n {m.OPERATOR_NAMESPACE} logs deploy/{m.RELEASE}")
        print(f"  curl -s {self.metrics_url}            # the operator's metrics")
        ips = self.kube.ready_pod_ips(m.SERVING_SELECTOR) if not failed else []
        if ips:
            print(f"  curl -s http://{ips[0]}:8080/metrics   # the serving Pod's metrics")
        if state == DEFAULT_STATE_DIR:
            print("Tear down: make demo-down")
        else:
            print(f"Tear down: .venv/bin/devcluster down --state-dir {state}")

    # ---- the whole demo ---------------------------------------------------------------

    def run(self) -> int:
        try:
            self.start_cluster()
        except ComponentFailedError as error:
            print(f"demo: {error}", file=sys.stderr)
            return 1
        failed = False
        try:
            self.install_chart()
            self.prepare_data()
            self.start_serving()
            self.apply_optimization()
            self.first_evaluation()
            self.temporary_fix()
            self.optimization_run(
                "Latency",
                "A run for the latency SLO: prune, retrain, gates, promotion",
                shifted=False,
            )
            self.revert_fix()
            self.shift_data()
            run = self.optimization_run(
                "Drift",
                "Drift detected: a run retrains on the new data, gates, promotion",
                shifted=True,
            )
            self.first_evaluation_of(str(run["artifactUri"]))
        except (
            DemoFailedError,
            StepTimeoutError,
            RuntimeError,
            OSError,
            http.client.HTTPException,
        ) as error:
            failed = True
            self.missing.append(f"step {self.progress.number}: {error}")
            print(
                f"\n    demo: step {self.progress.number} could not be shown: {error}", flush=True
            )
            self.events.show_new()
            self._operator_log_tail()
        try:
            self.report(failed)
        except RuntimeError as error:
            print(f"demo: the report failed: {error}", file=sys.stderr)
            failed = True
        return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--ci",
        action="store_true",
        help="reduced mode: less training, shorter intervals (also DEMO_FAST=1)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=DEMO_REPORT,
        help="where to write the HTML report (default: demo-report.html in the checkout)",
    )
    args = parser.parse_args(argv)
    fast = args.ci or os.environ.get("DEMO_FAST", "") not in ("", "0")
    return Demo(Cluster(args.state_dir), m.FAST if fast else m.FULL, args.report).run()


if __name__ == "__main__":
    sys.exit(main())
