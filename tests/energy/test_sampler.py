"""The telemetry sampler against the fake NVML: what it records, how it survives, what it writes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pytest_llem.energy.sampler import CONTRACT_COLUMNS, EXTRA_COLUMNS, TelemetrySampler
from pytest_llem.errors import MeterUnavailable

if TYPE_CHECKING:
    from conftest import FakeNvml


def _run(sampler: TelemetrySampler, seconds: float) -> list[dict[str, Any]]:
    with sampler:
        time.sleep(seconds)
    return sampler.samples


def _rows(samples: list[dict[str, Any]], gpu_idx: int) -> list[dict[str, Any]]:
    return [s for s in samples if s["gpu_idx"] == gpu_idx]


def test_records_every_field_per_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(
        fake_nvml.gpu("GPU-a", power_w=300.0, temperature_c=61, memory_used_mib=4096, utilization_pct=97),
        fake_nvml.gpu("GPU-b", power_w=120.0, supports_energy=False, throttle_reasons=4),
    )
    samples = _run(TelemetrySampler(["GPU-a", "GPU-b"], interval_s=0.05), 0.4)
    a, b = _rows(samples, 0), _rows(samples, 1)
    assert len(a) == len(b) >= 6
    assert a[0]["power_w"] == 300.0 and b[0]["power_w"] == 120.0
    assert a[0]["temperature_c"] == 61.0 and a[0]["memory_used_mib"] == 4096.0
    assert a[0]["sm_clock_mhz"] == 1980.0 and a[0]["utilization_gpu_pct"] == 97.0
    assert b[0]["throttle_reasons"] == 4
    times = [s["t"] for s in a]
    assert times == sorted(times) and 0.0 <= times[0] < 0.05
    # The schedule is kept: about one sample per interval, plus the closing one.
    assert len(a) == pytest.approx(0.4 / 0.05 + 1, abs=2)
    counters = [s["energy_mj"] for s in a]
    assert counters == sorted(counters) and counters[-1] > counters[0]
    assert all(s["energy_mj"] is None for s in b)
    assert fake_nvml.init_count() == 0


def test_time_counts_from_a_given_t0(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    t0 = time.perf_counter() - 10.0
    sampler = TelemetrySampler(["GPU-a"], interval_s=0.05, t0=t0)
    samples = _run(sampler, 0.1)
    assert sampler.t0 == t0
    assert all(10.0 <= s["t"] < 11.0 for s in samples)


def test_survives_a_query_that_always_fails(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", fail={"nvmlDeviceGetTemperature": -1}))
    samples = _run(TelemetrySampler(["GPU-a"], interval_s=0.05), 0.3)
    assert len(samples) >= 4
    assert all(s["temperature_c"] is None for s in samples)
    assert all(s["power_w"] == 300.0 for s in samples)


def test_survives_a_transient_failure(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", fail={"nvmlDeviceGetPowerUsage": 2}))
    samples = _run(TelemetrySampler(["GPU-a"], interval_s=0.05), 0.3)
    assert [s["power_w"] for s in samples[:3]] == [None, None, 300.0]
    assert all(s["power_w"] == 300.0 for s in samples[2:])


def test_older_bindings_throttle_query(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(fake_nvml.module, "nvmlDeviceGetCurrentClocksEventReasons")
    fake_nvml.configure(fake_nvml.gpu("GPU-a", throttle_reasons=8))
    samples = _run(TelemetrySampler(["GPU-a"], interval_s=0.05), 0.1)
    assert {s["throttle_reasons"] for s in samples} == {8}


def test_stop_is_idempotent_and_a_sampler_runs_once(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    sampler = TelemetrySampler(["GPU-a"], interval_s=0.05)
    sampler.stop()  # before start: nothing to do
    sampler.start()
    time.sleep(0.1)
    sampler.stop()
    count = len(sampler.samples)
    sampler.stop()
    time.sleep(0.1)
    assert len(sampler.samples) == count
    assert fake_nvml.init_count() == 0
    with pytest.raises(RuntimeError, match="runs once"):
        sampler.start()


def test_unknown_uuid(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    with pytest.raises(MeterUnavailable, match="GPU-zz"):
        TelemetrySampler(["GPU-zz"]).start()
    assert fake_nvml.init_count() == 0


def test_integrate_power_is_power_times_time(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0), fake_nvml.gpu("GPU-b", power_w=75.0))
    sampler = TelemetrySampler(["GPU-a", "GPU-b"], interval_s=0.05)
    _run(sampler, 0.4)
    # A window that does not fall on sample times, and one reaching past the last sample.
    assert sampler.integrate_power_j(0.013, 0.287) == pytest.approx([300.0 * 0.274, 75.0 * 0.274])
    assert sampler.integrate_power_j(0.1, 5.0) == pytest.approx([300.0 * 4.9, 75.0 * 4.9])
    assert sampler.integrate_power_j(0.2, 0.2) == [0.0, 0.0]
    with pytest.raises(ValueError, match="before"):
        sampler.integrate_power_j(0.3, 0.1)


def test_integrate_power_without_power_samples(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", fail={"nvmlDeviceGetPowerUsage": -1}))
    sampler = TelemetrySampler(["GPU-a"], interval_s=0.05)
    _run(sampler, 0.1)
    with pytest.raises(ValueError, match="GPU-a"):
        sampler.integrate_power_j(0.0, 0.1)


def test_parquet_has_the_contract_columns_and_types(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(
        fake_nvml.gpu("GPU-a", fail={"nvmlDeviceGetTemperature": -1}),
        fake_nvml.gpu("GPU-b", supports_energy=False),
    )
    sampler = TelemetrySampler(["GPU-a", "GPU-b"], interval_s=0.05)
    samples = _run(sampler, 0.2)
    target = tmp_path / "timeseries.parquet"
    target.write_bytes(b"an older file, replaced whole")
    sampler.write_parquet(target)

    table = pq.read_table(target)
    expected = {
        "t": pa.float64(),
        "gpu_idx": pa.int32(),
        "power_w": pa.float64(),
        "temperature_c": pa.float64(),
        "memory_used_mib": pa.float64(),
        "sm_clock_mhz": pa.float64(),
        "utilization_gpu_pct": pa.float64(),
        "throttle_reasons": pa.int64(),
        "energy_mj": pa.int64(),
    }
    assert {field.name: field.type for field in table.schema} == expected
    assert table.schema.names[: len(CONTRACT_COLUMNS)] == list(CONTRACT_COLUMNS)
    assert table.schema.names[len(CONTRACT_COLUMNS) :] == list(EXTRA_COLUMNS)
    assert table.num_rows == len(samples)
    columns = table.to_pydict()
    assert set(columns["gpu_idx"]) == {0, 1}
    assert all(t is None for t, idx in zip(columns["temperature_c"], columns["gpu_idx"]) if idx == 0)
    assert all(e is None for e, idx in zip(columns["energy_mj"], columns["gpu_idx"]) if idx == 1)
    assert table.schema.metadata[b"llem.gpu_uuids"] == b"GPU-a,GPU-b"
    assert [p.name for p in tmp_path.iterdir()] == ["timeseries.parquet"]  # no temporary left
