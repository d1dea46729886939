#!/usr/bin/env bash
# One prepared run for an accelerator machine (issue 4, section 5): the CUDA tests of the
# prune / distill / quantize stages and the export stage (tests/gpu/test_onnx_cuda.py: a
# GPU-trained model exported and verified; a Hugging Face BERT on the GPU exported with its
# token inputs and ORT dynamic int8; the ORT CUDA execution provider where the installed
# onnxruntime wheel has it - the locked wheel is the CPU one), then the pruning and quantization benchmarks on the GPU,
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
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-bench/out/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

PY=.venv/bin/python
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    PY=python3
    if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # The project is not installed there: import its job package from the source tree.
    export PYTHONPATH="$PWD/optimizer_job/src${PYTHONPATH:+:$PYTHONPATH}"
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
