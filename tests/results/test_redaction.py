"""results/redaction.py: which variables are secret, whole-token matching, JSON, files and reports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import get_args

import pytest

from pytest_llem.config.engines import EngineName
from pytest_llem.results import redaction
from pytest_llem.results.manifest import Status as ManifestStatus
from pytest_llem.results.redaction import (
    REDACTED,
    VOCABULARY,
    WELL_KNOWN_SECRETS,
    is_secret_name,
    scrub,
    scrub_file,
    scrub_report,
    scrub_text,
    secret_pattern,
    secret_values,
)
from pytest_llem.results.writer import write_json_atomic
from pytest_llem.verdicts.compare import Status as CompareStatus


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove any secret-looking variables the host environment happens to have."""
    for name in list(os.environ):
        if is_secret_name(name):
            monkeypatch.delenv(name)


def _text(value: str, text: str) -> str:
    pattern = secret_pattern([value])
    assert pattern is not None
    return scrub_text(text, pattern)


# --- which variables are secret -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN", "hf_token", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "GITHUB_TOKEN", "WANDB_API_KEY",
        "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "DB_PASSWORD", "MYSQL_PASSWD", "GPG_PASSPHRASE",
        "SERVICE_CREDENTIALS", "SSH_PRIVATE_KEY", "MINIO_ACCESS_KEY", "OPENAI_APIKEY", "CLIENT_SECRET",
    ],
)  # fmt: skip
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "MAX_NEW_TOKENS", "PATH", "HOME", "CUDA_VISIBLE_DEVICES", "KEYBOARD"])
def test_names_that_are_not_secret(name: str) -> None:
    # TOKENIZERS_PARALLELISM=false is set for every cell: "false" must not become a secret.
    assert not is_secret_name(name)


def test_every_well_known_secret_matches_the_name_pattern() -> None:
    """Tests clearing the environment of secrets use the pattern alone; no well-known name may escape it."""
    assert [n for n in WELL_KNOWN_SECRETS if not redaction.SECRET_NAME.search(n)] == []


def test_secret_values_filter_by_name_length_and_vocabulary(no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    monkeypatch.setenv("SERVICE_CREDENTIALS", "  cred-123456\n")  # surrounding whitespace is not the secret
    monkeypatch.setenv("X_PASSWD", "tiny")  # 4 characters: a secret
    monkeypatch.setenv("Y_PASSWD", "abc")  # 3: a flag, not a secret
    monkeypatch.setenv("DB_PASSWORD", "Completed")  # a status word, in any case
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "true")
    monkeypatch.setenv("TOKEN_TTL_SECRET", "3600")  # a short number: a setting
    monkeypatch.setenv("PIN_SECRET", "73910284")  # a long number: a secret
    monkeypatch.setenv("MY_LOG_DIR", "/opt/not/secret")
    values = secret_values()
    assert values == ["hf_abcdefghijklmnop", "cred-123456", "73910284", "tiny"]


def test_no_secret_variables_means_no_pattern(no_secrets: None) -> None:
    assert secret_pattern() is None
    data = {"a": ("b",), "status": "completed"}
    assert scrub(data) is data
    assert scrub_text("anything at all") == "anything at all"


# --- whole-token matching -------------------------------------------------------------------


def test_a_value_that_is_an_ordinary_word_never_breaks_status_words(no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """DB_PASSWORD=completed redacted every status: the study read as 0 completed."""
    monkeypatch.setenv("DB_PASSWORD", "completed")
    manifest = {
        "experiments": [{"experiment_id": "m-transformers::c0", "status": "completed", "verdict": "passed"}],
        "summary": {"completed": 1, "failed": 0},
    }
    assert scrub(manifest) == manifest
    assert scrub_text("2 completed, 1 failed") == "2 completed, 1 failed"


@pytest.mark.parametrize("word", sorted({*get_args(ManifestStatus), *get_args(CompareStatus), *get_args(EngineName)}))
def test_the_words_results_are_written_in_are_never_secrets(word: str) -> None:
    assert word in VOCABULARY
    assert secret_values([("DB_PASSWORD", word), ("HF_TOKEN", word.upper())]) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hunter2", REDACTED),
        ("pw=hunter2 next", f"pw={REDACTED} next"),
        ("/data/hunter2/x.jsonl", f"/data/{REDACTED}/x.jsonl"),
        ("'hunter2'", f"'{REDACTED}'"),
        ("hunter2-backup", f"{REDACTED}-backup"),
        ("hunter22", "hunter22"),  # a longer token
        ("xhunter2", "xhunter2"),
        ("hunter2_old", "hunter2_old"),
        ("hunter2\nhunter2", f"{REDACTED}\n{REDACTED}"),
    ],
)
def test_a_value_is_replaced_only_as_a_whole_token(text: str, expected: str) -> None:
    assert _text("hunter2", text) == expected


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        ("a.b*c+d", "x a.b*c+d y aXb*c+d", f"x {REDACTED} y aXb*c+d"),  # dots are no wildcards
        ("p@ss(w)rd[1]$", "p@ss(w)rd[1]$", REDACTED),
        ("-----key-----", "pre-----key-----post", f"pre{REDACTED}post"),  # edges that are not word characters
        ("back\\slash", "a back\\slash b", f"a {REDACTED} b"),
        ("correct horse battery", "said correct horse battery!", f"said {REDACTED}!"),
        ("пароль123", "x=пароль123", f"x={REDACTED}"),
        ("пароль123", "мойпароль123", "мойпароль123"),  # word characters beyond ASCII bound too
    ],
)
def test_values_with_regex_and_non_word_characters(value: str, text: str, expected: str) -> None:
    assert _text(value, text) == expected


