"""A stand-in for NVIDIA's ``pynvml`` (nvidia-ml-py) for tests on machines without a GPU.

Tests put ``tests/fakes`` first on ``sys.path`` so product code imports this as ``pynvml``;
product code has no switch for it. The GPUs are described by JSON in ``LLEM_FAKE_NVML``, read
when NVML is first initialised::

    {"gpus": [{"uuid": "GPU-fake-0", "name": "Fake H100", "power_w": 300.0,
               "idle_w": 70.0, "supports_energy": true}]}

Per-GPU keys (all optional but ``uuid``): name, power_w (reported power, and the rate the
energy counter grows at since this module was imported), idle_w (recorded, not reported),
supports_energy, counter_w (the counter's rate when it differs from power_w: 0 is a stuck
counter, a negative rate one that goes back as after a reset, another value one that disagrees
with the reported power), counter_period_s (the counter moves only in steps of this length),
temperature_c, memory_total_mib, memory_used_mib, sm_clock_mhz, max_sm_clock_mhz,
utilization_pct, throttle_reasons, power_limit_w, persistence (bool), mig (bool, or null for
"not supported"), processes (list of PIDs), and fail: {"nvmlDeviceGetTemperature": n} to make
a query raise NVMLError on its first n calls (n = -1: always). Top-level keys:
driver_version, bytes_strings (return bytes like bindings before 11.515), init_error (nvmlInit
raises NVMLError_DriverNotLoaded).
"""

from __future__ import annotations

import json
import os
import threading
import time
from types import SimpleNamespace
from typing import Any

FAKE = True
ENV_VAR = "LLEM_FAKE_NVML"

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

_MIB = 1024 * 1024
_T0 = time.monotonic()
_lock = threading.Lock()
_init_count = 0
_config: dict[str, Any] = {"gpus": []}
_calls: dict[tuple[str, str], int] = {}


class NVMLError(Exception):
    """Base of the NVML errors, as in pynvml: each error code has its own subclass."""

    value = 999
    message = "Unknown Error"

    def __str__(self) -> str:
        return self.message


class NVMLError_Uninitialized(NVMLError):
    value, message = 1, "Uninitialized"


class NVMLError_InvalidArgument(NVMLError):
    value, message = 2, "Invalid Argument"


class NVMLError_NotSupported(NVMLError):
    value, message = 3, "Not Supported"


class NVMLError_NotFound(NVMLError):
    value, message = 6, "Not Found"


class NVMLError_DriverNotLoaded(NVMLError):
    value, message = 9, "Driver Not Loaded"


class NVMLError_Unknown(NVMLError):
    pass


class _Device:
    """What a handle points at: one configured GPU."""

    def __init__(self, index: int, spec: dict[str, Any]) -> None:
        self.index = index
        self.spec = spec

    def get(self, key: str, default: Any) -> Any:
        return self.spec.get(key, default)


def init_count() -> int:
    """How many initialisations are outstanding (tests check that meters release NVML)."""
    return _init_count


def nvmlInit() -> None:
    global _init_count, _config
    with _lock:
        config = json.loads(os.environ.get(ENV_VAR, '{"gpus": []}'))
        if config.get("init_error"):
            raise NVMLError_DriverNotLoaded()
        if _init_count == 0:
            _config = config
            _calls.clear()
        _init_count += 1


def nvmlShutdown() -> None:
    global _init_count
    with _lock:
        if _init_count == 0:
            raise NVMLError_Uninitialized()
        _init_count -= 1


def _require_init() -> None:
    if _init_count == 0:
        raise NVMLError_Uninitialized()


def _device(handle: Any, query: str) -> _Device:
    """Check the handle and apply the configured failures for this query."""
    _require_init()
    if not isinstance(handle, _Device):
        raise NVMLError_InvalidArgument()
    fails = handle.get("fail", {}).get(query)
    if fails is not None:
        key = (query, handle.spec["uuid"])
        with _lock:
            _calls[key] = _calls.get(key, 0) + 1
            calls = _calls[key]
        if fails < 0 or calls <= fails:
            raise NVMLError_Unknown()
    return handle


def _text(value: str) -> str | bytes:
    return value.encode() if _config.get("bytes_strings") else value


def nvmlSystemGetDriverVersion() -> str | bytes:
    _require_init()
    return _text(_config.get("driver_version", "550.54.15"))


def nvmlSystemGetCudaDriverVersion() -> int:
    _require_init()
    return int(_config.get("cuda_driver_version", 12040))


