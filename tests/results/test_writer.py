"""results/writer.py: contained directory names, atomic writes, secret scrubbing, stamps."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pytest_llem.naming import sanitise
from pytest_llem.results import writer
from pytest_llem.results.writer import (
    REDACTED,
    cell_dir_name,
    contained,
    make_study_dir,
    scrub,
    utc_stamp,
    write_json_atomic,
    write_text_atomic,
)

HASH = "0123456789abcdef"

HOSTILE_MODELS = [
    "../../x",
    "..",
    "../",
    "/etc/passwd",
    "C:\\evil",
    "C:\\Windows\\..\\..\\System32",
    "a b::c=d[e]",
    "org/model..name/..",
    "a..b",
    "....",
    "x/../../../../y",
    "///",
    "\\\\\\",
    "",
    ".",
    " ",
    "~/.ssh/id_rsa",
    "$(rm -rf /)",
    "name\nwith\nnewlines\tand\ttabs",
    "null\x00byte",
    "模型/名字",
    "m" * 5000,
    "../" * 300 + "escape",
    "meta-llama/Llama-3.1-8B-Instruct",
]

CELL_NAME = re.compile(r"^(\d{3,})_(c\d+)_([\w.+-]+)-([\w.+-]+)_([0-9a-f]{16})$")


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove any secret-looking variables the host environment happens to have."""
    for name in list(os.environ):
        if writer._SECRET_NAME.search(name):
            monkeypatch.delenv(name)


# --- cell_dir_name + contained ------------------------------------------------------------


@pytest.mark.parametrize("model", HOSTILE_MODELS, ids=lambda m: repr(m)[:40])
@pytest.mark.parametrize("engine", ["transformers", "../vllm", "tensor/rt"])
def test_cell_dir_is_directly_inside_study_dir(tmp_path: Path, model: str, engine: str) -> None:
    study = tmp_path / "study"
    study.mkdir()
    name = cell_dir_name(7, "c2", model, engine, HASH)
    match = CELL_NAME.match(name)
    assert match, name
    engine_part = sanitise(engine)
    assert engine_part in ("transformers", "vllm", "tensor--rt")
    prefix, suffix = "007_c2_", f"-{engine_part}_{HASH}"
    assert name.startswith(prefix) and name.endswith(suffix), name
    model_part = name[len(prefix) : -len(suffix)]
    assert ".." not in name
    assert "/" not in name and "\\" not in name
    assert model_part and not model_part.startswith((".", "_", "-")) and not model_part.endswith((".", "_", "-"))
    assert len(model_part) <= 60
    assert len(name) < 255  # a valid file name on every common file system

    path = contained(study, name)
    assert path.parent == study.resolve()
    assert path.name == name
    path.mkdir()  # it really is creatable, and lands in the study dir
    assert [p.name for p in study.iterdir()] == [name]


def test_cell_dir_name_form_and_width() -> None:
    assert cell_dir_name(1, "c0", "org/model", "vllm", HASH) == f"001_c0_org--model-vllm_{HASH}"
    assert cell_dir_name(12, "c3", "m", "transformers", HASH, width=4).startswith("0012_c3_m-transformers_")
    # Trailing separators do not wipe the name out, and the tail keeps the distinctive part.
    assert cell_dir_name(1, "c0", "org/model/", "vllm", HASH) == f"001_c0_org--model-vllm_{HASH}"
    long_name = "org/" + "a" * 100 + "-Instruct"
    assert cell_dir_name(1, "c0", long_name, "vllm", HASH).split("_")[2].endswith("-Instruct-vllm")


def test_cell_dir_names_sort_in_run_order() -> None:
    names = [cell_dir_name(i, f"c{i % 2}", "m", "vllm", HASH) for i in range(1, 120)]
    assert sorted(names) == names


@pytest.mark.parametrize(
    "name",
    ["..", ".", "", "../x", "../../etc", "a/../..", "a/b", "/etc", "/tmp/x", "sub/child", "a/..", "./.."],
)
def test_contained_refuses_names_that_leave_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        contained(tmp_path, name)


def test_contained_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError):
        contained(root, "link")


def test_contained_accepts_plain_name_and_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    assert contained(alias, "001_c0_m-vllm_x") == real.resolve() / "001_c0_m-vllm_x"
    assert contained(real, "a..b") == real.resolve() / "a..b"  # '..' inside a name is not a component


# --- make_study_dir ---------------------------------------------------------------------


def test_make_study_dir_twice_same_stamp_gives_distinct_dirs(tmp_path: Path) -> None:
    root = tmp_path / "results"  # not created yet: make_study_dir creates it
    stamp = "2026-05-07T14-32-08"
    first = make_study_dir(root, "my study", stamp, "session-a")
    second = make_study_dir(root, "my study", stamp, "session-b")
    third = make_study_dir(root, "my study", stamp, "session-c")
    assert len({first, second, third}) == 3
    for path in (first, second, third):
        assert path.is_dir()
        assert path.parent == root.resolve()
    assert first.name == f"my_study_{stamp}"
    assert second.name == f"my_study_{stamp}-2"
    assert third.name == f"my_study_{stamp}-3"
    # Processes of one session (xdist workers) open the directory their session made.
    assert make_study_dir(root, "my study", stamp, "session-b") == second
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no staging directory is left behind"


