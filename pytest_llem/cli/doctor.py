"""``doctor``: what this machine can measure, and for each thing it cannot, why.

A first run on a new machine that shows no energy figures leaves a user guessing: no driver, no
bindings, a counter the GPU lacks, the engine not installed? Each answer is one line here, OK or
missing with the reason, found the way a cell would find it (the same NVML helpers, the same
engine packages), without loading a model or importing an engine's heavy libraries. A check that
fails in an unforeseen way becomes a missing line with the error, never a traceback: the doctor
must work best on the machines where the most is broken.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.cli.common import Commands, emit_json, emit_lines

#: Packages whose versions decide what a run measures and how (distribution names).
PACKAGES = ("pytest", "pydantic", "scipy", "numpy", "torch", "transformers", "vllm")
#: Of those, the ones only an engine needs: their absence matters only to that engine's cells.
ENGINE_ONLY = {"torch": "transformers", "transformers": "transformers", "vllm": "vllm"}
RAPL_GLOB = "/sys/class/powercap/intel-rapl*"
#: How long to wait between two reads of an energy counter to see it move (an idle GPU still draws tens of watts).
COUNTER_WAIT_S = 0.25


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "doctor",
        help="say what this machine can measure: NVML, GPUs, energy counters, Zeus, RAPL, engines, versions",
        description="Check what this machine can measure: the NVML bindings and driver, each visible GPU "
        "(name, UUID, power limit, whether its energy counter works), Zeus, RAPL, the installed engines and "
        "the versions of the packages that matter. Each line is OK or missing, with why. Loads no model.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


@dataclass
class Check:
    """One line of the report: what was checked, whether it is there, and what was found or why not."""

    section: str
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  {'OK' if self.ok else 'missing':<8} {self.name}: {self.detail}"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)

    def add(self, section: str, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(section, name, ok, detail))


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (vLLM's import alone takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _packages(report: Report) -> None:
    section = "python and packages"
    report.add(section, "python", True, f"{platform.python_version()} ({sys.executable})")
    from pytest_llem.version import __version__

    here = Path(__file__).resolve().parents[1]
    installed = _version("pytest-llem")
    note = "" if installed == __version__ else f"; installed distribution: {installed or 'none'}"
    report.add(section, "pytest-llem", True, f"{__version__} ({here}{note})")
    for name in PACKAGES:
        version = _version(name)
        engine = ENGINE_ONLY.get(name)
        absent = "not installed" + (f" (only the {engine} engine needs it)" if engine else "")
        report.add(section, name, version is not None, version or absent)


def _nvml(report: Report) -> None:
    from pytest_llem.energy import _nvml
    from pytest_llem.errors import MeterUnavailable

    section = "GPU energy (NVML)"
    bindings = _version("nvidia-ml-py")
    report.add(section, "nvidia-ml-py", bindings is not None, bindings or f"not installed ({_nvml.INSTALL_HINT})")
    try:
        nvml = _nvml.load()
    except MeterUnavailable as exc:
        report.add(section, "NVML", False, str(exc))
        return
    try:
        driver = _nvml.query(nvml, nvml.nvmlSystemGetDriverVersion)
    finally:
        _nvml.shutdown(nvml)
    report.add(section, "NVML", True, f"initialised, driver {'unknown' if driver is None else _nvml.as_text(driver)}")
    uuids, reason = _nvml.visible_gpu_uuids()
    if not uuids:
        report.add(section, "GPUs", False, reason or "no NVIDIA GPU is visible")
        return
    report.gpus = _describe_gpus(uuids)
    for gpu in report.gpus:
        limit = "unknown" if gpu["power_limit_w"] is None else f"{gpu['power_limit_w']:g} W"
        detail = f"{gpu['name'] or 'unknown model'} ({gpu['uuid']}), power limit {limit}, energy counter: {gpu['detail']}"
        report.add(section, f"GPU {gpu['index'] if gpu['index'] is not None else '?'}", gpu["energy_counter"] == "works", detail)


def _describe_gpus(uuids: list[str]) -> list[dict[str, Any]]:
    """Name, power limit and the energy counter's state of each GPU; the counter is read twice to see it move."""
    from pytest_llem.energy import _nvml

    nvml, handles = _nvml.load_handles(uuids)
    try:
        q = _nvml.query
        gpus: list[dict[str, Any]] = []
        first: list[int | None] = []
        for uuid, handle in zip(uuids, handles):
            name = q(nvml, nvml.nvmlDeviceGetName, handle)
            limit_mw = q(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            gpus.append(
                {
                    "uuid": uuid,
                    "index": q(nvml, nvml.nvmlDeviceGetIndex, handle),
                    "name": None if name is None else _nvml.as_text(name),
                    "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
                    "energy_counter": "works",
                    "detail": "",
                }
            )
            first.append(_read_counter(nvml, handle, gpus[-1]))
        if any(v is not None for v in first):
            time.sleep(COUNTER_WAIT_S)
        for gpu, handle, before in zip(gpus, handles, first):
            if before is None:
                continue
            after = _read_counter(nvml, handle, gpu)
            if after is None:
                continue
            if after <= before:
                gpu["energy_counter"] = "stuck"
                gpu["detail"] = f"did not move in {COUNTER_WAIT_S} s (a stuck counter gives no energy figure)"
            else:
                gpu["detail"] = f"works ({(after - before) / 1000 / COUNTER_WAIT_S:.0f} W over {COUNTER_WAIT_S} s)"
        return gpus
    finally:
        _nvml.shutdown(nvml)


def _read_counter(nvml: Any, handle: Any, gpu: dict[str, Any]) -> int | None:
    """The counter in mJ, or None with the GPU's entry saying why it cannot be read."""
    try:
        return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except nvml.NVMLError_NotSupported:
        gpu["energy_counter"] = "not supported"
        gpu["detail"] = "not supported (a GPU before Volta): energy is integrated from sampled power, with a warning"
    except nvml.NVMLError as exc:
        gpu["energy_counter"] = "error"
        gpu["detail"] = f"cannot be read: {exc}"
    return None


def _zeus(report: Report) -> None:
    from pytest_llem.energy.zeus import INSTALL_HINT

    version = _version("zeus") or _version("zeus-ml")
    found = _importable("zeus")
    detail = f"{version or 'version unknown'} (the study key measurement.energy: zeus)"
    report.add("Zeus", "zeus", found, detail if found else f"not installed ({INSTALL_HINT}); the nvml meter needs no Zeus")


def _rapl(report: Report) -> None:
    section = "CPU energy (RAPL, recorded by the zeus meter only)"
    zones = sorted(p for p in glob.glob(RAPL_GLOB) if os.path.isfile(os.path.join(p, "energy_uj")))
    if not zones:
        report.add(
            section, "RAPL", False, f"no {RAPL_GLOB} zone (not an Intel or AMD RAPL machine, or hidden in a VM or container)"
        )
        return
    for zone in zones:
        name = _read_text(Path(zone) / "name") or "?"
        try:
            (Path(zone) / "energy_uj").read_text(encoding="utf-8")
        except OSError as exc:
            report.add(section, Path(zone).name, False, f"{name}: energy_uj not readable ({exc.strerror}; usually root only)")
        else:
            report.add(section, Path(zone).name, True, f"{name}: energy_uj readable")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _engines(report: Report) -> None:
    from pytest_llem.config.engines import ENGINE_NAMES
    from pytest_llem.engines.registry import _INSTALL_HINT, _PACKAGES

    for engine in ENGINE_NAMES:
        packages = sorted(_PACKAGES[engine])
        absent = [p for p in packages if not _importable(p)]
        if absent:
            report.add("engines", engine, False, f"{', '.join(absent)} not installed ({_INSTALL_HINT[engine]})")
        else:
            report.add("engines", engine, True, ", ".join(f"{p} {_version(p) or '?'}" for p in packages))


STEPS: tuple[tuple[str, Callable[[Report], None]], ...] = (
    ("python and packages", _packages),
    ("GPU energy (NVML)", _nvml),
    ("Zeus", _zeus),
    ("CPU energy (RAPL, recorded by the zeus meter only)", _rapl),
    ("engines", _engines),
)


def diagnose() -> Report:
    """Every check; one that raises becomes a missing line naming the error."""
    report = Report()
    for section, step in STEPS:
        try:
            step(report)
        except Exception as exc:  # noqa: BLE001 - the doctor reports what broke, it never crashes on it
            report.add(section, "check", False, f"the check itself failed: {type(exc).__name__}: {exc}")
    return report


def verdict(report: Report) -> tuple[bool, str]:
    """Whether cells here get GPU energy figures, said in one line."""
    working = [g for g in report.gpus if g["energy_counter"] in ("works", "not supported")]
    if working:
        return True, f"energy: measurable with NVML on {len(working)} of {len(report.gpus)} GPU(s)"
    why = next((c.detail for c in report.checks if c.section == "GPU energy (NVML)" and not c.ok), "no GPU energy counter")
    return False, f"energy: not measurable here ({why}); cells still run, and their energy figures stay empty"


def run(args: argparse.Namespace) -> int:
    report = diagnose()
    measurable, summary = verdict(report)
    if args.json:
        emit_json(
            {
                "checks": [{**asdict(c), "status": "OK" if c.ok else "missing"} for c in report.checks],
                "gpus": report.gpus,
                "energy_measurable": measurable,
                "summary": summary,
            }
        )
        return 0
    lines: list[str] = []
    for section in dict.fromkeys(c.section for c in report.checks):
        lines += [section, *(c.line() for c in report.checks if c.section == section)]
    emit_lines([*lines, "", summary])
    return 0
