"""Drift verdicts that cannot be fooled (issue 13): false alarms, multivariate, memory.

    nice .venv/bin/python bench/drift_verdict_bench.py --false-alarms   # ~10 minutes
    nice .venv/bin/python bench/drift_verdict_bench.py --big            # 1M x 50

1. False-alarm rate without drift: 5 standard normal features, a 10 000-row reference
   (new each trial), current samples of n rows from the same distribution; how often
   does ``compare`` report drift (``detected``), and how often InsufficientData, for
   each metric at its default threshold (0.2) and alpha = 0.05.
2. 1M x 50 (float32, as dataio loads it): time and peak memory of fitting the
   reference, of ``compare(metric="ks")`` and of ``compare(metric="multivariate")``;
   the fitted reference's bytes; the Job's memory estimate (optimizer_job.memory).
   Memory is tracemalloc's peak of NumPy allocations (independent of machine load).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from typing import Any

import numpy as np

from optimizer_job.drift import FittedReference, compare
from optimizer_job.drift.verdict import minimum_rows
from optimizer_job.memory import evaluate_memory_bytes

SIZES = (1, 10, 25, 30, 50, 100, 200, 1000)
METRICS = ("ks", "psi", "jensenshannon", "wasserstein")


def false_alarms(trials: int, seed: int, multivariate_trials: int) -> dict[str, Any]:
    """One ``compare`` per trial gives every statistic; each metric's verdict follows
    verdict.py's rules (score over 0.2, or KS after Bonferroni), with and without the
    metric's minimum rows ("old": what the verdict said before issue 13)."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(5)]
    out: dict[str, Any] = {"trials": trials, "seed": seed, "rows": {}}
    for n in SIZES:
        alarms = dict.fromkeys(METRICS, 0)
        old = dict.fromkeys(METRICS, 0)
        insufficient = dict.fromkeys(METRICS, 0)
        for _ in range(trials):
            reference = rng.standard_normal((10_000, 5))
            report = compare(reference, rng.standard_normal((n, 5)), names, metric="ks")
            effective = 10_000 * n / (10_000 + n)
            for metric in METRICS:
                if metric == "ks":
                    fired = any(v["p_adjusted"] <= 0.05 for v in report.per_feature.values())
                else:
                    score = float(np.mean([v[metric] for v in report.per_feature.values()]))
                    fired = score > 0.2
                needed = minimum_rows(metric, threshold=0.2, alpha=0.05, bins=10)
                have = effective if metric in ("psi", "jensenshannon") else n
                old[metric] += fired
                if have < needed:
                    insufficient[metric] += 1
                else:
                    alarms[metric] += fired
        cells: dict[str, Any] = {
            metric: {
                "false_alarm_rate": alarms[metric] / trials,
                "insufficient_rate": insufficient[metric] / trials,
                "old_false_alarm_rate": old[metric] / trials,
            }
            for metric in METRICS
        }
        if multivariate_trials and n >= 50:
            fired_mv = 0
            for _ in range(multivariate_trials):
                reference = rng.standard_normal((10_000, 5))
                current = rng.standard_normal((n, 5))
                fired_mv += compare(reference, current, names, metric="multivariate").detected
            cells["multivariate"] = {
                "false_alarm_rate": fired_mv / multivariate_trials,
                "trials": multivariate_trials,
            }
        out["rows"][n] = cells
        print(n, json.dumps(cells), flush=True)
    return out


def _peak(call: Any) -> tuple[Any, float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    value = call()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, seconds, peak / 2**20


def big(rows: int, features: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((rows, features), dtype=np.float32)
    current = rng.standard_normal((rows, features), dtype=np.float32)
    a = current[:, 0].copy()
    current[:, 1] = np.where(a > 0, np.abs(current[:, 1]), -np.abs(current[:, 1]))  # joint change
    names = [f"f{i}" for i in range(features)]
    out: dict[str, Any] = {"rows": rows, "features": features, "input_mib": current.nbytes / 2**20}
    fitted, out["fit_s"], out["fit_peak_mib"] = _peak(lambda: FittedReference.fit(reference, names))
    out["fitted_mib"] = fitted.nbytes / 2**20
    out["fitted_from_float64_mib"] = None
    report, out["ks_s"], out["ks_peak_mib"] = _peak(lambda: compare(fitted, current, names))
    out["ks_detected"] = report.detected
    report, out["multivariate_s"], out["multivariate_peak_mib"] = _peak(
        lambda: compare(fitted, current, names, metric="multivariate")
    )
    out["multivariate"] = report.multivariate.model_dump() if report.multivariate else None
    out["estimate_mib"] = evaluate_memory_bytes(rows, rows, features) / 2**20
    out["estimate_multivariate_mib"] = (
        evaluate_memory_bytes(rows, rows, features, multivariate=True) / 2**20
    )
    wide = reference.astype(np.float64)  # float64 input whose values are float32: kept as float32
    fitted64, _, out["fit_float64_peak_mib"] = _peak(lambda: FittedReference.fit(wide, names))
    out["fitted_from_float64_mib"] = fitted64.nbytes / 2**20
    out["float64_input_mib"] = wide.nbytes / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--false-alarms", action="store_true")
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--multivariate-trials", type=int, default=40)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.false_alarms:
        results["false_alarms"] = false_alarms(args.trials, args.seed, args.multivariate_trials)
    if args.big:
        results["big"] = big(args.rows, args.features, args.seed)
        print(json.dumps(results["big"], indent=2), flush=True)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
