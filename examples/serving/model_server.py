"""A tiny HTTP model server for the DriftWarden demo and end-to-end tests.

It serves the model directory named by ``$MODEL_URI`` (``pvc://<claim>/<path>`` resolved
under ``$PVC_MOUNT_ROOT``, or ``file:///<path>``) - the environment variable DriftWarden's
promotion points at a new model - and exports its request latency for Prometheus:

    POST /predict   {"instances": [[...features...], ...]}  ->  {"predictions": [...], "model": uri}
    GET  /healthz   200 once the model is loaded: {"model": uri, "parameters": n}
    GET  /metrics   model_server_request_duration_seconds (histogram), model_server_requests_total

Serving latency for ``spec.monitoring.prometheus`` is then, for example::

    histogram_quantile(0.95, sum by (le)
      (rate(model_server_request_duration_seconds_bucket{namespace="ml"}[5m])))

It listens on ``$POD_IP`` (the downward API's status.podIP) or ``$BIND_ADDRESS``, port
``$PORT`` (8080). Run: ``python examples/serving/model_server.py`` with the project's
environment (torch, safetensors, prometheus-client).
"""

from __future__ import annotations

import json
import logging
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from optimizer_job.contract import PVC_MOUNT_ROOT, resolve_uri
from optimizer_job.modelio import LoadedModel, load_model

LATENCY = Histogram(
    "model_server_request_duration_seconds",
    "Time to answer one /predict request.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REQUESTS = Counter("model_server_requests_total", "Answered /predict requests.", ["code"])
MAX_BODY_BYTES = 8 * 1024 * 1024

log = logging.getLogger("model_server")


class Model:
    def __init__(self, uri: str, pvc_root: str) -> None:
        self.uri = uri
        self.loaded: LoadedModel = load_model(resolve_uri(uri, pvc_root))
        self.parameters = sum(p.numel() for p in self.loaded.module.parameters())

    def predict(self, instances: list[Any]) -> list[int]:
        shape = self.loaded.input_shape
        batch = torch.tensor(instances, dtype=torch.float32).reshape(len(instances), *shape)
        with torch.inference_mode():
            return [int(i) for i in self.loaded.module(batch).argmax(dim=1)]


def handler_for(model: Model) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                info = {"model": model.uri, "parameters": model.parameters}
                self._send(200, json.dumps(info).encode())
            elif self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            if self.path != "/predict":
                self._send(404, b'{"error": "not found"}')
                return
            started = time.perf_counter()
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    raise ValueError(f"request body over {MAX_BODY_BYTES} bytes")
                instances = json.loads(self.rfile.read(length))["instances"]
                predictions = model.predict(instances)
            except (ValueError, KeyError, TypeError, RuntimeError) as error:
                REQUESTS.labels(code="400").inc()
                self._send(400, json.dumps({"error": str(error)}).encode())
                return
            LATENCY.observe(time.perf_counter() - started)
            REQUESTS.labels(code="200").inc()
            self._send(200, json.dumps({"predictions": predictions, "model": model.uri}).encode())

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uri = os.environ["MODEL_URI"]
    model = Model(uri, os.environ.get("PVC_MOUNT_ROOT", PVC_MOUNT_ROOT))
    address = os.environ.get("POD_IP") or os.environ.get("BIND_ADDRESS", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((address, port), handler_for(model))
    log.info("serving %s (%d parameters) on %s:%d", uri, model.parameters, address, port)
    server.serve_forever()


if __name__ == "__main__":
    main()
