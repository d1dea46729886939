"""Requests to the serving Pods, as clients would send them: how accurate and how fast is the
model the Deployment serves right now?"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass

import numpy as np

from devcluster.demo_data import CURRENT_ROWS, REFERENCE_ROWS, SHIFT_PIXELS, digits

SERVING_PORT = 8080
BATCH = 32


@dataclass(frozen=True)
class Traffic:
    model_uri: str
    requests: int
    accuracy: float
    p50_ms: float
    p95_ms: float
    threads: int | None

    def line(self) -> str:
        threads = f", {self.threads} torch thread(s)" if self.threads else ""
        return (
            f"{self.requests} requests of {BATCH} digits -> {self.model_uri}: "
            f"accuracy {self.accuracy:.1%}, latency p50 {self.p50_ms:.1f} ms, "
            f"p95 {self.p95_ms:.1f} ms{threads}"
        )


def traffic_rows(shifted: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The holdout's digits (never trained on) as flat rows, with their labels; ``shifted``:
    after the same camera change the demo injects into the data."""
    from optimizer_job.example import shift_images

    images, labels = digits(seed)
    first = REFERENCE_ROWS + CURRENT_ROWS
    images, labels = images[first:], labels[first:]
    if shifted:
        images = shift_images(images, SHIFT_PIXELS, np.random.default_rng(seed + 7))
    return images.reshape(len(images), -1), labels


def send(pod_ip: str, shifted: bool, requests: int = 30) -> Traffic:
    rows, labels = traffic_rows(shifted)
    connection = http.client.HTTPConnection(pod_ip, SERVING_PORT, timeout=30)
    correct = 0
    timings = []
    model_uri = "?"
    try:
        for index in range(requests):
            start = (index * BATCH) % (len(rows) - BATCH)
            body = json.dumps({"instances": rows[start : start + BATCH].tolist()})
            began = time.perf_counter()
            connection.request(
                "POST", "/predict", body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            payload = json.loads(response.read())
            timings.append((time.perf_counter() - began) * 1000)
            if response.status != 200:
                raise RuntimeError(f"/predict answered {response.status}: {payload}")
            model_uri = str(payload["model"])
            correct += int(
                np.sum(np.array(payload["predictions"]) == labels[start : start + BATCH])
            )
        connection.request("GET", "/readyz")
        ready = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return Traffic(
        model_uri=model_uri,
        requests=requests,
        accuracy=correct / (requests * BATCH),
        p50_ms=float(np.percentile(timings, 50)),
        p95_ms=float(np.percentile(timings, 95)),
        threads=ready.get("threads"),
    )
