"""The few steps every NVML user in this package shares: load, open by UUID, shut down.

``pynvml`` is imported here, inside functions, and nowhere at module level: the ``pytest11``
entry point imports this package in every pytest run, including on machines without NVIDIA's
bindings or driver, and a missing library must surface as :class:`MeterUnavailable` with a
reason rather than as an ``ImportError`` at collection time.

NVML's ``nvmlInit``/``nvmlShutdown`` are reference counted by the bindings, so the meter, the
sampler and :func:`describe_gpus` may each hold their own initialisation without stepping on
one another.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar, cast

from pytest_llem.errors import MeterUnavailable

T = TypeVar("T")

INSTALL_HINT = "pip install nvidia-ml-py"


def load() -> ModuleType:
    """Import the NVML bindings and initialise the library, or say why that is impossible."""
    try:
        import pynvml
    except ImportError as exc:
        raise MeterUnavailable(f"the NVML bindings are not installed ({INSTALL_HINT})") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise MeterUnavailable(f"NVML could not initialise: {exc}") from exc
    return cast(ModuleType, pynvml)


def shutdown(nvml: ModuleType) -> None:
    """Release one initialisation; a failure here has no consequence worth raising for."""
    try:
        nvml.nvmlShutdown()
    except nvml.NVMLError:
        pass


def open_handles(nvml: ModuleType, gpu_uuids: list[str]) -> list[Any]:
    """Open each GPU by UUID, because NVML ignores ``CUDA_VISIBLE_DEVICES`` and indices lie.

    On failure the initialisation taken by :func:`load` is released before raising, so a
    caller that gets :class:`MeterUnavailable` owns nothing.
    """
    handles: list[Any] = []
    for uuid in gpu_uuids:
        try:
            handles.append(nvml.nvmlDeviceGetHandleByUUID(uuid))
        except nvml.NVMLError as exc:
            shutdown(nvml)
            raise MeterUnavailable(f"no GPU with UUID {uuid!r} is visible to NVML: {exc}") from exc
    return handles


def load_handles(gpu_uuids: list[str]) -> tuple[ModuleType, list[Any]]:
    """:func:`load` then :func:`open_handles`: the usual way in."""
    nvml = load()
    return nvml, open_handles(nvml, gpu_uuids)


def as_text(value: str | bytes) -> str:
    """NVML strings as ``str``: bindings before nvidia-ml-py 11.515 return ``bytes``."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def query(nvml: ModuleType, fn: Callable[..., T], *args: Any) -> T | None:
    """Call one NVML query, mapping an NVML failure (unsupported, lost, busy) to ``None``.

    Only ``NVMLError`` is swallowed: anything else is a bug in this package and must show.
    """
    try:
        return fn(*args)
    except nvml.NVMLError:
        return None


def throttle_reasons_fn(nvml: ModuleType) -> Callable[[Any], int] | None:
    """The clock-limiting reasons query under whichever name the installed bindings use.

    NVIDIA renamed ``nvmlDeviceGetCurrentClocksThrottleReasons`` to
    ``nvmlDeviceGetCurrentClocksEventReasons`` (driver 535); older bindings only have the first.
    """
    for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        fn = getattr(nvml, name, None)
        if fn is not None:
            return cast("Callable[[Any], int]", fn)
    return None


def nvml_uuid(raw: object) -> str:
    """NVML names GPUs ``GPU-<uuid>`` (MIG slices ``MIG-<uuid>``); torch gives the bare UUID."""
    text = str(raw)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def visible_gpu_uuids() -> tuple[list[str], str | None]:
    """UUIDs of the NVIDIA GPUs this session's cells can see, or a reason there are none.

    ``CUDA_VISIBLE_DEVICES`` is honoured for UUIDs and indices (indices as NVML numbers them,
    which matches CUDA's order when ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).
    """
    try:
        nvml = load()
    except MeterUnavailable as exc:
        return [], str(exc)
    try:
        uuids = [
            as_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(nvml.nvmlDeviceGetCount())
        ]
    except nvml.NVMLError as exc:
        return [], f"NVML could not list the GPUs: {exc}"
    finally:
        shutdown(nvml)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        chosen: list[str] = []
        for entry in (e.strip() for e in visible.split(",") if e.strip()):
            if entry.isdigit():
                if int(entry) < len(uuids):
                    chosen.append(uuids[int(entry)])
            else:
                chosen.extend(u for u in uuids if u.startswith(entry) and u not in chosen)
        uuids = chosen
    return uuids, None if uuids else "no NVIDIA GPU is visible"
