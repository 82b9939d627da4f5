"""What the engines that own their GPUs (vLLM, TensorRT-LLM) share: GPUs, parameters, escape hatch.

The transformers engine places its model itself and asks torch where it sits; vLLM and
TensorRT-LLM place the model on the first ``tensor_parallel_size`` visible GPUs in worker
processes of their own, so the cell's child learns which GPUs they are from
``CUDA_VISIBLE_DEVICES`` and NVML, without initialising CUDA in its own process (which would
force those libraries to spawn rather than fork their workers, and hold a context that is not
theirs).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_llem.config.experiment import Precision
from pytest_llem.errors import EngineUnavailable, LlemError
from pytest_llem.naming import closest
from pytest_llem.results.measurement import GpuInfo

PRECISION_DTYPES: dict[Precision, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def engine_gpus(count: int) -> list[GpuInfo]:
    """The first ``count`` GPUs visible to this process, in CUDA order, by NVML UUID.

    Raises :class:`EngineUnavailable` when fewer are visible than the cell asks for (a
    ``tensor_parallel_size`` larger than the GPUs the cell was given).
    """
    from pytest_llem.energy import _nvml
    from pytest_llem.energy._nvml import visible_gpu_uuids

    uuids, reason = visible_gpu_uuids()
    if len(uuids) < count:
        seen = f"{len(uuids)} visible" if uuids else (reason or "none visible")
        hint = ""
        if os.environ.get("PYTEST_XDIST_WORKER"):  # the cell's process inherits its worker's environment
            hint = (
                "; under pytest-xdist each worker is given one GPU, so run cells that need several GPUs"
                " without -n (or leave them out of the -n run with -k)"
            )
        raise EngineUnavailable(f"the cell needs {count} GPU(s) but this process sees {seen}{hint}")
    chosen = uuids[:count]
    names: list[str] = []
    try:
        nvml = _nvml.load()
    except Exception:  # noqa: BLE001 - a name is a nicety; the UUIDs came from NVML already
        names = ["GPU"] * count
    else:
        try:
            for handle in _nvml.open_handles(nvml, chosen):
                names.append(_nvml.as_text(nvml.nvmlDeviceGetName(handle)))
        finally:
            _nvml.shutdown(nvml)
    return [GpuInfo(uuid=uuid, name=name, cuda_index=index) for index, (uuid, name) in enumerate(zip(chosen, names))]


def describe_gpus_in_words(gpus: list[GpuInfo]) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``, or several joined with ``+``."""
    return " + ".join(f"cuda:{g.cuda_index} ({g.name})" for g in gpus) or "no GPU"


def parameter_count_from_config(model: str) -> int:
    """Parameters of the model's architecture, counted on the ``meta`` device (no memory, no weights).

    Engines that load weights in worker processes cannot hand their module over; the count
    from the config is the same figure, tied embeddings counted once.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model)
    auto: Any = AutoModelForCausalLM
    with torch.device("meta"):
        built = auto.from_config(config)
    return int(sum(p.numel() for p in built.parameters()))


def check_engine_args(
    engine: str,
    engine_args: Mapping[str, Any],
    *,
    accepted: Iterable[str],
    owned: Mapping[str, str],
) -> dict[str, Any]:
    """The escape hatch's rule: every key is forwarded for real, or the cell fails naming it.

    ``accepted`` are the argument names the engine's own constructor takes (read from the
    installed library, so a key the installed version does not know is caught here, before a
    minute of engine start-up). ``owned`` maps arguments that pytest-llem sets itself to the
    study key a user should use instead (``dtype`` -> ``precision``): forwarding those would
    make the record lie about what ran.
    """
    accepted_names = set(accepted)
    problems: list[str] = []
    for key in engine_args:
        if key in owned:
            problems.append(f"{key!r} is set by pytest-llem; use {owned[key]} instead")
        elif key not in accepted_names:
            # Stricter than the default cutoff: among the many argument names of an engine, a
            # looser match would suggest unrelated ones.
            near = closest(key, accepted_names, cutoff=0.75)
            hint = f" (did you mean {near!r}?)" if near else ""
            problems.append(f"{key!r} is not an argument of the installed {engine}{hint}")
    if problems:
        raise LlemError(f"{engine}.engine_args: " + "; ".join(problems))
    return dict(engine_args)


def dataclass_field_names(cls: Any) -> set[str]:
    """Field names of a dataclass (vLLM's ``EngineArgs``), or an empty set for anything else."""
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set()


def require_gpu_device(engine: str, device: str) -> None:
    """vLLM and TensorRT-LLM run on GPUs only: a cell asking for the CPU is refused plainly."""
    if device == "cpu":
        raise EngineUnavailable(f"the {engine} engine runs on NVIDIA GPUs only; measurement.device is 'cpu'")


def cuda_visible_devices() -> str | None:
    """The cell's GPU assignment as the parent set it (for the record)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")
