"""Drift statistics benchmark and statistical checks (not a test: it times things).

    nice .venv/bin/python bench/drift_bench.py               # everything, ~2 minutes
    nice .venv/bin/python bench/drift_bench.py --skip-trials  # timing and memory only

1. Speed: PSI + KS (statistic and p-value) of a current sample against a reference
   fitted once, 1M rows x 50 features float32, median of a few runs; the same run
   also times a loop of scipy.stats.ks_2samp over some of the features and
   extrapolates it to all of them (the loop costs the same per feature).
2. Memory: tracemalloc's peak of NumPy allocations during the fast path, against the
   current sample's size.
3. Statistics over synthetic trials: do the drifted-feature decisions agree with the
   ones from scipy.stats.ks_2samp's p-values under the same correction, and how often
   does a comparison without any shift report drift (should be <= alpha)?
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from optimizer_job.drift import FittedReference, adjust_pvalues, compare, feature_statistics
from optimizer_job.drift.scoring import default_workers

FAST_PATH = ("psi", "ks", "ks_p")


def _timed(function: Callable[[], Any], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "runs": len(seconds),
    }


def make_tables(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 reference and current; every fifth feature of the current is shifted."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.5, 20.0, size=features).astype(np.float32)
    reference = rng.standard_normal((rows, features), dtype=np.float32) * scales
    current = rng.standard_normal((rows, features), dtype=np.float32) * scales
    shifted = np.arange(0, features, 5)
    current[:, shifted] += (0.01 * scales[shifted]).astype(np.float32)
    return reference, current


def speed_and_memory(args: argparse.Namespace) -> dict[str, Any]:
    reference, current = make_tables(args.rows, args.features, args.seed)
    names = [f"f{i}" for i in range(args.features)]
    out: dict[str, Any] = {
        "rows": args.rows,
        "features": args.features,
        "dtype": str(current.dtype),
        "input_mb": current.nbytes / 2**20,
        "workers_default": default_workers(args.features),
    }
    start = time.perf_counter()
    fitted = FittedReference.fit(reference, names)
    out["fit_s"] = time.perf_counter() - start

    result = feature_statistics(fitted, current, FAST_PATH)  # warm-up, and the values
    for workers in sorted({1, default_workers(args.features)}):
        seconds = _timed(
            lambda w=workers: feature_statistics(fitted, current, FAST_PATH, workers=w),
            args.repeats,
        )
        out[f"psi_ks_workers{workers}"] = _summary(seconds)
    fast = out[f"psi_ks_workers{default_workers(args.features)}"]["median_s"]

    seconds = _timed(
        lambda: compare(fitted, current, names, metric="ks"), max(1, args.repeats // 2)
    )
    out["compare_all_statistics"] = _summary(seconds)

    # SciPy's loop on the first k features (every fifth shifted, as in the whole table).
    k = min(args.scipy_features, args.features)
    statistic_gap, pvalue_gap = 0.0, 0.0
    start = time.perf_counter()
    for index in range(k):
        expected = stats.ks_2samp(reference[:, index], current[:, index])
        statistic_gap = max(statistic_gap, abs(expected.statistic - result["ks"][index]))
        pvalue_gap = max(pvalue_gap, abs(expected.pvalue - result["ks_p"][index]))
    scipy_s = time.perf_counter() - start
    out["scipy_loop"] = {
        "features_run": k,
        "seconds_run": scipy_s,
        "extrapolated_s": scipy_s * args.features / k,
        "max_abs_statistic_gap": statistic_gap,
        "max_abs_pvalue_gap": pvalue_gap,
    }
    out["speedup_vs_scipy_loop"] = scipy_s * args.features / k / fast

    for label, call in (
        ("psi_ks", lambda: feature_statistics(fitted, current, FAST_PATH)),
        ("compare_all_statistics", lambda: compare(fitted, current, names, metric="ks")),
    ):
        tracemalloc.start()
        call()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[f"peak_extra_mb_{label}"] = peak / 2**20
    return out


def trials(args: argparse.Namespace) -> dict[str, Any]:
    """Decisions vs SciPy's KS, and the false-positive rate without a shift."""
    rng = np.random.default_rng(args.seed + 1)
    features = args.trial_features
    names = [f"f{i}" for i in range(features)]
    out: dict[str, Any] = {"trials": args.trials, "features": features, "alpha": args.alpha}
    for correction in ("bonferroni", "fdr_bh"):
        agree_sets = agree_features = agree_detected = 0
        for trial in range(args.trials):
            # Sizes log-uniform over 30..20 000: exact (<= 10 000) and asymptotic p-values.
            n_ref, n_cur = np.exp(rng.uniform(np.log(30), np.log(20_000), size=2)).astype(int)
            reference = rng.normal(size=(n_ref, features))
            current = rng.normal(size=(n_cur, features))
            if trial % 2:  # shifts around the detection limit for these sizes
                columns = rng.choice(features, size=rng.integers(1, features // 2), replace=False)
                scale = np.sqrt(1 / n_ref + 1 / n_cur)
                current[:, columns] += rng.uniform(0.5, 3.0, size=columns.size) * scale
            if trial % 3 == 0:  # ties within and across the samples
                reference, current = np.round(reference, 1), np.round(current, 1)
            report = compare(
                reference, current, names, metric="ks", alpha=args.alpha, correction=correction
            )
            pvalues = np.array(
                [stats.ks_2samp(reference[:, i], current[:, i]).pvalue for i in range(features)]
            )
            scipy_drifted = adjust_pvalues(pvalues, correction) <= args.alpha
            ours = np.array([name in report.drifted_features for name in names])
            agree_sets += bool(np.array_equal(ours, scipy_drifted))
            agree_features += int(np.sum(ours == scipy_drifted))
            agree_detected += report.detected == bool(scipy_drifted.any())
        out[f"agreement_{correction}"] = {
            "drifted_set": agree_sets / args.trials,
            "per_feature": agree_features / (args.trials * features),
            "detected": agree_detected / args.trials,
        }

        false_alarms = flagged_features = 0
        for _ in range(args.trials):
            n_ref, n_cur = np.exp(rng.uniform(np.log(30), np.log(20_000), size=2)).astype(int)
            reference = rng.normal(size=(n_ref, features))
            current = rng.normal(size=(n_cur, features))
            report = compare(
                reference, current, names, metric="ks", alpha=args.alpha, correction=correction
            )
            false_alarms += report.detected
            flagged_features += len(report.drifted_features)
        out[f"no_shift_{correction}"] = {
            "false_positive_rate": false_alarms / args.trials,
            "flagged_feature_rate": flagged_features / (args.trials * features),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scipy-features", type=int, default=10)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--trial-features", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-trials", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if not args.skip_speed:
        results["speed"] = speed_and_memory(args)
        print(json.dumps({"speed": results["speed"]}, indent=2), flush=True)
    if not args.skip_trials:
        results["trials"] = trials(args)
        print(json.dumps({"trials": results["trials"]}, indent=2), flush=True)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
