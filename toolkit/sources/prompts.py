"""The token ids a language model is measured on: prompts (cut to each prompt length) and an evaluation text (for
teacher-forced drift and perplexity), from --data or from text that ships with Python itself, tokenized with the
model's own tokenizer. Every path is fed these same ids."""
from __future__ import annotations

import json
from pathlib import Path

from deploycmp.core.errors import UsageError

SUFFIXES = (".txt", ".jsonl")
PROMPT_KEYS = ("prompt", "text")


def builtin_text() -> tuple[str, str]:
    """(prompt text, evaluation text) that every Python has offline: the Zen of Python and the docstrings of a few
    standard library modules."""
    import codecs
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import this
    import collections
    import functools
    import json as json_module

    zen = codecs.decode(this.s, "rot13")
    docs = "\n\n".join(m.__doc__.strip() for m in (json_module, collections, functools, contextlib) if m.__doc__)
    return zen, docs


def read_texts(data: str) -> tuple[str, str]:
    """(prompt text, evaluation text) of --data: a .txt file is both; a .jsonl file's "prompt" fields are the
    prompts and its "text" fields (else the prompts) the evaluation text."""
    if data == "random":
        return builtin_text()
    path = Path(data)
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--data {data}: a model that generates takes prompts as .txt or .jsonl "
                         f"({{\"prompt\": ...}} or {{\"text\": ...}} per line), or no --data for the built-in text")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--data {data}: cannot be read as UTF-8 text: {e}") from e
    if path.suffix.lower() == ".txt":
        if not raw.strip():
            raise UsageError(f"--data {data}: the file holds no text")
        return raw, raw
    try:
        records = [json.loads(line) for line in raw.splitlines() if line.strip()]
    except ValueError as e:
        raise UsageError(f"--data {data}: a line is not JSON: {e}") from e
    if not records or not all(isinstance(r, dict) and any(isinstance(r.get(k), str) for k in PROMPT_KEYS)
                              for r in records):
        raise UsageError(f"--data {data}: expected one JSON object per line with a \"prompt\" or \"text\" string")
    prompts = [r["prompt"] for r in records if isinstance(r.get("prompt"), str)]
    texts = [r["text"] for r in records if isinstance(r.get("text"), str)]
    return "\n".join(prompts or texts), "\n".join(texts or prompts)


def ids_of(tokenizer, text: str, length: int, what: str) -> list[int]:
    """`length` token ids of `text` (with the tokenizer's beginning-of-sequence token where it adds one), the text
    repeated when it is shorter."""
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise UsageError(f"the {what} text tokenizes to no tokens")
    body = list(tokenizer(text, add_special_tokens=False)["input_ids"]) or ids
    while len(ids) < length:
        ids += body
    return [int(i) for i in ids[:length]]
