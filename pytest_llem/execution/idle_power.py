"""The session's idle power (idle baselines), one per GPU, from the parent's side, and its cache.

Held by the session-scoped ``llem_idle_baseline`` fixture. Before a GPU cell runs, every
visible GPU needs a baseline younger than its time-to-live: one from this session, from a cache
file of this or an earlier study, or else a fresh one measured in a spawned child (a process
with a CUDA context and nothing running, like a cell before its work). After the cell, its idle
spot check is compared with the baseline; a drift beyond the threshold marks the baseline stale,
so it is measured again before the next cell.

Each measurement is cached per GPU (``baseline_cache_<uuid>.json`` in a study's
``_study-artefacts``) with its time, and reused by later cells and later studies while younger
than its time-to-live.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytest_llem.config.experiment import IdlePowerConfig
from pytest_llem.energy._nvml import visible_gpu_uuids
from pytest_llem.energy.validity import is_positive_finite
from pytest_llem.errors import CellError
from pytest_llem.naming import sanitise
from pytest_llem.results.measurement import CellIdlePower, IdlePower
from pytest_llem.results.writer import write_json_atomic
from pytest_llem.runner.envelope import IdleMeasurement, IdleTask
from pytest_llem.runner.parent import run_in_child

_BASELINE_TIMEOUT_PAD_S = 300.0


ARTEFACTS_DIR = "_study-artefacts"


def cache_file(study_dir: Path, gpu_uuid: str) -> Path:
    return study_dir / ARTEFACTS_DIR / f"baseline_cache_{sanitise(gpu_uuid)}.json"


def store(study_dir: Path, baseline: IdlePower) -> Path:
    path = cache_file(study_dir, baseline.gpu_uuid)
    write_json_atomic(path, baseline.model_dump())
    return path


def load_fresh(path: Path, ttl_s: float) -> IdlePower | None:
    """The baseline cached at ``path`` if it is readable, possible and younger than ``ttl_s``.

    A file whose idle power is 0 W or less, or not finite (written by an older version, or by
    hand), is refused like a corrupt one: :class:`IdlePower` cannot hold such a figure, so it is
    never subtracted, and the GPU's idle power is measured afresh.
    """
    try:
        baseline = IdlePower.model_validate_json(path.read_text(encoding="utf-8"))
        fresh = baseline.age_s() <= ttl_s  # a non-numeric measured_at is a corrupt file too
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return baseline if fresh else None


def find_cached(results_root: Path, study_dir: Path, gpu_uuid: str, ttl_s: float) -> tuple[IdlePower, Path] | None:
    """The freshest cached baseline of this GPU: this study's first, then earlier studies'."""
    own = cache_file(study_dir, gpu_uuid)
    candidates = [own] + sorted(
        (p for p in results_root.glob(f"*/{ARTEFACTS_DIR}/{own.name}") if p != own),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in candidates:
        baseline = load_fresh(path, ttl_s)
        if baseline is not None:
            return baseline, path
    return None


def drift(baseline: IdlePower, spot_w: float) -> float:
    """Relative difference of a spot-check idle power from the baseline."""
    return abs(spot_w - baseline.power_w) / baseline.power_w if baseline.power_w > 0 else 0.0


class SessionIdlePower:
    """Baselines by GPU UUID, with where each came from."""

    def __init__(self, gpu_uuid: str | None = None) -> None:
        self._known: dict[str, tuple[IdlePower, str]] = {}
        self._stale: set[str] = set()
        self._visible: tuple[list[str], str | None] | None = None
        self.gpu_uuid = gpu_uuid  # the one GPU of a pytest-xdist worker, if any

    def visible(self) -> tuple[list[str], str | None]:
        if self._visible is None:
            self._visible = ([self.gpu_uuid], None) if self.gpu_uuid else visible_gpu_uuids()
        return self._visible

    def get(self, uuid: str) -> tuple[IdlePower, str] | None:
        return self._known.get(uuid)

    def set(self, baseline: IdlePower, source: str) -> None:
        self._known[baseline.gpu_uuid] = (baseline, source)
        self._stale.discard(baseline.gpu_uuid)

    def ensure(self, settings: IdlePowerConfig, study_dir: Path, results_root: Path, startup_timeout_s: float) -> str | None:
        """Make sure every visible GPU has a fresh baseline; return why not, or None."""
        if not settings.enabled:
            return "measurement.baseline.enabled is false"
        uuids, reason = self.visible()
        if not uuids:
            return reason
        missing = []
        for uuid in uuids:
            known = self._known.get(uuid)
            if known and uuid not in self._stale and known[0].age_s() <= settings.ttl_seconds:
                if not cache_file(study_dir, uuid).exists():
                    store(study_dir, known[0])
                continue
            if uuid in self._stale:
                # A drifted baseline must not outlive this session through its cache file either.
                cache_file(study_dir, uuid).unlink(missing_ok=True)
            cached = None if uuid in self._stale else find_cached(results_root, study_dir, uuid, settings.ttl_seconds)
            if cached is not None:
                baseline, path = cached
                source = "cache" if path.parent.parent == study_dir else f"cache of an earlier study ({path.parent.parent.name})"
                self.set(baseline, source)
                if path != cache_file(study_dir, uuid):
                    store(study_dir, baseline)
                continue
            missing.append(uuid)
        if not missing:
            return None
        return self._measure(settings, study_dir, startup_timeout_s)

    def _measure(self, settings: IdlePowerConfig, study_dir: Path, startup_timeout_s: float) -> str | None:
        artefacts = study_dir / ARTEFACTS_DIR
        # Named by GPU too: pytest-xdist workers measure their own GPUs at the same time.
        who = sanitise(self.gpu_uuid or "all-gpus")
        run_dir = artefacts / f"baseline_run_{who}_{len(list(artefacts.glob(f'baseline_run_{who}_*'))) + 1}"
        task = IdleTask(duration_s=settings.duration_seconds, interval_s=0.1)
        try:
            report = run_in_child(
                task,
                run_dir,
                IdleMeasurement,
                timeout_s=settings.duration_seconds + _BASELINE_TIMEOUT_PAD_S,
                startup_timeout_s=startup_timeout_s,
                gpu_uuid=self.gpu_uuid,
            )
        except CellError as exc:
            return f"the idle baseline could not be measured: {exc}"
        measured = report.measurement.idle_power
        for baseline in measured:
            self.set(baseline, "measured")
            store(study_dir, baseline)
        return None if measured else f"the idle baseline found no GPU ({report.measurement.method})"

    def reference_w(self) -> dict[str, float]:
        return {uuid: b.power_w for uuid, (b, _) in self._known.items()}

    def for_cell(self, gpu_uuids: list[str], reason: str | None) -> CellIdlePower:
        """The idle baseline of the GPUs a cell used: the sum over them, or why there is none.

        A baseline of 0 W or less, or not finite, cannot be built as an :class:`IdlePower`;
        one that got in around validation (``model_construct``) is refused here all the same,
        since subtracting it would claim an adjustment that was never made.
        """
        found = [self._known.get(u) for u in gpu_uuids]
        if not gpu_uuids or any(f is None for f in found):
            why = reason or ("the cell ran on no GPU" if not gpu_uuids else "no baseline for a GPU this cell used")
            return CellIdlePower(baseline_unavailable_reason=why)
        pairs = [f for f in found if f is not None]
        impossible = [f"{b.gpu_uuid} ({b.power_w:g} W)" for b, _ in pairs if not is_positive_finite(b.power_w)]
        if impossible:
            return CellIdlePower(
                baseline_unavailable_reason="idle power of " + ", ".join(impossible) + " is not above 0 W; not subtracted"
            )
        return CellIdlePower(
            baseline_power_w=sum(b.power_w for b, _ in pairs),
            baseline_per_device_w=[b.power_w for b, _ in pairs],
            baseline_std_w=math.sqrt(sum(b.std_w**2 for b, _ in pairs)),
            baseline_age_s=max(b.age_s() for b, _ in pairs),
            baseline_method="; ".join(sorted({b.method for b, _ in pairs})),
            baseline_source="; ".join(sorted({s for _, s in pairs})),
        )

    def check_drift(self, spot: dict[str, dict[str, Any]], threshold: float) -> list[str]:
        """Compare a cell's idle spot check with the baselines; stale ones are measured again."""
        warnings = []
        for uuid, figures in spot.items():
            known, power = self._known.get(uuid), figures.get("power_w")
            if known is None or power is None:
                continue
            relative = drift(known[0], float(power))
            if relative > threshold:
                self._stale.add(uuid)
                warnings.append(
                    f"GPU {uuid}: idle power drifted to {power:.1f} W from the baseline's {known[0].power_w:.1f} W"
                    f" ({100 * relative:.0f} %); the baseline is measured again before the next cell"
                )
        return warnings
