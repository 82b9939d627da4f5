"""Idle baselines are reused only under the settings they were measured with, on the same GPU.

A baseline sampled for 15 s is a different measurement from one of 30 s (or one sampled at
another interval): a study asking for 30 s must get a 30 s baseline, from this session's memory,
from a cache file, or measured afresh; never another study's 15 s one, and never one whose
settings are unknown (a cache file written before they were recorded).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.config.experiment import IdlePowerConfig
from pytest_llem.energy.idle import sample_idle
from pytest_llem.execution import idle_power
from pytest_llem.execution.idle_power import (
    ARTEFACTS_DIR,
    IDLE_SAMPLE_INTERVAL_S,
    IdleSettings,
    SessionIdlePower,
    cache_file,
    find_cached,
    load_fresh,
    store,
)
from pytest_llem.results.measurement import IdlePower
from pytest_llem.runner.envelope import IdleMeasurement, IdleTask

if TYPE_CHECKING:
    from conftest import FakeNvml

THIRTY = IdleSettings(duration_s=30.0, interval_s=IDLE_SAMPLE_INTERVAL_S)


def _baseline(power_w: float = 70.0, duration: float | None = 30.0, interval: float | None = IDLE_SAMPLE_INTERVAL_S) -> IdlePower:
    return IdlePower(
        gpu_uuid="GPU-a",
        power_w=power_w,
        mean_sampled_w=power_w,
        std_w=1.0,
        min_w=power_w - 1,
        max_w=power_w + 1,
        n_samples=100,
        duration_s=duration or 30.0,
        temperature_c=None,
        measured_at=time.time(),
        method="test",
        requested_duration_s=duration,
        sample_interval_s=interval,
    )


def _study(root: Path, name: str) -> Path:
    study = root / name
    (study / ARTEFACTS_DIR).mkdir(parents=True)
    return study


def _no_measuring(monkeypatch: pytest.MonkeyPatch, session: SessionIdlePower) -> list[IdlePowerConfig]:
    """Record each measurement ensure asks for instead of spawning a child."""
    calls: list[IdlePowerConfig] = []

    def measure(settings: IdlePowerConfig, study_dir: Path, startup_timeout_s: float) -> str | None:
        calls.append(settings)
        return "measured (recorded by the test)"

    monkeypatch.setattr(session, "_measure", measure)
    return calls


@pytest.fixture
def one_gpu(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# --------------------------------------------------------------------------- what a baseline records


def test_sample_idle_records_the_settings_it_was_asked_for(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=70.0))
    (a,) = sample_idle(["GPU-a"], duration_s=0.3, interval_s=0.05, method="test")
    assert a.requested_duration_s == 0.3 and a.sample_interval_s == 0.05
    assert a.duration_s == pytest.approx(0.3, abs=0.2)  # what elapsed, kept apart from what was asked


def test_the_idle_child_is_asked_for_the_studys_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks: list[IdleTask] = []

    def child(task: IdleTask, *args: object, **kwargs: object) -> SimpleNamespace:
        tasks.append(task)
        measured = _baseline(duration=task.duration_s, interval=task.interval_s)
        return SimpleNamespace(measurement=IdleMeasurement(idle_power=[measured], gpu_uuids=["GPU-a"], method="test"))

    monkeypatch.setattr(idle_power, "run_in_child", child)
    study = _study(tmp_path, "s")
    session = SessionIdlePower(gpu_uuid="GPU-a")
    assert session.ensure(IdlePowerConfig(duration_seconds=15.0), study, tmp_path, 30.0) is None
    assert [(t.duration_s, t.interval_s) for t in tasks] == [(15.0, IDLE_SAMPLE_INTERVAL_S)]
    cached = json.loads(cache_file(study, "GPU-a").read_text())
    assert cached["requested_duration_s"] == 15.0 and cached["sample_interval_s"] == IDLE_SAMPLE_INTERVAL_S


# --------------------------------------------------------------------------- cache files


@pytest.mark.parametrize(
    ("duration", "interval"),
    [(15.0, IDLE_SAMPLE_INTERVAL_S), (30.0, 0.05), (None, IDLE_SAMPLE_INTERVAL_S), (30.0, None)],
    ids=["other-duration", "other-interval", "unknown-duration", "unknown-interval"],
)
def test_load_fresh_refuses_a_baseline_of_other_or_unknown_settings(
    tmp_path: Path, duration: float | None, interval: float | None
) -> None:
    path = store(tmp_path, _baseline(duration=duration, interval=interval))
    assert load_fresh(path, ttl_s=3600.0, wanted=THIRTY) is None
    assert load_fresh(store(tmp_path, _baseline()), ttl_s=3600.0, wanted=THIRTY) is not None


def test_load_fresh_refuses_a_file_written_before_settings_were_recorded(tmp_path: Path) -> None:
    data: dict[str, Any] = _baseline().model_dump()
    del data["requested_duration_s"], data["sample_interval_s"]
    path = cache_file(tmp_path, "GPU-a")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    assert load_fresh(path, ttl_s=3600.0, wanted=THIRTY) is None


def test_find_cached_passes_over_other_settings_to_a_matching_baseline(tmp_path: Path) -> None:
    matching, other, current = _study(tmp_path, "s1"), _study(tmp_path, "s2"), _study(tmp_path, "s3")
    store(matching, _baseline(power_w=61.0))
    store(other, _baseline(power_w=62.0, duration=15.0))
    store(current, _baseline(power_w=63.0, interval=0.5))
    found = find_cached(tmp_path, current, "GPU-a", ttl_s=3600.0, wanted=THIRTY)
    assert found is not None and found[0].power_w == 61.0 and found[1] == cache_file(matching, "GPU-a")
    assert find_cached(tmp_path, current, "GPU-a", ttl_s=3600.0, wanted=IdleSettings(20.0, IDLE_SAMPLE_INTERVAL_S)) is None


def test_settings_match_despite_float_noise() -> None:
    assert IdleSettings(30.0, 0.1).matches(_baseline(duration=30.000000000001, interval=0.1 + 1e-15))
    assert not IdleSettings(30.0, 0.1).matches(_baseline(duration=30.5))


# --------------------------------------------------------------------------- ensure


def test_ensure_does_not_reuse_an_earlier_studys_baseline_of_another_duration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_gpu: None
) -> None:
    earlier, current = _study(tmp_path, "earlier"), _study(tmp_path, "current")
    store(earlier, _baseline(power_w=66.0, duration=15.0))
    session = SessionIdlePower()
    calls = _no_measuring(monkeypatch, session)
    assert session.ensure(IdlePowerConfig(duration_seconds=30.0), current, tmp_path, 30.0) is not None
    assert [c.duration_seconds for c in calls] == [30.0], "measured afresh, not the 15 s baseline reused"
    assert session.get("GPU-a") is None


def test_ensure_reuses_an_earlier_studys_baseline_of_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_gpu: None
) -> None:
    earlier, current = _study(tmp_path, "earlier"), _study(tmp_path, "current")
    store(earlier, _baseline(power_w=66.0, duration=15.0))
    session = SessionIdlePower()
    calls = _no_measuring(monkeypatch, session)
    assert session.ensure(IdlePowerConfig(duration_seconds=15.0), current, tmp_path, 30.0) is None and calls == []
    known = session.get("GPU-a")
    assert known is not None and known[0].power_w == 66.0 and known[1] == "cache of an earlier study (earlier)"


def test_ensure_does_not_reuse_the_sessions_baseline_of_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_gpu: None
) -> None:
    study = _study(tmp_path, "s")
    session = SessionIdlePower()
    session.set(_baseline(power_w=70.0, duration=15.0), "measured")
    calls = _no_measuring(monkeypatch, session)
    session.ensure(IdlePowerConfig(duration_seconds=30.0), study, tmp_path, 30.0)
    assert [c.duration_seconds for c in calls] == [30.0]
    # The same settings again: the session's own baseline is reused.
    session.set(_baseline(power_w=71.0, duration=30.0), "measured")
    assert session.ensure(IdlePowerConfig(duration_seconds=30.0), study, tmp_path, 30.0) is None and len(calls) == 1


def test_a_cell_never_subtracts_a_baseline_of_other_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When measuring afresh fails, the session still holds the other study's baseline: not for this cell."""
    session = SessionIdlePower()
    session.set(_baseline(power_w=70.0, duration=15.0), "measured")
    idle = session.for_cell(["GPU-a"], "the idle baseline could not be measured: boom", wanted=THIRTY)
    assert idle.baseline_power_w is None
    assert idle.baseline_unavailable_reason == "the idle baseline could not be measured: boom"
    silent = session.for_cell(["GPU-a"], None, wanted=THIRTY)
    assert silent.baseline_power_w is None and silent.baseline_unavailable_reason is not None
    assert "15 s" in silent.baseline_unavailable_reason and "30 s" in silent.baseline_unavailable_reason
    assert session.for_cell(["GPU-a"], None, wanted=IdleSettings(15.0, IDLE_SAMPLE_INTERVAL_S)).baseline_power_w == 70.0
