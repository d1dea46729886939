"""What report.html costs: rendering time and size per run and per evaluation (issue 18).

Makes the CLI example (a small MLP on digits, drifted current data), runs one optimize task
(retrain 2 epochs + structured prune 30 %, latency at batch 1 and 32) and one evaluate task,
each writing its report.html, then renders each report again ``--repeat`` times from the
result alone (what ``optimizer_job.report.render`` costs in the Job) and once in a fresh
interpreter with an empty matplotlib cache (the first report a new Job container writes:
import plus font cache). Copies of the reports go to bench/out/.

    .venv/bin/python bench/report_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import load_average, machine
from optimizer_job import report
from optimizer_job.contract import EvaluationSettings, PruneStage, RetrainStage, RunResult, Task
from optimizer_job.example import make_example
from optimizer_job.runner import run_task

OUT = Path(__file__).parent / "out"
COLD = (
    "import time, sys; t = time.perf_counter(); "
    "from optimizer_job import report; from optimizer_job.contract import RunResult; "
    "r = RunResult.model_validate_json(open(sys.argv[1]).read()); report.render(r); "
    "print(time.perf_counter() - t, time.process_time())"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine(), f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        example = make_example(root / "example", logging.getLogger("bench"), epochs=10)
        settings = EvaluationSettings(latency_batch_sizes=[1, 32])
        results: dict[str, RunResult] = {}
        for kind, changes in (
            (
                "optimize",
                {
                    "stages": [
                        RetrainStage(epochs=2, early_stopping_patience=0),
                        PruneStage(amount_percent=30, fine_tune_epochs=1),
                    ],
                    "artifacts_uri": (root / "artifacts").as_uri(),
                    "run_id": "r-bench",
                },
            ),
            ("evaluate", {"artifacts_uri": (root / "artifacts").as_uri(), "run_id": "e-bench"}),
        ):
            task = Task.model_validate_json(
                Path(example["out"], f"task-{kind}.json").read_text()
            ).model_copy(update={"evaluation": settings, **changes})
            results[kind] = run_task(task)
        OUT.mkdir(exist_ok=True)
        for kind, result in results.items():
            assert result.report_uri is not None
            page = Path(result.report_uri.removeprefix("file://"))
            shutil.copyfile(page, OUT / f"report-{kind}.html")
            json_path = root / f"{kind}.json"
            json_path.write_text(result.model_dump_json())
            times, cpu = [], []
            for _ in range(args.repeat):
                started, started_cpu = time.perf_counter(), time.process_time()
                report.render(result)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
            with tempfile.TemporaryDirectory() as config:
                cold = subprocess.run(
                    [sys.executable, "-c", COLD, str(json_path)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={"MPLCONFIGDIR": config, "PATH": "/usr/bin:/bin"},
                )
            data = result.report_data.model_dump_json() if result.report_data else ""
            print(
                f"{kind}: report {page.stat().st_size / 1024:.0f} KiB, "
                f"{page.read_text().count('<img')} plots; render median "
                f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, "
                f"{args.repeat} runs; CPU time median {statistics.median(cpu):.2f} s); "
                "cold process (import + empty font cache + render) "
                f"{float(cold.stdout.split()[0]):.2f} s wall, "
                f"{float(cold.stdout.split()[1]):.2f} s CPU; report data in result.json "
                f"{len(data) / 1024:.1f} KiB"
            )
    print(f"load average after: {load_average()}; reports copied to {OUT}")


if __name__ == "__main__":
    main()
