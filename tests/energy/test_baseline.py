"""Idle baselines: sampling against the fake NVML, the cache files, drift, and the session's set."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from pytest_llem.config.experiment import IdlePowerConfig
from pytest_llem.energy._nvml import visible_gpu_uuids
from pytest_llem.energy.idle import sample_idle
from pytest_llem.errors import CellCrashed, MeasurementInvalid, MeterUnavailable
from pytest_llem.execution.idle_power import (
    ARTEFACTS_DIR,
    IDLE_SAMPLE_INTERVAL_S,
    IdleSettings,
    SessionIdlePower,
    cache_file,
    drift,
    find_cached,
    load_fresh,
    store,
)
from pytest_llem.results.measurement import CellIdlePower, IdlePower

if TYPE_CHECKING:
    from conftest import FakeNvml


#: What IdlePowerConfig() asks for, as the cache lookups are given it.
WANTED = IdleSettings(30.0, IDLE_SAMPLE_INTERVAL_S)


def _baseline(uuid: str = "GPU-a", power_w: float = 70.0, std_w: float = 1.0, age_s: float = 0.0, **extra: Any) -> IdlePower:
    fields: dict[str, Any] = {
        "gpu_uuid": uuid,
        "power_w": power_w,
        "mean_sampled_w": power_w,
        "std_w": std_w,
        "min_w": power_w - 2,
        "max_w": power_w + 2,
        "n_samples": 300,
        "duration_s": 30.0,
        "temperature_c": 35.0,
        "measured_at": time.time() - age_s,
        "method": "idle power sampled with a CUDA context on the GPU; mean from the energy counter",
        # The settings of IdlePowerConfig(): a cached baseline is reused only under the same ones.
        "requested_duration_s": 30.0,
        "sample_interval_s": IDLE_SAMPLE_INTERVAL_S,
    }
    fields.update(extra)
    return IdlePower(**fields)


def _study(root: Path, name: str) -> Path:
    study = root / name
    (study / ARTEFACTS_DIR).mkdir(parents=True)
    return study


def _place(study: Path, baseline: IdlePower, mtime: float | None = None) -> Path:
    path = store(study, baseline)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# --------------------------------------------------------------------------- sample_idle


def test_sample_idle_reads_the_counter_and_the_samples(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=70.0, temperature_c=33), fake_nvml.gpu("GPU-b", power_w=95.0))
    before = time.time()
    (a, b) = sample_idle(["GPU-a", "GPU-b"], duration_s=0.5, interval_s=0.05, method="test")
    assert a.gpu_uuid == "GPU-a" and b.gpu_uuid == "GPU-b"
    assert a.power_w == pytest.approx(70.0, rel=0.03)  # counter energy / elapsed
    assert a.mean_sampled_w == pytest.approx(70.0) and a.std_w == pytest.approx(0.0)
    assert a.min_w == a.max_w == 70.0
    assert b.power_w == pytest.approx(95.0, rel=0.03) and b.mean_sampled_w == pytest.approx(95.0)
    assert a.n_samples > 3 and a.duration_s == pytest.approx(0.5, abs=0.2)
    assert a.temperature_c == 33.0
    assert before <= a.measured_at <= time.time()
    assert a.method.startswith("test") and "energy counter" in a.method
    assert fake_nvml.init_count() == 0


def test_sample_idle_without_counter_uses_sampled_mean(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=64.0, supports_energy=False))
    (a,) = sample_idle(["GPU-a"], duration_s=0.3, interval_s=0.05, method="test")
    assert a.power_w == pytest.approx(64.0) == a.mean_sampled_w
    assert "mean of power samples" in a.method and "energy counter" not in a.method
    assert fake_nvml.init_count() == 0


def test_sample_idle_unknown_gpu_releases_nvml_once(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    fake_nvml.module.nvmlInit()  # another user of NVML in the same process
    try:
        with pytest.raises(MeterUnavailable):
            sample_idle(["GPU-missing"], duration_s=0.1, interval_s=0.05, method="test")
        assert fake_nvml.init_count() == 1  # the other user's initialisation is still held
    finally:
        fake_nvml.module.nvmlShutdown()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"power_w": 0.0}, "GPU GPU-b: the NVML energy counter did not move in"),
        ({"power_w": 60.0, "counter_w": 0.0}, "GPU GPU-b: the NVML energy counter did not move in"),
        ({"power_w": 60.0, "counter_w": -40.0}, "GPU GPU-b: the NVML energy counter went back from"),
        ({"power_w": 0.0, "supports_energy": False}, "GPU GPU-b: its power samples average 0 W"),
    ],
    ids=["no-power", "stuck", "reset", "no-counter-no-power"],
)
def test_sample_idle_refuses_an_impossible_idle_power(fake_nvml: FakeNvml, spec: dict[str, Any], expected: str) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=70.0), fake_nvml.gpu("GPU-b", **spec))
    with pytest.raises(MeasurementInvalid, match="^idle power cannot be subtracted: ") as caught:
        sample_idle(["GPU-a", "GPU-b"], duration_s=0.05, interval_s=0.01, method="test")
    assert expected in str(caught.value) and "GPU-a" not in str(caught.value)
    assert fake_nvml.init_count() == 0


@pytest.mark.parametrize("power_w", [0.0, -3.0, float("nan"), float("inf")])
def test_an_idle_power_cannot_be_impossible(power_w: float) -> None:
    with pytest.raises(ValidationError, match="power_w"):
        _baseline(power_w=power_w)


# --------------------------------------------------------------------------- cache files


def test_store_then_load_fresh_round_trip(tmp_path: Path) -> None:
    study = tmp_path / "study"
    original = _baseline("GPU-1234/x", age_s=5.0)
    path = store(study, original)
    assert path == study / ARTEFACTS_DIR / "baseline_cache_GPU-1234--x.json" == cache_file(study, "GPU-1234/x")
    assert json.loads(path.read_text())["gpu_uuid"] == "GPU-1234/x"
    assert load_fresh(path, ttl_s=60.0, wanted=WANTED) == original


def test_load_fresh_refuses_an_old_baseline(tmp_path: Path) -> None:
    path = store(tmp_path, _baseline(age_s=120.0))
    assert load_fresh(path, ttl_s=60.0, wanted=WANTED) is None
    assert load_fresh(path, ttl_s=600.0, wanted=WANTED) is not None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        "null",
        '{"gpu_uuid": "GPU-a"}',
        "",
    ],
)
def test_load_fresh_refuses_a_corrupt_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "baseline_cache_GPU-a.json"
    path.write_text(content)
    assert load_fresh(path, ttl_s=3600.0, wanted=WANTED) is None


def test_load_fresh_refuses_a_file_with_wrong_types(tmp_path: Path) -> None:
    data = _baseline().model_dump()
    data["measured_at"] = "yesterday"
    path = tmp_path / "baseline_cache_GPU-a.json"
    path.write_text(json.dumps(data))
    assert load_fresh(path, ttl_s=3600.0, wanted=WANTED) is None


@pytest.mark.parametrize("power", ["0.0", "-3.5", "NaN", "Infinity"])
def test_load_fresh_refuses_an_impossible_idle_power(tmp_path: Path, power: str) -> None:
    # A cache file written by an older version (which accepted 0 W) or by hand.
    data = _baseline().model_dump()
    data["power_w"] = "@"
    path = tmp_path / "baseline_cache_GPU-a.json"
    path.write_text(json.dumps(data).replace('"@"', power))
    assert load_fresh(path, ttl_s=3600.0, wanted=WANTED) is None


def test_find_cached_passes_over_a_zero_watt_file_to_an_earlier_valid_one(tmp_path: Path) -> None:
    now = time.time()
    old, current = _study(tmp_path, "s1"), _study(tmp_path, "s2")
    _place(old, _baseline(power_w=61.0), mtime=now - 300)
    data = _baseline().model_dump() | {"power_w": 0.0}
    cache_file(current, "GPU-a").write_text(json.dumps(data))
    found = find_cached(tmp_path, current, "GPU-a", ttl_s=3600.0, wanted=WANTED)
    assert found is not None and found[0].power_w == 61.0 and found[1] == cache_file(old, "GPU-a")


def test_load_fresh_missing_file(tmp_path: Path) -> None:
    assert load_fresh(tmp_path / "nothing.json", ttl_s=3600.0, wanted=WANTED) is None


def test_find_cached_prefers_own_study_then_newest_earlier(tmp_path: Path) -> None:
    now = time.time()
    old, newer, current = _study(tmp_path, "s1"), _study(tmp_path, "s2"), _study(tmp_path, "s3")
    _place(old, _baseline(power_w=61.0), mtime=now - 300)
    _place(newer, _baseline(power_w=62.0), mtime=now - 100)
    assert find_cached(tmp_path, current, "GPU-a", ttl_s=3600.0, wanted=WANTED) == (_load(newer), cache_file(newer, "GPU-a"))
    own = _place(current, _baseline(power_w=63.0), mtime=now - 1000)  # older file, still preferred
    found = find_cached(tmp_path, current, "GPU-a", ttl_s=3600.0, wanted=WANTED)
    assert found is not None and found[1] == own and found[0].power_w == 63.0


def test_find_cached_skips_stale_and_corrupt_files(tmp_path: Path) -> None:
    now = time.time()
    old, newer, current = _study(tmp_path, "s1"), _study(tmp_path, "s2"), _study(tmp_path, "s3")
    _place(old, _baseline(power_w=61.0), mtime=now - 300)
    _place(newer, _baseline(power_w=62.0, age_s=7200.0), mtime=now - 100)  # newest file, but too old a baseline
    cache_file(current, "GPU-a").write_text("{broken")
    found = find_cached(tmp_path, current, "GPU-a", ttl_s=3600.0, wanted=WANTED)
    assert found is not None and found[0].power_w == 61.0 and found[1] == cache_file(old, "GPU-a")


def test_find_cached_other_gpu_or_nothing(tmp_path: Path) -> None:
    old, current = _study(tmp_path, "s1"), _study(tmp_path, "s2")
    _place(old, _baseline("GPU-b"))
    assert find_cached(tmp_path, current, "GPU-a", ttl_s=3600.0, wanted=WANTED) is None
    assert find_cached(tmp_path, current, "GPU-b", ttl_s=3600.0, wanted=WANTED) is not None


def _load(study: Path, uuid: str = "GPU-a") -> IdlePower:
    baseline = load_fresh(cache_file(study, uuid), ttl_s=1e9, wanted=WANTED)
    assert baseline is not None
    return baseline


def test_drift() -> None:
    base = _baseline(power_w=80.0)
    assert drift(base, 88.0) == pytest.approx(0.10)
    assert drift(base, 72.0) == pytest.approx(0.10)
    assert drift(base, 80.0) == 0.0


# --------------------------------------------------------------------------- SessionIdlePower.for_cell


def test_for_cell_sums_the_gpus_used() -> None:
    session = SessionIdlePower()
    session.set(_baseline("GPU-a", power_w=70.0, std_w=3.0, age_s=10.0), "measured")
    session.set(_baseline("GPU-b", power_w=80.0, std_w=4.0, age_s=100.0, method="other"), "cache")
    session.set(_baseline("GPU-c", power_w=500.0), "measured")  # not used by the cell
    out = session.for_cell(["GPU-a", "GPU-b"], None).model_dump()
    assert out["baseline_power_w"] == pytest.approx(150.0)
    assert out["baseline_per_device_w"] == [70.0, 80.0]
    assert out["baseline_std_w"] == pytest.approx(5.0)  # sqrt(3^2 + 4^2)
    assert out["baseline_age_s"] == pytest.approx(100.0, abs=2.0)
    assert out["baseline_source"] == "cache; measured"
    assert "other" in out["baseline_method"] and "energy counter" in out["baseline_method"]
    assert out["baseline_unavailable_reason"] is None


def test_for_cell_single_gpu_std_is_its_own() -> None:
    session = SessionIdlePower()
    session.set(_baseline("GPU-a", std_w=2.5), "measured")
    assert math.isclose(session.for_cell(["GPU-a"], None).baseline_std_w, 2.5)


def test_for_cell_reasons() -> None:
    session = SessionIdlePower()
    session.set(_baseline("GPU-a"), "measured")
    missing = session.for_cell(["GPU-a", "GPU-z"], None)
    assert missing == CellIdlePower(baseline_unavailable_reason="no baseline for a GPU this cell used")
    none_used = session.for_cell([], None)
    assert none_used == CellIdlePower(baseline_unavailable_reason="the cell ran on no GPU")
    given = session.for_cell(["GPU-z"], "measurement.baseline.enabled is false")
    assert given.baseline_power_w is None
    assert given.baseline_unavailable_reason == "measurement.baseline.enabled is false"


def test_for_cell_never_subtracts_an_impossible_idle_power() -> None:
    # model_construct skips validation: the one way left to hold a 0 W baseline.
    session = SessionIdlePower()
    session.set(_baseline("GPU-a", power_w=70.0), "measured")
    session.set(IdlePower.model_construct(**(_baseline("GPU-b").model_dump() | {"power_w": 0.0})), "measured")
    idle = session.for_cell(["GPU-a", "GPU-b"], None)
    assert idle.baseline_power_w is None and idle.baseline_per_device_w is None
    assert idle.baseline_unavailable_reason == "idle power of GPU-b (0 W) is not above 0 W; not subtracted"


# --------------------------------------------------------------------------- drift and ensure


def test_only_a_spot_check_beyond_the_threshold_is_a_drift() -> None:
    session = SessionIdlePower()
    session.set(_baseline("GPU-a", power_w=70.0), "measured")
    session.set(_baseline("GPU-b", power_w=70.0), "measured")
    drifts = session._drifts(
        {"GPU-a": {"power_w": 75.0}, "GPU-b": {"power_w": 90.0}, "GPU-z": {"power_w": 500.0}, "GPU-n": {}},
        threshold=0.10,
    )
    assert [d.uuid for d in drifts] == ["GPU-b"]
    described = drifts[0].describe()
    assert described.startswith("GPU GPU-b: idle power drifted to 90.0 W") and "70.0 W" in described and "29 %" in described
    assert session.reference_w() == {"GPU-a": 70.0, "GPU-b": 70.0}


class _MeasureRecorder:
    def __init__(self, session: SessionIdlePower) -> None:
        self.calls: list[Path] = []
        self.session = session

    def __call__(self, settings: IdlePowerConfig, study_dir: Path, startup_timeout_s: float) -> str | None:
        self.calls.append(study_dir)
        return "recorded"


def _recorder(monkeypatch: pytest.MonkeyPatch, session: SessionIdlePower) -> _MeasureRecorder:
    recorder = _MeasureRecorder(session)
    monkeypatch.setattr(session, "_measure", recorder)
    return recorder


def test_ensure_disabled_gives_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = SessionIdlePower()
    recorder = _recorder(monkeypatch, session)
    reason = session.ensure(IdlePowerConfig(enabled=False), tmp_path / "s", tmp_path, 30.0)
    assert reason == "measurement.baseline.enabled is false" and recorder.calls == []


def test_ensure_without_gpu_gives_nvml_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml) -> None:
    fake_nvml.configure()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    session = SessionIdlePower()
    recorder = _recorder(monkeypatch, session)
    assert session.ensure(IdlePowerConfig(), tmp_path / "s", tmp_path, 30.0) == "no NVIDIA GPU is visible"
    assert recorder.calls == []


def test_ensure_reuses_an_earlier_studys_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    earlier, current = _study(tmp_path, "2026-01-01_earlier"), _study(tmp_path, "2026-01-02_current")
    _place(earlier, _baseline("GPU-a", power_w=66.0, age_s=60.0))
    session = SessionIdlePower()
    recorder = _recorder(monkeypatch, session)
    assert session.ensure(IdlePowerConfig(), current, tmp_path, 30.0) is None
    assert recorder.calls == []
    known = session.get("GPU-a")
    assert known is not None and known[0].power_w == 66.0
    assert known[1] == "cache of an earlier study (2026-01-01_earlier)"
    assert _load(current) == known[0]  # copied into this study's artefacts
    # A second ensure keeps the session's baseline without measuring.
    assert session.ensure(IdlePowerConfig(), current, tmp_path, 30.0) is None and recorder.calls == []


def test_ensure_own_cache_is_named_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    current = _study(tmp_path, "s")
    _place(current, _baseline("GPU-a", power_w=67.0))
    session = SessionIdlePower()
    recorder = _recorder(monkeypatch, session)
    assert session.ensure(IdlePowerConfig(), current, tmp_path, 30.0) is None
    assert recorder.calls == [] and session.get("GPU-a") is not None
    assert session.get("GPU-a")[1] == "cache"  # type: ignore[index]


def test_ensure_measures_when_cache_is_too_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    earlier, current = _study(tmp_path, "earlier"), _study(tmp_path, "current")
    _place(earlier, _baseline("GPU-a", age_s=7200.0))
    session = SessionIdlePower()
    recorder = _recorder(monkeypatch, session)
    assert session.ensure(IdlePowerConfig(ttl_seconds=3600.0), current, tmp_path, 30.0) == "recorded"
    assert recorder.calls == [current]


def test_ensure_remeasures_a_stale_gpu_despite_a_fresh_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml
) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    current = _study(tmp_path, "current")
    session = SessionIdlePower()
    session.set(_baseline("GPU-a", power_w=70.0), "measured")
    session._stale.add("GPU-a")  # what settle_drift does when a cell's spot check drifted
    _place(current, _baseline("GPU-a", power_w=70.0))  # fresh file, but the drift says it is wrong
    recorder = _recorder(monkeypatch, session)
    assert session.ensure(IdlePowerConfig(), current, tmp_path, 30.0) == "recorded"
    assert recorder.calls == [current]
    assert not cache_file(current, "GPU-a").exists(), "a drifted baseline's cache file is dropped"
    # Once a new baseline is set, the GPU is no longer stale and nothing more is measured.
    session.set(_baseline("GPU-a", power_w=100.0), "measured")
    assert session.ensure(IdlePowerConfig(), current, tmp_path, 30.0) is None and len(recorder.calls) == 1


def test_ensure_stores_a_session_baseline_missing_from_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml
) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    session = SessionIdlePower()
    session.set(_baseline("GPU-a", power_w=71.0), "measured")
    recorder = _recorder(monkeypatch, session)
    study = tmp_path / "new-study"
    assert session.ensure(IdlePowerConfig(), study, tmp_path, 30.0) is None and recorder.calls == []
    assert _load(study).power_w == 71.0


# --------------------------------------------------------------------------- visible_gpu_uuids

THREE = ("GPU-aaaa-0000", "GPU-bbbb-1111", "GPU-cccc-2222")


@pytest.fixture
def three_gpus(fake_nvml: FakeNvml) -> FakeNvml:
    fake_nvml.configure(*(fake_nvml.gpu(u) for u in THREE))
    return fake_nvml


def test_visible_all_without_cuda_visible_devices(three_gpus: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu_uuids() == (list(THREE), None)
    assert three_gpus.init_count() == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2,0", [THREE[2], THREE[0]]),
        (" 1 ", [THREE[1]]),
        ("1,7", [THREE[1]]),
        ("GPU-bbbb", [THREE[1]]),
        ("GPU-cccc-2222,GPU-aaaa", [THREE[2], THREE[0]]),
        ("0,GPU-cccc", [THREE[0], THREE[2]]),
    ],
)
def test_visible_honours_cuda_visible_devices(
    three_gpus: FakeNvml, monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpu_uuids() == (expected, None)


@pytest.mark.parametrize("value", ["", "7", "GPU-zzzz"])
def test_visible_none_matching(three_gpus: FakeNvml, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpu_uuids() == ([], "no NVIDIA GPU is visible")


def test_visible_nvml_unavailable(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.configure(init_error=True)
    uuids, reason = visible_gpu_uuids()
    assert uuids == [] and reason is not None and "NVML could not initialise" in reason


def test_session_caches_visible(three_gpus: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    session = SessionIdlePower()
    assert session.visible() == ([THREE[1]], None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert session.visible() == ([THREE[1]], None)  # looked up once per session


def test_an_impossible_idle_power_reaches_the_cell_as_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml
) -> None:
    """The idle child refuses a stuck counter; the cell then subtracts nothing and says why."""
    from pytest_llem.execution import idle_power

    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    refused = "MeasurementInvalid: idle power cannot be subtracted: GPU GPU-a: the NVML energy counter did not move"

    def child_refuses(*args: object, **kwargs: object) -> None:
        raise CellCrashed(refused)  # what run_in_child raises for an exception reported by the child

    monkeypatch.setattr(idle_power, "run_in_child", child_refuses)
    current = _study(tmp_path, "current")
    data = _baseline().model_dump() | {"power_w": 0.0}
    cache_file(current, "GPU-a").write_text(json.dumps(data))  # refused too: measured afresh
    session = SessionIdlePower()
    reason = session.ensure(IdlePowerConfig(), current, tmp_path, 30.0)
    assert reason == f"the idle baseline could not be measured: {refused}"
    idle = session.for_cell(["GPU-a"], reason)
    assert idle.baseline_power_w is None
    assert idle.baseline_unavailable_reason is not None and "did not move" in idle.baseline_unavailable_reason
