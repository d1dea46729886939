"""Progress logging to stderr (what ``kubectl logs`` of a Job shows) and ETAs."""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "optimizer_job"


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """One stderr handler on the package logger; calling it twice adds nothing."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_optimizer_job", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
        handler._optimizer_job = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger


def get_logger(stage: str | None = None) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{stage}" if stage else LOGGER_NAME)


class Eta:
    """Remaining time from the mean duration of the steps done so far."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self, done: int) -> float:
        if done <= 0:
            return float("nan")
        return self.elapsed() / done * max(self.total - done, 0)

    def text(self, done: int) -> str:
        seconds = self.remaining(done)
        if seconds != seconds:  # NaN: nothing done yet
            return "?"
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
