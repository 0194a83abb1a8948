"""Texts for a Hugging Face model: a .jsonl file (one {"text": ..., "label": ...} per line), a .csv file (a text
column and an optional label column, with a header) or a .txt file (one text per line), tokenized with the model's
own tokenizer, padded and truncated to the sequence length being measured."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from deploycmp.core.errors import UsageError

SUFFIXES = (".jsonl", ".csv", ".txt")
TEXT_KEYS = ("text", "sentence", "content")
LABEL_KEYS = ("label", "labels")


def is_text(data: str) -> bool:
    return data.lower().endswith(SUFFIXES)


def read(path: Path) -> tuple[list[str], list | None]:
    """(texts, labels or None) of a .jsonl, .csv or .txt file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--data {path}: cannot be read as UTF-8 text: {e}") from e
    if path.suffix.lower() == ".txt":
        return [line for line in raw.splitlines() if line.strip()], None
    if path.suffix.lower() == ".jsonl":
        try:
            records = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as e:
            raise UsageError(f"--data {path}: a line is not JSON: {e}") from e
    else:
        records = list(csv.DictReader(raw.splitlines()))
    if not records or not all(isinstance(r, dict) for r in records):
        raise UsageError(f"--data {path}: expected one record per line with a text field ({', '.join(TEXT_KEYS)})")
    text_key = next((k for k in TEXT_KEYS if k in records[0]), None)
    if text_key is None:
        raise UsageError(f"--data {path}: no text field ({', '.join(TEXT_KEYS)}) in {sorted(records[0])}")
    label_key = next((k for k in LABEL_KEYS if k in records[0]), None)
    texts = [str(r.get(text_key) or "") for r in records]
    if label_key is None:
        return texts, None
    try:
        labels = [int(r[label_key]) for r in records]
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"--data {path}: every record needs an integer {label_key!r} (a class index): {e}") from e
    return texts, labels


def load(data: str, tokenizer, inputs: list, per_sample: dict, samples: int):
    """(feed, labels or None, record for the manifest): the first `samples` texts as the inputs' token arrays."""
    from deploycmp.core.specs import numpy_dtype

    if tokenizer is None:
        raise UsageError(f"--data {data}: texts need the model's tokenizer; only a Hugging Face model (a "
                         "save_pretrained directory or hf:ID) brings one")
    texts, labels = read(Path(data))
    texts = texts[:samples]
    lengths = {per_sample[s.name][0] for s in inputs if per_sample[s.name]}
    if len(lengths) != 1:
        raise UsageError(f"--data {data}: texts need inputs of one sequence length, not {sorted(lengths)}")
    length = lengths.pop()
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    feed = {}
    for s in inputs:
        if s.name not in encoded:
            raise UsageError(f"--data {data}: the tokenizer gives {', '.join(encoded)}, not the model's input {s.name}")
        feed[s.name] = np.asarray(encoded[s.name]).astype(numpy_dtype(s.dtype))
    y = np.asarray(labels[:samples], dtype=np.int64) if labels is not None else None
    truncated = sum(len(ids) > length for ids in tokenizer(texts)["input_ids"])
    info = {"kind": "text", "path": str(data), "tokenizer": type(tokenizer).__name__, "sequence": length,
            "truncated": truncated}
    return feed, y, info
