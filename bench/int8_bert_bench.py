"""int8 on a BERT-base-sized classifier, CPU: the job's quantize stage against the libraries.

A BERT-base-sized sequence classifier (12 layers, hidden 768, 12 heads, MLP 3072, random
weights: latency does not depend on them), wrapped as the job wraps it
(``optimizer_job.hf.SequenceClassifier``), timed side by side in interleaved rounds at
sequence 128 and each batch size asked for:

- float32;
- the job's int8 stage (``quantize.quantize_int8``) with its CPU kernel (PyTorch's dynamic
  quantized linear fed the stage's per-channel int8 weights);
- the same stage forced onto its ``torch._int_mm`` path (what the stage ran before);
- ``torch.ao.quantization.quantize_dynamic`` (deprecated, still in torch 2.13);
- torchao ``Int8DynamicActivationInt8WeightConfig`` in eager mode (the pinned torchao).

Besides the speed it prints how far each int8 model's logits are from float32's on the
timed batch (largest absolute difference, share of equal argmax).

    nice -n 10 .venv/bin/python bench/int8_bert_bench.py --batches 1 8 --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn

from _timing import interleaved_latency, load_average, machine
from optimizer_job import hf
from optimizer_job.strategies import quantize


def candidates(fp32: nn.Module, skip_torchao: bool) -> dict[str, nn.Module]:
    models: dict[str, nn.Module] = {"float32": fp32}
    stage, _ = quantize.quantize_int8(fp32)
    models["int8 stage (packed CPU kernel)"] = stage
    old, _ = quantize.quantize_int8(fp32)
    for layer in old.modules():
        if isinstance(layer, quantize.Int8DynamicLinear):
            layer.use_packed = False
    models["int8 stage, torch._int_mm path"] = old
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models["torch.ao quantize_dynamic"] = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(fp32), {nn.Linear}, dtype=torch.qint8
        )
    if not skip_torchao:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        torchao_model = copy.deepcopy(fp32)
        quantize_(torchao_model, Int8DynamicActivationInt8WeightConfig())
        models["torchao int8 dynamic (eager)"] = torchao_model
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-torchao", action="store_true")
    args = parser.parse_args()
    from transformers import BertConfig, BertForSequenceClassification

    print(f"machine: {machine()}; threads {torch.get_num_threads()}")
    print(f"load average at start {load_average()}")
    torch.manual_seed(0)
    config = BertConfig(num_labels=2)  # bert-base sizes
    fp32 = hf.SequenceClassifier(BertForSequenceClassification(config)).eval()
    models = candidates(fp32, args.skip_torchao)
    for batch in args.batches:
        ids = torch.randint(5, config.vocab_size, (batch, args.seq)).to(torch.float32)
        calls: dict[str, Callable[[], object]] = {
            name: (lambda m=model, i=ids: m(i)) for name, model in models.items()
        }
        result = interleaved_latency(
            calls, torch.device("cpu"), rounds=args.rounds, calls_per_round=1, warmup=1
        )
        with torch.inference_mode():
            reference = fp32(ids)
            print(f"batch {batch}, sequence {args.seq}:")
            for name, latency in result.items():
                ratio = result["float32"].median_ms / latency.median_ms
                logits = models[name](ids)
                diff = float((logits - reference).abs().max())
                agree = float((logits.argmax(1) == reference.argmax(1)).float().mean())
                print(
                    f"  {name:32} {latency.text()}  {ratio:.2f}x vs float32;"
                    f" max |logit diff| {diff:.4f}, argmax agreement {agree:.2f}"
                )
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