def test_a_secret_containing_another_is_replaced_whole() -> None:
    pattern = secret_pattern(["abcdef", "abcdef-long-tail"])
    assert pattern is not None
    assert scrub_text("pw=abcdef-long-tail and abcdef", pattern) == f"pw={REDACTED} and {REDACTED}"


def test_short_values() -> None:
    assert _text("tiny", "a tiny cat, tinyurl") == f"a {REDACTED} cat, tinyurl"
    assert secret_pattern(["abc", "1234567"]) is None  # too short; a short number


# --- JSON -----------------------------------------------------------------------------------


def test_json_values_and_data_keys_are_scrubbed_field_names_are_not(no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    monkeypatch.setenv("DB_PASSWORD", "model")  # a field name: a key stays, a value is redacted
    data = {
        "model": "model",
        "dataset": {"source": "/data/hf_abcdefghijklmnop/x.jsonl", "n_prompts": 4},
        "groups": {"/data/hf_abcdefghijklmnop/x.jsonl": ["a", ("hf_abcdefghijklmnop", 3, None, 1.5, True)]},
        "model_name": "org/model-7b",
    }
    out = scrub(data)
    assert out == {
        "model": REDACTED,
        "dataset": {"source": f"/data/{REDACTED}/x.jsonl", "n_prompts": 4},
        "groups": {f"/data/{REDACTED}/x.jsonl": ["a", [REDACTED, 3, None, 1.5, True]]},
        "model_name": f"org/{REDACTED}-7b",
    }
    assert data["dataset"]["source"] == "/data/hf_abcdefghijklmnop/x.jsonl"  # type: ignore[index]


def test_written_json_holds_no_secret(tmp_path: Path, no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", 'we"ird\\key')  # escaped in JSON text: scrubbed before dumping
    target = tmp_path / "effective_config.json"
    write_json_atomic(target, {"cmd": ['--key=we"ird\\key'], "status": "completed"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"cmd": [f"--key={REDACTED}"], "status": "completed"}


# --- files ----------------------------------------------------------------------------------


def test_scrub_file_rewrites_a_log_holding_a_secret(tmp_path: Path, no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    log = tmp_path / "child.log"
    raw = b"loading /data/hf_secretvalue/x.jsonl\n\xff\xfe not utf-8\nhf_secretvalues\n"
    log.write_bytes(raw)
    log.chmod(0o640)
    assert scrub_file(log) is True
    assert log.stat().st_mode & 0o777 == 0o640
    assert log.read_bytes() == b"loading /data/<redacted>/x.jsonl\n\xff\xfe not utf-8\nhf_secretvalues\n"
    assert [p.name for p in tmp_path.iterdir()] == ["child.log"], "no temporary file left behind"


def test_scrub_file_leaves_clean_and_missing_files_alone(
    tmp_path: Path, no_secrets: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "child.log"
    log.write_text("nothing secret\n", encoding="utf-8")
    assert scrub_file(log) is False  # no secret variable at all
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    before = log.stat()
    assert scrub_file(log) is False
    assert log.stat().st_ino == before.st_ino and log.read_text(encoding="utf-8") == "nothing secret\n"
    assert scrub_file(tmp_path / "never-written.log") is False


# --- reports --------------------------------------------------------------------------------


def _report(longrepr: object) -> pytest.TestReport:
    return pytest.TestReport(
        "s.llem.yaml::c::c0", ("s.llem.yaml", 0, "c cycle 0"), {}, "failed", longrepr, "call",  # type: ignore[arg-type]
        sections=[("Captured log of the cell's process (tail)", "open /data/hf_secretvalue/x"), ("Captured stdout call", "ok")],
    )  # fmt: skip


def test_a_failure_message_and_sections_are_redacted(no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    report = _report("CellCrashed: prompt file not found: /data/hf_secretvalue/x.jsonl")
    scrub_report(report)
    assert report.longrepr == f"CellCrashed: prompt file not found: /data/{REDACTED}/x.jsonl"
    assert report.sections == [
        ("Captured log of the cell's process (tail)", f"open /data/{REDACTED}/x"),
        ("Captured stdout call", "ok"),
    ]


def test_a_rich_failure_holding_a_secret_becomes_its_redacted_text(
    pytester: pytest.Pytester, no_secrets: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    pytester.makepyfile(test_x="def test_x():\n    assert 'hf_secretvalue' == 'other'\n")
    (report,) = [r for r in pytester.inline_run().getreports("pytest_runtest_logreport") if r.when == "call"]
    assert "hf_secretvalue" in str(report.longrepr)
    scrub_report(report)
    text = str(report.longrepr)
    assert "hf_secretvalue" not in text and f"assert '{REDACTED}' == 'other'" in text


def test_a_skip_reason_is_redacted(no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    report = _report(("/data/hf_secretvalue/s.llem.yaml", 3, "Skipped: no file /data/hf_secretvalue/x"))
    scrub_report(report)
    assert report.longrepr == (f"/data/{REDACTED}/s.llem.yaml", 3, f"Skipped: no file /data/{REDACTED}/x")


def test_reports_are_left_alone_without_secrets(no_secrets: None) -> None:
    report = _report("CellCrashed: /data/hf_secretvalue/x")
    sections = list(report.sections)
    scrub_report(report)
    assert report.longrepr == "CellCrashed: /data/hf_secretvalue/x" and report.sections == sections
