"""Command line: the Job's entry (``--task file.json``) and by-hand use with flags.

    python -m optimizer_job --task task.json
    python -m optimizer_job optimize --model DIR --reference F --current F --holdout F \\
        --artifacts DIR --stage retrain:epochs=5,dropout=10 --stage prune:amount=50
    python -m optimizer_job evaluate --model DIR --reference F --current F --holdout F
    python -m optimizer_job make-example --out DIR [--model mlp|cnn]

The full result goes to stdout as JSON, progress to stderr, the compact result to the
termination message. Exit codes: 0 ok, 65 bad input (one-line reason), 70 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast, get_args

from pydantic import TypeAdapter, ValidationError

from optimizer_job.contract import (
    DEFAULT_DRIFT_METRIC,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    BadInputError,
    DataRefs,
    DriftMetric,
    EvaluationSettings,
    RunResult,
    Stage,
    Task,
)
from optimizer_job.progress import configure_logging
from optimizer_job.termination import write_termination_message

# Short names for stage fields on the command line: prune:amount=50.
STAGE_ALIASES = {
    "amount": "amount_percent",
    "dropout": "dropout_percent",
    "label_smoothing": "label_smoothing_percent",
    "smoothing": "label_smoothing_percent",
    "patience": "early_stopping_patience",
    "lr": "learning_rate",
    "validation": "validation_percent",
    "fraction": "fraction_percent",
    "fine_tune": "fine_tune_epochs",
}
_STAGE_ADAPTER: TypeAdapter[Stage] = TypeAdapter(Stage)


def parse_stage(text: str) -> Stage:
    """``type[:key=value[,key=value...]]`` (``:`` also separates pairs) as a pipeline stage."""
    kind, _, rest = text.partition(":")
    fields: dict[str, Any] = {"type": kind.strip()}
    for pair in rest.replace(":", ",").split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadInputError(f"stage {text!r}: expected key=value, got {pair!r}")
        key = key.strip().replace("-", "_")
        fields[STAGE_ALIASES.get(key, key)] = value.strip()
    try:
        return _STAGE_ADAPTER.validate_python(fields)
    except ValidationError as error:
        raise BadInputError(f"stage {text!r}: {_validation_line(error)}") from error


def _validation_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" + (
        f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    )


def as_uri(value: str | None) -> str | None:
    """URIs as given; plain paths become file:// URIs."""
    if value is None or "://" in value:
        return value
    return Path(value).resolve().as_uri()


def load_task(path: Path) -> Task:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BadInputError(f"task file unreadable: {error}") from error
    try:
        return Task.model_validate_json(text)
    except ValidationError as error:
        raise BadInputError(f"task: {_validation_line(error)}") from error


