"""The example model server: a make-example model served over HTTP, predictions and metrics."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimizer_job import modelio, onnxmodel
from optimizer_job.dataio import load_table
from optimizer_job.example import make_example
from optimizer_job.publish import publish_run_directory
from optimizer_job.serving import ModelServer, torch_threads

pytestmark = pytest.mark.job


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_example(tmp_path_factory.mktemp("example"), logging.getLogger("test"), epochs=8)


def _start(uri: str) -> tuple[ModelServer, threading.Thread]:
    server = ModelServer(uri, "127.0.0.1", 0, threads=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert server.loaded.wait(60), "the model did not load in 60 s"
    return server, thread


@pytest.fixture
def served(example: dict[str, Any]) -> Iterator[ModelServer]:
    server, thread = _start(example["model"])
    yield server
    server.close()
    thread.join(10)


def _url(server: ModelServer, path: str) -> str:
    host, port = server.address
    return f"http://{host}:{port}{path}"


def _get(server: ModelServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(_url(server, path), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _post(server: ModelServer, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        _url(server, "/predict"), data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} in /metrics")


def test_predicts_the_holdout_like_the_model_does(
    served: ModelServer, example: dict[str, Any]
) -> None:
    holdout = load_table(example["data"]["stable"], "label")
    rows = holdout.X[:64]
    status, answer = _post(served, json.dumps({"instances": rows.tolist()}).encode())
    assert status == 200, answer
    assert len(answer["predictions"]) == 64
    assert answer["model"] == example["model"]
    probabilities = np.array(answer["probabilities"])
    assert probabilities.shape == (64, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert answer["predictions"] == probabilities.argmax(axis=1).tolist()
    # The example model knows unshifted digits: most of these are right.
    assert holdout.y is not None
    correct = np.mean(np.array(answer["predictions"]) == holdout.y[:64])
    assert correct > 0.8


def test_health_readiness_and_metrics(served: ModelServer, example: dict[str, Any]) -> None:
    assert _get(served, "/healthz")[0] == 200
    status, body = _get(served, "/readyz")
    assert status == 200
    ready = json.loads(body)
    assert ready["model"] == example["model"]
    assert len(ready["manifest_sha256"]) == 64
    assert ready["runtime"] == "torch" and ready["execution_provider"] is None
    row = [0.0] * 64
    for _ in range(3):
        assert _post(served, json.dumps({"instances": [row, row]}).encode())[0] == 200
    assert _post(served, b'{"instances": [[1, 2, 3]]}')[0] == 400
    assert _post(served, b"not json")[0] == 400
    status, text = _get(served, "/metrics")
    assert status == 200
    assert _sample(text, "serving_request_duration_seconds_count") == 3
    assert _sample(text, "serving_predictions_total") == 6
    assert _sample(text, 'serving_requests_total{code="400"}') == 2
    assert _sample(text, "serving_torch_threads") == 1
    labels = f'manifest_sha256="{ready["manifest_sha256"]}",model_uri="{example["model"]}"'
    info = "serving_model_info{" + labels + "}"
    assert _sample(text, info) == 1
    assert 'le="0.015"' in text  # a bucket at a typical SLO


def test_a_tampered_model_is_refused_and_the_server_stops(
    example: dict[str, Any], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(Path(example["model"].removeprefix("file://")), model)
    (model / "model.json").write_text((model / "model.json").read_text() + " ")
    server, thread = _start(model.as_uri())
    thread.join(10)
    assert not thread.is_alive(), "the server keeps serving a model it could not load"
    assert server.model is None
    assert server.load_error is not None
    assert "model.json" in server.load_error
    server.httpd.server_close()


def test_threads_follow_the_cpu_limit() -> None:
    assert torch_threads({"CPU_LIMIT_MILLICORES": "500"}) == 1
    assert torch_threads({"CPU_LIMIT_MILLICORES": "2000"}) == 2
    assert torch_threads({"CPU_LIMIT_MILLICORES": "2500", "SERVING_THREADS": "3"}) == 3


def test_an_onnx_model_directory_is_served_by_onnx_runtime_with_the_same_api(
    served: ModelServer, example: dict[str, Any], tmp_path: Path
) -> None:
    torch_model = modelio.load_model(example["model"])
    holdout = load_table(example["data"]["stable"], "label")
    rows = np.ascontiguousarray(holdout.X[:64])
    data = onnxmodel.export(torch_model.module, onnxmodel.signature_for([64], rows))
    extra = {k: v for k, v in torch_model.meta.items() if k in ("input", "num_classes")}
    directory = tmp_path / "onnx"
    publish_run_directory(
        lambda d: modelio.save_model(
            onnxmodel.OnnxModule(data), torch_model.factory, torch_model.kwargs, d, extra
        ),
        directory,
    )
    server, thread = _start(directory.as_uri())
    try:
        ready = json.loads(_get(server, "/readyz")[1])
        assert ready["runtime"] == "onnxruntime"
        assert ready["execution_provider"] == onnxmodel.CPU_PROVIDER  # the server's CPU
        assert ready["parameters"] == sum(p.numel() for p in torch_model.module.parameters())
        body = json.dumps({"instances": rows.tolist()}).encode()
        status, answer = _post(server, body)
        assert status == 200, answer
        _, from_torch = _post(served, body)
        assert answer["predictions"] == from_torch["predictions"]
        np.testing.assert_allclose(answer["probabilities"], from_torch["probabilities"], atol=1e-5)
        text = _get(server, "/metrics")[1]
        assert _sample(text, "serving_predictions_total") == 64
        assert _sample(text, "serving_request_duration_seconds_count") == 1
    finally:
        server.close()
        thread.join(10)


def test_a_text_model_takes_raw_strings_tokenized_with_its_own_tokenizer(
    tmp_path: Path,
) -> None:
    from optimizer_job import hf
    from optimizer_job.example_hf import make_text_example

    text = make_text_example(tmp_path / "text")
    tokenizer = hf.load_tokenizer(Path(text["model"]))
    sentences = ["good great day happy", "bad poor sad day zyxt"]
    server, thread = _start(text["model"])
    try:
        status, answer = _post(server, json.dumps({"instances": sentences}).encode())
        assert status == 200, answer
        assert server.model is not None and server.model.tokenizer is not None
        ids, _ = hf.tokenize(tokenizer, sentences, server.model.text_length)
        status, by_ids = _post(server, json.dumps({"instances": ids.tolist()}).encode())
        assert status == 200, by_ids
        assert answer["predictions"] == by_ids["predictions"]
        assert answer["probabilities"] == by_ids["probabilities"]
        mixed = json.dumps({"instances": ["good day", ids[0].tolist()]}).encode()
        assert _post(server, mixed)[0] == 400
    finally:
        server.close()
        thread.join(10)