def test_sessions_racing_for_one_stamp_never_share_a_directory(tmp_path: Path) -> None:
    # Two sessions of two workers each, all four processes claiming in the same instant.
    import multiprocessing

    root = tmp_path / "results"
    stamp = "2026-05-07T14-32-08"
    sessions = ["s1", "s1", "s2", "s2", "s3", "s3"]
    with multiprocessing.get_context("spawn").Pool(len(sessions)) as pool:
        paths = pool.starmap(make_study_dir, [(root, "race", stamp, s) for s in sessions])
    by_session: dict[str, set[Path]] = {}
    for session, path in zip(sessions, paths):
        by_session.setdefault(session, set()).add(path)
    assert all(len(p) == 1 for p in by_session.values()), by_session
    assert len({next(iter(p)) for p in by_session.values()}) == 3


@pytest.mark.parametrize("study_name", ["../../escape", "/etc", "..", "a/b/c", "x" * 500, "", "C:\\evil"])
def test_make_study_dir_hostile_study_names_stay_inside(tmp_path: Path, study_name: str) -> None:
    root = tmp_path / "results"
    stamp = "2026-05-07T14-32-08"
    path = make_study_dir(root, study_name, stamp, "session")
    assert path.parent == root.resolve()
    assert path.name.endswith(stamp)
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


# --- atomic writes ----------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


def test_write_json_atomic_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "result.json"  # parents are created
    write_json_atomic(target, {"a": 1, "b": [1, 2]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1, "b": [1, 2]}
    write_json_atomic(target, {"c": "replaced"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"c": "replaced"}
    assert target.read_text(encoding="utf-8").endswith("\n")
    assert _leftovers(target.parent) == []
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


@pytest.mark.parametrize(
    ("data", "where", "kind"),
    [
        ({"path": Path("/a/b")}, "$.path", "PosixPath"),
        ({"ok": 1, "cells": [{"when": datetime(2026, 1, 2, tzinfo=timezone.utc)}]}, "$.cells[0].when", "datetime"),
        ({"figures": {"energy": {1.0}}}, "$.figures.energy", "set"),
    ],
)
def test_write_json_atomic_refuses_what_json_cannot_hold(
    tmp_path: Path, data: dict[str, object], where: str, kind: str
) -> None:
    # Once written as str(value): a figure stored as text, or a repr no reader could parse.
    target = tmp_path / "x.json"
    with pytest.raises(TypeError, match=rf"x\.json: {re.escape(where)} is a {kind}, which JSON cannot hold"):
        write_json_atomic(target, data)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file is left behind"


def test_write_json_atomic_serialisation_failure_keeps_previous(tmp_path: Path, no_secrets: None) -> None:
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"ok": True})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_json_atomic(target, {("tuple", "key"): 1})  # json rejects non-string-like keys
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="[Cc]ircular"):
        write_json_atomic(target, {"loop": circular})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_write_failure_after_temp_created_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.json"
    write_json_atomic(target, {"version": 1})
    before = target.read_bytes()

    def boom(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr("pytest_llem.results.atomic.os.replace", boom)
        with pytest.raises(OSError, match="disk on fire"):
            write_json_atomic(target, {"version": 2})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]

    with monkeypatch.context() as m:
        m.setattr("pytest_llem.results.atomic.os.fsync", boom)
        with pytest.raises(OSError):
            write_text_atomic(target, "half")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_write_json_atomic_scrubs_secrets(tmp_path: Path, no_secrets: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_SuperSecretValue123")
    target = tmp_path / "effective_config.json"
    write_json_atomic(target, {"env": {"token": "hf_SuperSecretValue123"}, "cmd": ["--token=hf_SuperSecretValue123"]})
    text = target.read_text(encoding="utf-8")
    assert "hf_SuperSecretValue123" not in text
    assert json.loads(text) == {"env": {"token": REDACTED}, "cmd": [f"--token={REDACTED}"]}


# --- scrub ------------------------------------------------------------------------------


def test_scrub_longer_secret_first(no_secrets: None) -> None:
    # A secret that contains another must be redacted whole, not leave its tail behind.
    assert scrub("pw=abcdef-long-tail", ["abcdef-long-tail", "abcdef"]) == f"pw={REDACTED}"


def test_scrub_without_secrets_is_identity(no_secrets: None) -> None:
    data = {"a": ["b", {"c": 1}]}
    assert scrub(data) == data


# --- stamps -----------------------------------------------------------------------------


def test_utc_stamp_format() -> None:
    assert utc_stamp(datetime(2026, 5, 7, 14, 32, 8, 999, tzinfo=timezone.utc)) == "2026-05-07T14-32-08"
    before = datetime.now(timezone.utc).replace(microsecond=0)  # the stamp drops fractions of a second
    now = utc_stamp()
    after = datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}", now)
    parsed = datetime.strptime(now, "%Y-%m-%dT%H-%M-%S").replace(tzinfo=timezone.utc)
    assert before <= parsed <= after  # the moment of the call, however slow the machine
