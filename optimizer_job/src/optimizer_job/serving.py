"""A small HTTP model server: the serving side of a model directory, for the demo and tests.

``python -m optimizer_job.serving`` serves the model directory named by ``$MODEL_URI``
(``file:///path`` or ``pvc://<claim>/<path>``, the claim mounted under ``$PVC_MOUNT_ROOT``) -
the environment variable DriftWarden's promotion points at a new model version, which rolls
the Deployment's Pods. The MANIFEST is checked before the model is used. A torch model
directory is run by torch, an ONNX one (``format: onnx``, from the export stage) by ONNX
Runtime, behind the same API and metrics; /readyz names the ``runtime`` (and, for ONNX, the
``execution_provider``: the CPU's, as the server computes on the CPU like a torch model).

    POST /predict   {"instances": [row, ...]}  ->  {"predictions": [class, ...],
                    "probabilities": [[p, ...], ...], "model": uri}
                    a row is a list of numbers of the model's input shape (flattened or nested),
                    or, for a text classifier with its tokenizer in the directory, a string
                    (tokenized with that tokenizer, padded or cut to the length it was run with)
    GET  /healthz   200 while the process serves (liveness)
    GET  /readyz    200 once the model is loaded, 503 before (readiness)
    GET  /metrics   Prometheus text format, see below

Metrics (one model per process, so every label has one value per Pod):
    serving_request_duration_seconds   histogram of /predict latency, buckets around usual SLOs
    serving_requests_total{code}       answered /predict requests by HTTP status
    serving_predictions_total          rows predicted
    serving_model_info{model_uri,manifest_sha256}   1 for the model this process serves
    serving_torch_threads              intra-op threads torch uses (from the CPU limit)

Environment: ``MODEL_URI`` (required); ``POD_IP`` (downward API status.podIP) or
``BIND_ADDRESS`` (default 127.0.0.1); ``PORT`` (8080); ``CPU_LIMIT_MILLICORES`` (downward API
resourceFieldRef limits.cpu, divisor 1m) or ``SERVING_THREADS``; ``PVC_MOUNT_ROOT``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from optimizer_job import hf, storage
from optimizer_job.contract import PVC_MOUNT_ROOT, BadInputError, is_s3_uri, resolve_uri
from optimizer_job.manifest import MANIFEST_NAME, sha256_file
from optimizer_job.modelio import LoadedModel, load_model

DEFAULT_PORT: Final = 8080
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
MAX_ROWS: Final = 4096
# Tokens per text row when the model directory does not say (data.maxLength's default).
DEFAULT_TEXT_LENGTH: Final = 128
# Fine around the SLOs people set for small models (5-250 ms), coarse beyond.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)

log = logging.getLogger("optimizer_job.serving")


def torch_threads(env: Mapping[str, str]) -> int:
    """Intra-op threads for torch: ``SERVING_THREADS``, else the whole cores of the CPU limit.

    The limit comes from the downward API (``resourceFieldRef: limits.cpu``, divisor 1m), so
    a change of the limit - DriftWarden's temporary fix raises it - rolls the Pods and the new
    ones compute with more threads. On a real node the cgroup quota would slow an
    over-threaded process down anyway; on the devcluster there are no cgroups, so following
    the limit here is what makes a raised limit really serve faster. Fewer whole cores than
    one (500m) still get one thread.
    """
    explicit = env.get("SERVING_THREADS", "").strip()
    if explicit:
        return max(1, int(explicit))
    millicores = env.get("CPU_LIMIT_MILLICORES", "").strip()
    if millicores:
        return max(1, int(millicores) // 1000)
    return max(1, torch.get_num_threads())


class ServedModel:
    """A loaded model directory and what /predict needs from it."""

    def __init__(self, uri: str, pvc_root: str = PVC_MOUNT_ROOT) -> None:
        self.uri = uri
        if is_s3_uri(uri):  # downloaded and checked against its MANIFEST file by file
            directory = storage.fetch_directory(uri)
        else:
            directory = resolve_uri(uri, pvc_root) if "://" in uri else Path(uri)
        # Checks the MANIFEST first. The server computes on the CPU (a torch model stays
        # there), so an ONNX model gets ONNX Runtime's CPU execution provider.
        self.loaded: LoadedModel = load_model(directory, device="cpu")
        self.manifest_sha256 = sha256_file(directory / MANIFEST_NAME)
        self.input_shape = self.loaded.input_shape
        if not self.input_shape and self.loaded.factory == hf.SEQUENCE_FACTORY:
            self.input_shape = [-1]  # a save_pretrained text model: rows of token ids
        if not self.input_shape:
            raise BadInputError(f"{uri}: model.json has no input shape")
        # A text classifier also takes raw strings, tokenized as its runs tokenized text.
        self.tokenizer: Any = None
        self.text_length = DEFAULT_TEXT_LENGTH
        if self.loaded.meta.get("factory") == hf.SEQUENCE_FACTORY and hf.has_tokenizer(directory):
            self.tokenizer = hf.load_tokenizer(directory)
            if self.input_shape and self.input_shape[0] > 0:
                self.text_length = self.input_shape[0]
            config = getattr(getattr(self.loaded.module, "model", None), "config", None)
            positions = getattr(config, "max_position_embeddings", None)
            if isinstance(positions, int) and positions > 0:
                self.text_length = min(self.text_length, positions)
        # The framework that computes: an ONNX model directory (model.onnx, format onnx) is
        # run by ONNX Runtime with torch's thread count, a torch one by torch.
        self.runtime = "onnxruntime" if self.loaded.is_onnx else "torch"
        provider = getattr(self.loaded.module, "execution_provider", None)
        self.execution_provider: str | None = None if provider is None else str(provider)
        counted = getattr(self.loaded.module, "parameter_count", None)
        self.parameters = (
            int(counted)
            if counted is not None
            else sum(p.numel() for p in self.loaded.module.parameters())
        )
        self._dtype = next(
            (p.dtype for p in self.loaded.module.parameters() if p.is_floating_point()),
            torch.float32,
        )

    def predict(self, instances: list[Any]) -> tuple[list[int], list[list[float]]]:
        """Classes and class probabilities for rows of the model's input shape."""
        if not isinstance(instances, list) or not instances:
            raise ValueError("'instances' must be a non-empty list of rows")
        if len(instances) > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} rows per request, got {len(instances)}")
        if any(isinstance(row, str) for row in instances):
            batch = self._tokenized(instances)
        else:
            batch = torch.tensor(instances, dtype=torch.float32)
        try:
            batch = batch.reshape(len(instances), *self.input_shape)
        except RuntimeError as error:
            raise ValueError(f"each row must have {self.input_shape} values: {error}") from error
        with torch.inference_mode():
            logits = self.loaded.module(batch.to(self._dtype)).float()
            probabilities = torch.softmax(logits, dim=1)
        classes = [int(c) for c in probabilities.argmax(dim=1)]
        return classes, [[round(float(p), 6) for p in row] for row in probabilities]

    def _tokenized(self, instances: list[Any]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this model takes rows of numbers, not text")
        if not all(isinstance(row, str) for row in instances):
            raise ValueError("rows must be all strings or all lists of numbers")
        ids, _ = hf.tokenize(self.tokenizer, instances, self.text_length)
        return torch.from_numpy(ids)


class ServingMetrics:
    """The server's own registry: several servers in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "serving_request_duration_seconds",
            "Time to answer one /predict request, reading the body to writing the answer.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "serving_requests",
            "Answered /predict requests by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self.predictions = Counter("serving_predictions", "Rows predicted.", registry=self.registry)
        self.model_info = Gauge(
            "serving_model_info",
            "1 for the model version this process serves.",
            ["model_uri", "manifest_sha256"],
            registry=self.registry,
        )
        self.threads = Gauge(
            "serving_torch_threads", "Intra-op threads torch computes with.", registry=self.registry
        )


class ModelServer:
    """The HTTP server; the model loads in the background so /healthz answers at once."""

    def __init__(
        self, uri: str, host: str, port: int, threads: int, pvc_root: str = PVC_MOUNT_ROOT
    ) -> None:
        self.uri = uri
        self.pvc_root = pvc_root
        self.threads = threads
        self.metrics = ServingMetrics()
        self.model: ServedModel | None = None
        self.load_error: str | None = None
        self.loaded = threading.Event()
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def load(self) -> None:
        """Load the model; on failure record why and stop serving (the Pod restarts)."""
        torch.set_num_threads(self.threads)
        self.metrics.threads.set(self.threads)
        try:
            model = ServedModel(self.uri, self.pvc_root)
        except (BadInputError, OSError, ValueError, RuntimeError) as error:
            self.load_error = f"cannot load {self.uri}: {error}"
            log.error("%s", self.load_error)
            self.loaded.set()
            threading.Thread(target=self.httpd.shutdown, daemon=True).start()
            return
        self.metrics.model_info.labels(model.uri, model.manifest_sha256).set(1)
        self.model = model
        self.loaded.set()
        log.info(
            "serving %s (%s%s, %d parameters, MANIFEST sha256 %s) with %d thread(s)",
            self.uri,
            model.runtime,
            f" on {model.execution_provider}" if model.execution_provider else "",
            model.parameters,
            model.manifest_sha256[:12],
            self.threads,
        )

    def serve_forever(self) -> None:
        threading.Thread(target=self.load, name="load-model", daemon=True).start()
        self.httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    metrics = server.metrics

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a load generator reuses its connection
        # Headers and body go out in two writes; with Nagle's algorithm the body would wait
        # for the client's delayed ACK of the headers (about 40 ms per answer).
        disable_nagle_algorithm = True

        def _send(self, code: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, {"status": "ok"})
            elif path == "/readyz":
                model = server.model
                if model is None:
                    self._send(503, {"ready": False, "error": server.load_error or "loading"})
                else:
                    self._send(
                        200,
                        {
                            "ready": True,
                            "model": model.uri,
                            "manifest_sha256": model.manifest_sha256,
                            "parameters": model.parameters,
                            "runtime": model.runtime,
                            "execution_provider": model.execution_provider,
                            "threads": server.threads,
                        },
                    )
            elif path == "/metrics":
                body = generate_latest(metrics.registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._send(404, {"error": f"no such path {path}"})

        def do_POST(self) -> None:
            started = time.perf_counter()
            if self.path.split("?", 1)[0] != "/predict":
                self._send(404, {"error": f"no such path {self.path}"})
                return
            code, payload = self._predict()
            self._send(code, payload)
            metrics.requests.labels(str(code)).inc()
            if code == 200:
                metrics.latency.observe(time.perf_counter() - started)

        def _predict(self) -> tuple[int, dict[str, Any]]:
            model = server.model
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                return 413, {"error": f"request body over {MAX_BODY_BYTES} bytes"}
            body = self.rfile.read(length)
            if model is None:
                return 503, {"error": server.load_error or "the model is still loading"}
            try:
                request = json.loads(body)
                if not isinstance(request, dict) or "instances" not in request:
                    raise ValueError('the body must be {"instances": [row, ...]}')
                classes, probabilities = model.predict(request["instances"])
            except (ValueError, TypeError) as error:
                return 400, {"error": str(error)}
            metrics.predictions.inc(len(classes))
            return 200, {"predictions": classes, "probabilities": probabilities, "model": model.uri}

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optimizer_job.serving",
        description="Serve a DriftWarden model directory over HTTP (see the module docstring).",
    )
    parser.add_argument("--model-uri", default=os.environ.get("MODEL_URI"))
    parser.add_argument(
        "--host", default=os.environ.get("POD_IP") or os.environ.get("BIND_ADDRESS", "127.0.0.1")
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.model_uri:
        parser.error("set MODEL_URI (or --model-uri)")
    server = ModelServer(
        args.model_uri,
        args.host,
        args.port,
        torch_threads(os.environ),
        os.environ.get("PVC_MOUNT_ROOT", PVC_MOUNT_ROOT),
    )
    # SIGTERM (Pod deletion, rollout) ends serve_forever; in-flight requests are daemon threads.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
    log.info("listening on http://%s:%d", *server.address)
    server.serve_forever()
    server.httpd.server_close()
    if server.load_error:
        print(server.load_error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