def task_from_flags(args: argparse.Namespace) -> Task:
    kind = cast(Literal["optimize", "evaluate"], args.command)
    settings: dict[str, Any] = {"drift_metric": args.drift_metric, "threads": args.threads}
    if args.drift_threshold is not None:
        settings["drift_threshold"] = args.drift_threshold
    if args.alpha is not None:
        settings["alpha"] = args.alpha
    if args.batch_sizes:
        settings["latency_batch_sizes"] = [int(b) for b in args.batch_sizes.split(",")]
    if args.iterations is not None:
        settings["latency_iterations"] = args.iterations
    try:
        return Task(
            kind=kind,
            namespace=args.namespace,
            optimization=args.name,
            run_id=args.run_id or f"manual-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
            model_uri=as_uri(args.model) or "",
            data=DataRefs(
                reference=as_uri(args.reference),
                current=as_uri(args.current),
                holdout=as_uri(args.holdout),
                label_column=args.label_column,
                features=args.features.split(",") if args.features else None,
            ),
            stages=[parse_stage(s) for s in getattr(args, "stage", None) or []],
            artifacts_uri=as_uri(getattr(args, "artifacts", None)),
            evaluation=EvaluationSettings(**settings),
            seed=args.seed,
            device=args.device,
        )
    except ValidationError as error:
        raise BadInputError(f"arguments: {_validation_line(error)}") from error


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (path or URI)")
    parser.add_argument("--reference", help="reference table (Parquet, CSV or NPZ)")
    parser.add_argument("--current", help="current table")
    parser.add_argument("--holdout", help="labelled holdout table")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--features", help="comma-separated feature columns")
    parser.add_argument("--name", default="manual", help="optimization name (artifact folder)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--run-id", help="default: manual-<UTC time>")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--drift-metric", choices=list(get_args(DriftMetric)), default=DEFAULT_DRIFT_METRIC
    )
    parser.add_argument("--drift-threshold", help="decimal, e.g. 0.2")
    parser.add_argument("--alpha", help="significance level, e.g. 0.05")
    parser.add_argument("--threads", type=int, default=1, help="threads for latency")
    parser.add_argument("--batch-sizes", help="latency batch sizes, e.g. 1,32")
    parser.add_argument("--iterations", type=int, help="latency iterations per batch size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m optimizer_job",
        description="DriftWarden optimization job: evaluate or optimize a model.",
    )
    parser.add_argument("--task", type=Path, help="task JSON (how the Job runs it)")
    commands = parser.add_subparsers(dest="command")
    optimize = commands.add_parser("optimize", help="run a pipeline and publish the candidate")
    _common_flags(optimize)
    optimize.add_argument("--artifacts", required=True, help="artifacts root (path or URI)")
    optimize.add_argument(
        "--stage",
        action="append",
        required=True,
        help="pipeline stage, repeatable, in order: retrain:epochs=5,dropout=10 | "
        "prune:method=structured,amount=50,fine_tune=3 | distill:method=herding,fraction=50 | "
        "quantize:mode=int8 | export:quantize=dynamic-int8,graph_optimization=all",
    )
    evaluate = commands.add_parser("evaluate", help="metrics and drift of the model in use")
    _common_flags(evaluate)
    example = commands.add_parser("make-example", help="write an example model and drifted data")
    example.add_argument("--out", type=Path, required=True)
    example.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    example.add_argument("--seed", type=int, default=0)
    example.add_argument(
        "--epochs", type=int, help="training epochs at most (default: 60 MLP, 15 CNN)"
    )
    return parser


def _failure(
    task_or_path: Task | Path | None, reason: str, command: str | None = None
) -> RunResult:
    kind: Literal["optimize", "evaluate"] = "evaluate" if command == "evaluate" else "optimize"
    run_id = "unknown"
    if isinstance(task_or_path, Task):
        kind, run_id = task_or_path.kind, task_or_path.run_id
    elif isinstance(task_or_path, Path):
        # The task did not validate; still name the run if its JSON says which.
        try:
            raw = json.loads(task_or_path.read_text(encoding="utf-8"))
            run_id = str(raw.get("run_id", run_id))[:200]
            if raw.get("kind") in ("optimize", "evaluate"):
                kind = raw["kind"]
        except (OSError, ValueError, AttributeError):
            pass
    return RunResult(kind=kind, run_id=run_id, ok=False, reason=reason)


class TerminatedError(Exception):
    """SIGTERM (Pod deletion, activeDeadlineSeconds): stop, clean up, report why."""


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise TerminatedError(f"terminated by signal {signal.Signals(signum).name}")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:1000]


def _other_rank() -> bool:
    """One of several torchrun workers, not rank 0 (RANK is torchrun's global rank)."""
    return os.environ.get("RANK", "0") != "0" and int(os.environ.get("WORLD_SIZE", "1")) > 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = configure_logging()
    if args.command == "make-example":
        from optimizer_job.example import make_example

        summary = make_example(args.out, log, model=args.model, seed=args.seed, epochs=args.epochs)
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    if args.command is None and args.task is None:
        parser.error("give --task FILE or a command (optimize, evaluate, make-example)")
    task: Task | Path | None = args.task
    code = EXIT_OK
    # Raising in the main thread unwinds the run: a half-built run directory is removed
    # and the termination message still says what happened.
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        task = load_task(args.task) if args.command is None else task_from_flags(args)
        # Imported once the task is valid: a bad task is refused without loading torch.
        from optimizer_job.runner import run_task

        result = run_task(task)
    except BadInputError as error:
        code = EXIT_BAD_INPUT
        result = _failure(task, f"bad input: {_one_line(error)}", args.command)
        log.error("%s", result.reason)
    except Exception as error:
        code = EXIT_INTERNAL
        result = _failure(
            task, f"internal error: {type(error).__name__}: {_one_line(error)}", args.command
        )
        log.error("%s\n%s", result.reason, traceback.format_exc())
    if code == EXIT_OK and _other_rank():
        # A data-parallel worker other than rank 0: rank 0 reports the run.
        return code
    write_termination_message(result, log)
    print(result.model_dump_json(indent=2))
    sys.stdout.flush()
    return code
