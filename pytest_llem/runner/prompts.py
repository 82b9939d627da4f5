"""Prompt sources and their tokenisation, done once so every engine gets identical token ids.

A study names its prompts either as the built-in set ``llem-prompts`` (64 varied English
requests shipped in ``pytest_llem/data``) or as a file: ``.txt`` (one prompt per non-empty line)
or ``.jsonl`` (one JSON object per line, the prompt under a named field). This module is pure:
transformers is never imported here; :func:`tokenize_prompts` only calls the tokenizer it is
given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_llem.errors import PromptSourceError

BUILTIN_PROMPT_SETS = ("llem-prompts",)




def load_prompt_texts(
    source: str,
    n_prompts: int | None,
    field: str = "text",
    base_dir: Path | None = None,
) -> list[str]:
    """Read the prompt texts of ``source``, exactly ``n_prompts`` of them (all when None).

    ``source`` is a built-in set name or a path; a relative path is resolved against
    ``base_dir`` (the study file's directory), so a study means the same thing from any working
    directory. When ``n_prompts`` exceeds the prompts available, the list is cycled in order
    (prompt ``i`` is ``texts[i % len(texts)]``), deterministically, so a large workload can be
    built from a small file; repeated prompts are then expected.
    """
    if n_prompts is not None and n_prompts < 1:
        raise PromptSourceError(f"n_prompts must be at least 1, got {n_prompts}")
    texts = _read_source(source, field, base_dir)
    if n_prompts is None:
        return texts
    return [texts[i % len(texts)] for i in range(n_prompts)]


def tokenize_prompts(tokenizer: Any, texts: Sequence[str], max_input_tokens: int) -> list[list[int]]:
    """Tokenise each prompt once, unpadded, keeping its first ``max_input_tokens`` ids.

    The tokenizer's beginning-of-sequence token is prepended when the tokenizer adds one by
    default (Llama, Mistral, Gemma); other special tokens are not added, because some tokenizers
    (T5, ByT5) would *append* EOS, telling a decoder-only model the text has already ended.
    Truncation keeps the start of the prompt (and its BOS); it happens here, once, so no engine
    truncates differently from another.
    """
    if max_input_tokens < 1:
        raise ValueError(f"max_input_tokens must be at least 1, got {max_input_tokens}")
    prefix = _bos_prefix(tokenizer)
    result: list[list[int]] = []
    for index, text in enumerate(texts):
        body = [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]
        if not body:
            raise ValueError(f"prompt {index} tokenises to no tokens: {text[:60]!r}")
        result.append((prefix + body)[:max_input_tokens])
    return result


def _bos_prefix(tokenizer: Any) -> list[int]:
    """``[bos]`` when the tokenizer puts BOS in front of text by default, else ``[]``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    probe = tokenizer.encode("a", add_special_tokens=True)
    return [int(bos)] if len(probe) > 0 and int(probe[0]) == int(bos) else []


def _read_source(source: str, field: str, base_dir: Path | None) -> list[str]:
    if source in BUILTIN_PROMPT_SETS:
        data = resources.files("pytest_llem").joinpath("data").joinpath(f"{source}.jsonl")
        return _parse_jsonl(data.read_text(encoding="utf-8"), f"built-in {source}", "text")
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        builtin = ", ".join(BUILTIN_PROMPT_SETS)
        raise PromptSourceError(
            f"prompt source {source!r} is neither a built-in set ({builtin}) "
            "nor a .txt or .jsonl file"
        )
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptSourceError(f"prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptSourceError(f"cannot read prompt file {path}: {exc}") from None
    if suffix == ".txt":
        texts = [line.strip() for line in content.splitlines() if line.strip()]
    else:
        texts = _parse_jsonl(content, str(path), field)
    if not texts:
        raise PromptSourceError(f"prompt file {path} holds no prompts")
    return texts


def _parse_jsonl(content: str, where: str, field: str) -> list[str]:
    """Parse one JSON object per non-empty line; every line must hold a non-empty string field."""
    texts: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise PromptSourceError(f"{where}:{number}: not valid JSON ({exc})") from None
        if not isinstance(row, dict) or field not in row:
            keys = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
            raise PromptSourceError(f"{where}:{number}: no field {field!r} (found: {keys})")
        value = row[field]
        if not isinstance(value, str) or not value.strip():
            raise PromptSourceError(f"{where}:{number}: field {field!r} is not a non-empty string")
        texts.append(value)
    return texts
