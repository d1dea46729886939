"""A tiny Hugging Face text classifier and its data, built locally (no hub, no downloads).

``make_text_example(out)`` writes::

    model/            save_pretrained of a 2-layer BERT (random weights) with a WordPiece
                      tokenizer trained here by `tokenizers`, plus a MANIFEST (sha256sum)
    data/*.parquet    columns "text" and "label": reference, current, holdout, and a
                      MANIFEST beside them

The task: is a sentence mostly made of "good" or "bad" words (label 1 / 0)? ``current``
and ``holdout`` use more filler words and some words the tokenizer never saw, a shift in
both the text statistics and the model's predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from optimizer_job.manifest import write_manifest

GOOD = ["good", "great", "fine", "happy", "bright", "calm", "kind", "warm", "clean", "fast"]
BAD = ["bad", "poor", "sad", "dark", "angry", "cold", "dirty", "slow", "broken", "rude"]
FILLER = ["the", "a", "day", "was", "very", "and", "it", "felt", "quite", "so", "this", "place"]
UNSEEN = ["zyxt", "qwopa", "vrumbl", "glorpt", "snezzy"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 24


def sentences(n: int, rng: np.random.Generator, *, shifted: bool) -> tuple[list[str], np.ndarray]:
    labels = rng.integers(0, 2, n)
    texts = []
    for label in labels:
        major, minor = (GOOD, BAD) if label == 1 else (BAD, GOOD)
        words = list(rng.choice(major, 4)) + list(rng.choice(minor, 1))
        words += list(rng.choice(FILLER, 6 if shifted else 3))
        if shifted:
            words += list(rng.choice(UNSEEN, 2))
        rng.shuffle(words)
        texts.append(" ".join(str(w) for w in words))
    return texts, labels.astype(np.int64)


def train_tokenizer(texts: list[str]) -> Any:
    """A WordPiece tokenizer trained on ``texts`` by `tokenizers`, as a Transformers
    fast BERT tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))  # noqa: S106 - a token, not a password
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=SPECIAL)
    tokenizer.train_from_iterator(texts, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return BertTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",  # noqa: S106
        pad_token="[PAD]",  # noqa: S106
        cls_token="[CLS]",  # noqa: S106
        sep_token="[SEP]",  # noqa: S106
        mask_token="[MASK]",  # noqa: S106
        model_max_length=512,
    )


def tiny_bert(vocab_size: int, pad_token_id: int, *, seed: int = 0, **sizes: int) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        hidden_size=sizes.get("hidden_size", 32),
        num_hidden_layers=sizes.get("num_hidden_layers", 2),
        num_attention_heads=sizes.get("num_attention_heads", 2),
        intermediate_size=sizes.get("intermediate_size", 64),
        max_position_embeddings=sizes.get("max_position_embeddings", 64),
        num_labels=2,
        pad_token_id=pad_token_id,
    )
    return BertForSequenceClassification(config)


def _write(texts: list[str], labels: np.ndarray, path: Path) -> None:
    pq.write_table(pa.table({"text": texts, "label": labels}), path)


def make_text_example(out: Path, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    reference = sentences(400, rng, shifted=False)
    current = sentences(300, rng, shifted=True)
    holdout = sentences(200, rng, shifted=True)
    tokenizer = train_tokenizer(reference[0])
    model = tiny_bert(len(tokenizer), int(tokenizer.pad_token_id), seed=seed)
    model_dir = out / "model"
    model.save_pretrained(model_dir)  # config.json + model.safetensors
    tokenizer.save_pretrained(model_dir)
    write_manifest(model_dir)
    data = out / "data"
    data.mkdir(exist_ok=True)
    for name, (texts, labels) in (
        ("reference", reference),
        ("current", current),
        ("holdout", holdout),
    ):
        _write(texts, labels, data / f"{name}.parquet")
    write_manifest(data)
    return {"out": str(out), "model": str(model_dir), "data": str(data), "max_length": MAX_LENGTH}