def nvmlDeviceGetCount() -> int:
    _require_init()
    return len(_config["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Device:
    _require_init()
    if not 0 <= index < len(_config["gpus"]):
        raise NVMLError_InvalidArgument()
    return _Device(index, _config["gpus"][index])


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Device:
    _require_init()
    wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
    for index, spec in enumerate(_config["gpus"]):
        if spec["uuid"] == wanted:
            return _Device(index, spec)
    raise NVMLError_NotFound()


def nvmlDeviceGetUUID(handle: Any) -> str | bytes:
    return _text(_device(handle, "nvmlDeviceGetUUID").spec["uuid"])


def nvmlDeviceGetName(handle: Any) -> str | bytes:
    return _text(_device(handle, "nvmlDeviceGetName").get("name", "Fake GPU"))


def nvmlDeviceGetIndex(handle: Any) -> int:
    return _device(handle, "nvmlDeviceGetIndex").index


def nvmlDeviceGetTotalEnergyConsumption(handle: Any) -> int:
    device = _device(handle, "nvmlDeviceGetTotalEnergyConsumption")
    if not device.get("supports_energy", True):
        raise NVMLError_NotSupported()
    elapsed = time.monotonic() - _T0
    period = device.get("counter_period_s", 0.0)
    if period:
        elapsed = (elapsed // period) * period
    return int(elapsed * device.get("counter_w", device.get("power_w", 100.0)) * 1000)


def nvmlDeviceGetPowerUsage(handle: Any) -> int:
    return int(_device(handle, "nvmlDeviceGetPowerUsage").get("power_w", 100.0) * 1000)


def nvmlDeviceGetTemperature(handle: Any, sensor: int) -> int:
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError_InvalidArgument()
    return int(_device(handle, "nvmlDeviceGetTemperature").get("temperature_c", 45))


def nvmlDeviceGetMemoryInfo(handle: Any) -> SimpleNamespace:
    device = _device(handle, "nvmlDeviceGetMemoryInfo")
    total = int(device.get("memory_total_mib", 81559) * _MIB)
    used = int(device.get("memory_used_mib", 1024) * _MIB)
    return SimpleNamespace(total=total, used=used, free=total - used)


def nvmlDeviceGetClockInfo(handle: Any, clock: int) -> int:
    if clock != NVML_CLOCK_SM:
        raise NVMLError_NotSupported()
    return int(_device(handle, "nvmlDeviceGetClockInfo").get("sm_clock_mhz", 1980))


def nvmlDeviceGetMaxClockInfo(handle: Any, clock: int) -> int:
    if clock != NVML_CLOCK_SM:
        raise NVMLError_NotSupported()
    return int(_device(handle, "nvmlDeviceGetMaxClockInfo").get("max_sm_clock_mhz", 1980))


def nvmlDeviceGetUtilizationRates(handle: Any) -> SimpleNamespace:
    util = _device(handle, "nvmlDeviceGetUtilizationRates").get("utilization_pct", 0)
    return SimpleNamespace(gpu=util, memory=util)


def nvmlDeviceGetCurrentClocksEventReasons(handle: Any) -> int:
    return int(_device(handle, "nvmlDeviceGetCurrentClocksEventReasons").get("throttle_reasons", 0))


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: Any) -> int:
    return int(_device(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").get("throttle_reasons", 0))


def nvmlDeviceGetEnforcedPowerLimit(handle: Any) -> int:
    return int(_device(handle, "nvmlDeviceGetEnforcedPowerLimit").get("power_limit_w", 700.0) * 1000)


def nvmlDeviceGetPersistenceMode(handle: Any) -> int:
    enabled = _device(handle, "nvmlDeviceGetPersistenceMode").get("persistence", True)
    return NVML_FEATURE_ENABLED if enabled else NVML_FEATURE_DISABLED


def nvmlDeviceGetMigMode(handle: Any) -> list[int]:
    mig = _device(handle, "nvmlDeviceGetMigMode").get("mig", None)
    if mig is None:
        raise NVMLError_NotSupported()
    mode = NVML_DEVICE_MIG_ENABLE if mig else NVML_DEVICE_MIG_DISABLE
    return [mode, mode]


def nvmlDeviceGetComputeRunningProcesses(handle: Any) -> list[SimpleNamespace]:
    pids = _device(handle, "nvmlDeviceGetComputeRunningProcesses").get("processes", [])
    return [SimpleNamespace(pid=pid, usedGpuMemory=512 * _MIB) for pid in pids]
