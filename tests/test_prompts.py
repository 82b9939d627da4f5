"""Prompt sources (built-in, .txt, .jsonl) and the one-time tokenisation every engine shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.errors import LlemError, PromptSourceError
from pytest_llem.runner.prompts import load_prompt_texts, tokenize_prompts


class FakeTokenizer:
    """Whitespace tokenizer with a BOS it adds by default, like Llama's."""

    bos_token_id: int | None = 1

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [100 + len(word) for word in text.split()]
        if add_special_tokens and self.bos_token_id is not None:
            return [self.bos_token_id, *ids]
        return ids


class NoBosTokenizer(FakeTokenizer):
    bos_token_id = None


class BosButNotAddedTokenizer(FakeTokenizer):
    """Has a BOS token but does not add it (like Qwen's)."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [100 + len(word) for word in text.split()]


# -- sources ---------------------------------------------------------------------------------


def test_builtin_prompt_set_loads() -> None:
    texts = load_prompt_texts("llem-prompts", None)
    assert len(texts) == 64
    assert len(set(texts)) == 64
    assert all(isinstance(t, str) and t.strip() for t in texts)
    lengths = sorted(len(t) for t in texts)
    assert lengths[0] < 40 and lengths[-1] > 300  # varied lengths on purpose


def test_fewer_prompts_take_the_first_ones() -> None:
    assert load_prompt_texts("llem-prompts", 5) == load_prompt_texts("llem-prompts", None)[:5]


def test_more_prompts_than_available_cycle_in_order(tmp_path: Path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("one\ntwo\nthree\n")
    assert load_prompt_texts(str(source), 7) == ["one", "two", "three", "one", "two", "three", "one"]
    assert len(load_prompt_texts("llem-prompts", 200)) == 200


def test_txt_skips_blank_lines_and_strips(tmp_path: Path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("  first prompt  \n\n   \nsecond prompt\n")
    assert load_prompt_texts(str(source), None) == ["first prompt", "second prompt"]


def test_jsonl_with_a_named_field(tmp_path: Path) -> None:
    source = tmp_path / "p.jsonl"
    rows = [{"question": "why?", "id": 1}, {"question": "how?", "id": 2}]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_prompt_texts(str(source), None, field="question") == ["why?", "how?"]


def test_relative_paths_resolve_against_the_study_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.txt").write_text("hello\n")
    assert load_prompt_texts("data/p.txt", None, base_dir=tmp_path) == ["hello"]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PromptSourceError, match=r"not found: .*nowhere\.jsonl"):
        load_prompt_texts("nowhere.jsonl", None, base_dir=tmp_path)


def test_missing_field_names_field_line_and_keys(tmp_path: Path) -> None:
    source = tmp_path / "p.jsonl"
    source.write_text('{"text": "ok"}\n{"prompt": "no text here"}\n')
    with pytest.raises(PromptSourceError, match=r"p\.jsonl:2: no field 'text' \(found: 'prompt'\)"):
        load_prompt_texts(str(source), None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{broken\n", r"p\.jsonl:1: not valid JSON"),
        ('{"text": 3}\n', r"p\.jsonl:1: field 'text' is not a non-empty string"),
        ('{"text": "  "}\n', r"p\.jsonl:1: field 'text' is not a non-empty string"),
        ('["text"]\n', r"p\.jsonl:1: no field 'text' \(found: list\)"),
        ("\n\n", r"holds no prompts"),
    ],
)
def test_bad_jsonl_content(tmp_path: Path, content: str, message: str) -> None:
    source = tmp_path / "p.jsonl"
    source.write_text(content)
    with pytest.raises(PromptSourceError, match=message):
        load_prompt_texts(str(source), None)


def test_unknown_source_kind(tmp_path: Path) -> None:
    with pytest.raises(PromptSourceError, match="neither a built-in set"):
        load_prompt_texts("prompts.csv", None, base_dir=tmp_path)


def test_n_prompts_must_be_positive() -> None:
    with pytest.raises(PromptSourceError, match="at least 1"):
        load_prompt_texts("llem-prompts", 0)


def test_prompt_source_error_is_both_llem_and_value_error() -> None:
    assert issubclass(PromptSourceError, LlemError)
    assert issubclass(PromptSourceError, ValueError)


# -- tokenisation ----------------------------------------------------------------------------


def test_tokenize_prepends_bos_only_where_the_tokenizer_does() -> None:
    assert tokenize_prompts(FakeTokenizer(), ["a bb ccc"], 16) == [[1, 101, 102, 103]]
    assert tokenize_prompts(NoBosTokenizer(), ["a bb ccc"], 16) == [[101, 102, 103]]
    assert tokenize_prompts(BosButNotAddedTokenizer(), ["a bb ccc"], 16) == [[101, 102, 103]]


def test_tokenize_truncates_to_the_first_max_input_tokens() -> None:
    result = tokenize_prompts(FakeTokenizer(), ["a bb ccc dddd", "a"], 3)
    assert result == [[1, 101, 102], [1, 101]]


@pytest.mark.parametrize("text", ["", "   "])
def test_tokenize_refuses_empty_prompts(text: str) -> None:
    with pytest.raises(ValueError, match="prompt 1 tokenises to no tokens"):
        tokenize_prompts(FakeTokenizer(), ["fine", text], 8)


def test_tokenize_refuses_nonpositive_limit() -> None:
    with pytest.raises(ValueError, match="max_input_tokens"):
        tokenize_prompts(FakeTokenizer(), ["fine"], 0)


def test_byte_tokenizer_gets_no_trailing_eos() -> None:
    """ByT5 appends EOS with special tokens on; a prompt must not end in EOS."""
    transformers = pytest.importorskip("transformers")
    tokenizer: Any = transformers.ByT5Tokenizer()
    texts = load_prompt_texts("llem-prompts", 8)
    ids = tokenize_prompts(tokenizer, texts, 64)
    assert all(tokenizer.eos_token_id not in row for row in ids)
    assert all(len(row) == min(64, len(text.encode("utf-8"))) for row, text in zip(ids, texts))
    assert tokenizer.decode(ids[0]) == texts[0][:64]
