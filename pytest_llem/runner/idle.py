"""The idle task of a spawned child: idle power of every visible GPU.

Runs in its own process, like a cell, so that idle power is measured in the state cells run
in: a fresh process holding a CUDA context on each GPU, with nothing executing.
"""

from __future__ import annotations

from pytest_llem.energy.idle import sample_idle
from pytest_llem.runner.envelope import IdleMeasurement


def visible_gpus() -> tuple[list[str], str]:
    """NVML UUIDs of the GPUs this process can use, and how they were found."""
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is not None and torch.cuda.is_available():
        from pytest_llem.energy._nvml import nvml_uuid

        uuids = []
        for index in range(torch.cuda.device_count()):
            torch.zeros(1, device=f"cuda:{index}")  # makes the CUDA context: the state cells run in
            uuids.append(nvml_uuid(torch.cuda.get_device_properties(index).uuid))
        torch.cuda.synchronize()
        return uuids, "idle power sampled with a CUDA context on the GPU"
    from pytest_llem.energy._nvml import visible_gpu_uuids

    uuids, _ = visible_gpu_uuids()  # honours CUDA_VISIBLE_DEVICES, which NVML itself ignores
    return uuids, "idle power sampled without a CUDA context (torch sees no CUDA device)"


def measure_idle(duration_s: float, interval_s: float) -> IdleMeasurement:
    uuids, method = visible_gpus()
    idle_power = sample_idle(uuids, duration_s, interval_s, method) if uuids else []
    return IdleMeasurement(idle_power=idle_power, gpu_uuids=uuids, method=method)
