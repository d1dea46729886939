#!/usr/bin/env bash
# One prepared run for an accelerator machine (issue 4, section 5): the CUDA tests of the
# prune / distill / quantize stages and the export stage (tests/gpu/test_onnx_cuda.py: a
# GPU-trained model exported and verified; a Hugging Face BERT on the GPU exported with its
# token inputs and ORT dynamic int8; ONNX Runtime's CUDA execution provider reproducing
# PyTorch), then the pruning and quantization benchmarks on the GPU,
# then (issue 17) data-parallel retraining on NCCL: DDP on 1 GPU and on every GPU the machine
# has (one rank per GPU; NCCL refuses two ranks on one device), wall time vs 1 rank.
# Run from the repository root:
#
#     bash bench/gpu_check.sh            # results in $OUT if set, else bench/out/gpu/ (git-ignored)
#
# It needs a Python with torch (CUDA), numpy, scikit-learn, safetensors, pyarrow, pytest and
# pytest-timeout, plus this project's pure-Python needs: pydantic (+ pydantic-core,
# annotated-types, typing-inspection), torch-pruning, threadpoolctl, onnx, onnxscript (+ onnx-ir,
# ml-dtypes), onnxruntime and (for the Hugging Face export test) transformers + tokenizers. The project's .venv is
# used when it works; otherwise python3, with wheels from .whl/ (if present) installed into
# /tmp/site without network. torchao is optional: the quantization bench reports its
# candidates as unavailable without it. Budget: about 8 minutes on one GPU.
#
# ONNX Runtime's CUDA provider is in onnxruntime-gpu (the ort-cuda extra), not in the CPU wheel
# that `make venv` installs; both install the `onnxruntime` module. Unless the Python already
# has the provider, the script puts the pinned onnxruntime-gpu into a throwaway directory
# (/tmp/ort-cuda, ahead on PYTHONPATH for this run only): from a wheel in .whl/ if one is there,
# else from PyPI. Neither works on this workplace's device machine: it reaches no registry, and
# the wheel (about 244 MiB) is over the 64 MiB a call may carry; there the CUDA-provider tests
# skip, naming the missing wheel, and the export tests check the CPU provider's notes instead.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-bench/out/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

PY=.venv/bin/python
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    PY=python3
    # onnxruntime-gpu, if carried, goes to its own directory below, not here.
    wheels=$(ls .whl/*.whl 2>/dev/null | grep -v '/onnxruntime_gpu-')
    if [ -n "$wheels" ]; then
        # shellcheck disable=SC2086 # one argument per wheel
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site $wheels || exit 1
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # The project is not installed there: import its job package from the source tree.
    export PYTHONPATH="$PWD/optimizer_job/src${PYTHONPATH:+:$PYTHONPATH}"
fi

# The pin of the ort-cuda extra, e.g. onnxruntime-gpu==1.31.1.
ORT_CUDA=$(sed -n 's/^ *"\(onnxruntime-gpu==[^"]*\)",\{0,1\}$/\1/p' pyproject.toml)
has_cuda_provider() {
    "$PY" -c "import onnxruntime as o, sys; \
sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" >/dev/null 2>&1
}
if ! has_cuda_provider; then
    rm -rf /tmp/ort-cuda
    wheel=$(ls .whl/onnxruntime_gpu-*.whl 2>/dev/null | head -n 1)
    installed=0
    for pip in "$PY -m pip" "python3 -m pip"; do
        if [ -n "$wheel" ]; then
            $pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/ort-cuda \
                "$wheel" && installed=1 && break
        else
            timeout 300 $pip install -q --no-deps --no-compile --target /tmp/ort-cuda \
                "$ORT_CUDA" && installed=1 && break
        fi
    done >"$OUT/ort_cuda_install.txt" 2>&1
    if [ "$installed" = 1 ]; then
        export PYTHONPATH="/tmp/ort-cuda${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "onnxruntime-gpu ($ORT_CUDA) could not be installed (no registry, no wheel in" \
            ".whl/): the CUDA execution provider tests skip" | tee -a "$OUT/ort_cuda_install.txt"
    fi
fi

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"
    "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, \
'providers', o.get_available_providers())"
    nproc
} 2>&1 | tee "$OUT/machine.txt"

status=0
timeout 240 "$PY" -m pytest -p no:cacheprovider -q -m gpu tests/gpu 2>&1 \
    | tee "$OUT/gpu_tests.txt" || status=1
timeout 240 "$PY" bench/prune_bench.py --device cuda --json "$OUT/prune_cuda.json" 2>&1 \
    | tee "$OUT/prune_cuda.txt" || status=1
timeout 120 "$PY" bench/quantize_bench.py --device cuda --json "$OUT/quantize_cuda.json" 2>&1 \
    | tee "$OUT/quantize_cuda.txt" || status=1
# NCCL path of optimizer_job.training.fit (DDP + DistributedSampler): 1 rank always, and one
# rank per GPU where there are several. On a 1-GPU machine this checks that the NCCL process
# group, the DDP wrapper on CUDA and the sharded sampler run; the speedup needs >= 2 GPUs.
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
workers="1"
[ "${gpus:-0}" -ge 2 ] && workers="1 $gpus"
timeout 150 "$PY" bench/distributed_bench.py --device cuda --workers $workers --rounds 2 \
    --rows 200000 --epochs 2 --batch 1024 --json "$OUT/distributed_cuda.json" 2>&1 \
    | tee "$OUT/distributed_cuda.txt" || status=1
exit "$status"
