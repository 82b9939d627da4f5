"""The session's idle power (idle baselines), one per GPU, from the parent's side, and its cache.

Held by the session-scoped ``llem_idle_baseline`` fixture. Before a GPU cell runs, every
visible GPU needs a baseline younger than its time-to-live and measured under the study's
settings (:class:`IdleSettings`): one from this session, from a cache file of this or an earlier
study, or else a fresh one measured in a spawned child (a process with a CUDA context and
nothing running, like a cell before its work).

After the cell, its idle spot check is compared with the baseline
(:meth:`SessionIdlePower.settle_drift`). A drift beyond the threshold means the baseline is wrong
for this very cell, not only for the next: idle power is measured again at once, and the cell
subtracts the new baseline only if it agrees with the spot check; otherwise its adjusted
figures are invalid, with the reason.

Each measurement is cached per GPU (``baseline_cache_<uuid>.json`` in a study's
``_study-artefacts``) with its time and settings, and reused by later cells and later studies
while younger than its time-to-live and asked for with the same settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
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

#: Interval of the idle child's power samples (those ``std_w`` is the spread of).
IDLE_SAMPLE_INTERVAL_S = 0.1

#: ``baseline_source`` of a baseline measured again because a cell's spot check found it drifted.
REMEASURED_SOURCE = "re-measured after drift"

ARTEFACTS_DIR = "_study-artefacts"


@dataclass(frozen=True)
class IdleSettings:
    """What an idle baseline is asked to be; a baseline is reused only where it was measured so.

    The sampling time sets how much of idle power's wander the mean averages over, the interval
    which samples ``std_w`` is the spread of: a 15 s baseline is another measurement than a 30 s
    one, and a study asking for 30 s must not take another study's 15 s one from the cache. A
    baseline whose settings are unknown (a cache file written before they were recorded) matches
    nothing, and is measured afresh. The GPU is matched apart: baselines are kept per GPU UUID.
    """

    duration_s: float
    interval_s: float = IDLE_SAMPLE_INTERVAL_S

    @classmethod
    def of(cls, config: IdlePowerConfig) -> IdleSettings:
        return cls(duration_s=config.duration_seconds)

    def matches(self, baseline: IdlePower) -> bool:
        asked = (baseline.requested_duration_s, baseline.sample_interval_s)
        wanted = (self.duration_s, self.interval_s)
        # A tolerance, not ==: the figures travel through JSON and the child's arithmetic.
        return all(a is not None and math.isclose(a, w, rel_tol=1e-9) for a, w in zip(asked, wanted))

    def describe(self) -> str:
        return f"{self.duration_s:g} s sampled every {self.interval_s:g} s"


def settings_of(baseline: IdlePower) -> str:
    """The settings a baseline was measured under, in words."""
    if baseline.requested_duration_s is None or baseline.sample_interval_s is None:
        return "unknown settings (recorded before settings were)"
    return IdleSettings(baseline.requested_duration_s, baseline.sample_interval_s).describe()


def cache_file(study_dir: Path, gpu_uuid: str) -> Path:
    return study_dir / ARTEFACTS_DIR / f"baseline_cache_{sanitise(gpu_uuid)}.json"


def store(study_dir: Path, baseline: IdlePower) -> Path:
    path = cache_file(study_dir, baseline.gpu_uuid)
    write_json_atomic(path, baseline.model_dump())
    return path


def load_fresh(path: Path, ttl_s: float, wanted: IdleSettings) -> IdlePower | None:
    """The baseline cached at ``path`` if it is readable, possible, younger than ``ttl_s`` and ``wanted``.

    A file whose idle power is 0 W or less, or not finite (written by an older version, or by
    hand), is refused like a corrupt one: :class:`IdlePower` cannot hold such a figure, so it is
    never subtracted, and the GPU's idle power is measured afresh. So is one measured under
    other settings, or under settings it does not record (see :class:`IdleSettings`).
    """
    try:
        baseline = IdlePower.model_validate_json(path.read_text(encoding="utf-8"))
        fresh = baseline.age_s() <= ttl_s  # a non-numeric measured_at is a corrupt file too
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return baseline if fresh and wanted.matches(baseline) else None


def find_cached(
    results_root: Path, study_dir: Path, gpu_uuid: str, ttl_s: float, wanted: IdleSettings
) -> tuple[IdlePower, Path] | None:
    """The freshest cached baseline of this GPU under ``wanted``: this study's first, then earlier studies'."""
    own = cache_file(study_dir, gpu_uuid)
    candidates = [own] + sorted(
        (p for p in results_root.glob(f"*/{ARTEFACTS_DIR}/{own.name}") if p != own),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in candidates:
        baseline = load_fresh(path, ttl_s, wanted)
        if baseline is not None:
            return baseline, path
    return None


def drift(baseline: IdlePower, spot_w: float) -> float:
    """Relative difference of a spot-check idle power from the baseline."""
    return abs(spot_w - baseline.power_w) / baseline.power_w if baseline.power_w > 0 else 0.0


def baseline_uncertainty_w(scale_w: float, drift_w: float) -> float | None:
    """The 1-sigma error (W) of the idle baseline a cell subtracts: sqrt(scale_w^2 + drift_w^2).

    What the adjusted figure needs is how far idle power during *this cell's window* (not
    observable under load) may sit from the baseline's mean. Two parts, of separate origin and
    so added in quadrature (the caller picks ``scale_w``):

    - ``drift_w``: the summed |spot check - baseline| over the cell's GPUs. The spot check is
      the one observation of idle power in the cell's own state (model loaded, inside the
      cell); its distance from the baseline is a measured offset, taken whole as 1 sigma, which
      is conservative (part of it is the spot check's own noise). The GPUs' offsets are summed
      rather than added in quadrature because they share their causes (room and board
      temperature, clocks, driver state) and so tend to go the same way.
    - ``scale_w``: with a spot check on every GPU of the cell, the standard error of the
      baseline's mean (``std_w / sqrt(n_samples)`` per GPU, in quadrature): the offset already
      measures the wander, what is left is how well the baseline itself is known. Without one,
      nothing measures the wander, and the spread of the baseline's samples (``std_w``, in
      quadrature over GPUs) stands in for it: conservative, about ten times the standard error.

    None when the result is not finite (a corrupt ``std_w``): no uncertainty is better than NaN.
    """
    value = math.hypot(scale_w, drift_w)
    return value if math.isfinite(value) else None


def _spot_w(spot: dict[str, dict[str, Any]] | None, uuid: str) -> float | None:
    """A GPU's idle power in a cell's spot check, if it has a finite one."""
    power = (spot or {}).get(uuid, {}).get("power_w")
    if power is None:
        return None
    value = float(power)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class _Drift:
    """A GPU whose idle spot check is further from its baseline than the threshold allows."""

    uuid: str
    baseline_w: float
    spot_w: float

    def describe(self) -> str:
        relative = abs(self.spot_w - self.baseline_w) / self.baseline_w
        return (
            f"GPU {self.uuid}: idle power drifted to {self.spot_w:.1f} W from the baseline's {self.baseline_w:.1f} W"
            f" ({100 * relative:.0f} %)"
        )


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
        wanted = IdleSettings.of(settings)
        missing = []
        for uuid in uuids:
            known = self._known.get(uuid)
            if known and self._reusable(known[0], settings.ttl_seconds, wanted):
                if not cache_file(study_dir, uuid).exists():
                    store(study_dir, known[0])
                continue
            if uuid in self._stale:
                # A drifted baseline must not outlive this session through its cache file either.
                cache_file(study_dir, uuid).unlink(missing_ok=True)
            elif self._from_cache(uuid, study_dir, results_root, settings.ttl_seconds, wanted):
                continue
            missing.append(uuid)
        if not missing:
            return None
        return self._measure(settings, study_dir, startup_timeout_s)

    def _reusable(self, baseline: IdlePower, ttl_s: float, wanted: IdleSettings) -> bool:
        """This session's baseline serves again: not drifted, young enough, measured as ``wanted``."""
        return baseline.gpu_uuid not in self._stale and baseline.age_s() <= ttl_s and wanted.matches(baseline)

    def _from_cache(self, uuid: str, study_dir: Path, results_root: Path, ttl_s: float, wanted: IdleSettings) -> bool:
        """Take a matching cached baseline of ``uuid`` (copied into this study's artefacts); False if none."""
        cached = find_cached(results_root, study_dir, uuid, ttl_s, wanted)
        if cached is None:
            return False
        baseline, path = cached
        source = "cache" if path.parent.parent == study_dir else f"cache of an earlier study ({path.parent.parent.name})"
        self.set(baseline, source)
        if path != cache_file(study_dir, uuid):
            store(study_dir, baseline)
        return True

    def _measure(self, settings: IdlePowerConfig, study_dir: Path, startup_timeout_s: float) -> str | None:
        artefacts = study_dir / ARTEFACTS_DIR
        # Named by GPU too: pytest-xdist workers measure their own GPUs at the same time.
        who = sanitise(self.gpu_uuid or "all-gpus")
        run_dir = artefacts / f"baseline_run_{who}_{len(list(artefacts.glob(f'baseline_run_{who}_*'))) + 1}"
        wanted = IdleSettings.of(settings)
        task = IdleTask(duration_s=wanted.duration_s, interval_s=wanted.interval_s)
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

    def for_cell(
        self, gpu_uuids: list[str], reason: str | None, spot: dict[str, dict[str, Any]] | None = None,
        wanted: IdleSettings | None = None,
    ) -> CellIdlePower:  # fmt: skip
        """The idle baseline of the GPUs a cell used: the sum over them, or why there is none.

        A baseline of 0 W or less, or not finite, cannot be built as an :class:`IdlePower`;
        one that got in around validation (``model_construct``) is refused here all the same,
        since subtracting it would claim an adjustment that was never made. So is one found
        drifted and not measured again, and, given ``wanted``, one measured under other settings
        (what the session still holds when measuring afresh failed). ``spot``, the cell's idle
        spot check, enters the baseline's uncertainty (:func:`baseline_uncertainty_w`).
        """
        found = [self._known.get(u) for u in gpu_uuids]
        if not gpu_uuids or any(f is None for f in found):
            why = reason or ("the cell ran on no GPU" if not gpu_uuids else "no baseline for a GPU this cell used")
            return CellIdlePower(baseline_unavailable_reason=why)
        baselines = [b for b, _ in (f for f in found if f is not None)]
        refused = self._refusal(baselines, reason, wanted)
        if refused is not None:
            return CellIdlePower(baseline_unavailable_reason=refused)
        std_w = math.sqrt(sum(b.std_w**2 for b in baselines))
        spots = [(b, w) for b in baselines if (w := _spot_w(spot, b.gpu_uuid)) is not None]
        spot_drift_w = sum(abs(w - b.power_w) for b, w in spots)
        # With a spot check on every GPU the offset measures the wander; see baseline_uncertainty_w.
        scale_w = math.sqrt(sum(b.std_w**2 / max(b.n_samples, 1) for b in baselines)) if len(spots) == len(baselines) else std_w
        return CellIdlePower(
            baseline_power_w=sum(b.power_w for b in baselines),
            baseline_per_device_w=[b.power_w for b in baselines],
            baseline_std_w=std_w,
            baseline_age_s=max(b.age_s() for b in baselines),
            baseline_method="; ".join(sorted({b.method for b in baselines})),
            baseline_source="; ".join(sorted({self._known[b.gpu_uuid][1] for b in baselines})),
            baseline_uncertainty_w=baseline_uncertainty_w(scale_w, spot_drift_w),
        )

    def _refusal(self, baselines: list[IdlePower], reason: str | None, wanted: IdleSettings | None) -> str | None:
        """Why these baselines must not be subtracted from a cell, or None."""
        impossible = [f"{b.gpu_uuid} ({b.power_w:g} W)" for b in baselines if not is_positive_finite(b.power_w)]
        if impossible:
            return "idle power of " + ", ".join(impossible) + " is not above 0 W; not subtracted"
        stale = [b.gpu_uuid for b in baselines if b.gpu_uuid in self._stale]
        if stale:
            return reason or f"the idle baseline of {', '.join(stale)} drifted and was not measured again"
        other = [b for b in baselines if wanted is not None and not wanted.matches(b)]
        if other and wanted is not None:
            return reason or (
                "the idle baseline of "
                + ", ".join(f"{b.gpu_uuid} was measured over {settings_of(b)}" for b in other)
                + f", not the {wanted.describe()} this cell asks for; not subtracted"
            )
        return None

    def _drifts(self, spot: dict[str, dict[str, Any]], threshold: float) -> list[_Drift]:
        """The GPUs of ``spot`` whose idle power is further than ``threshold`` from their baseline."""
        found = []
        for uuid in spot:
            known, power = self._known.get(uuid), _spot_w(spot, uuid)
            if known is not None and power is not None and drift(known[0], power) > threshold:
                found.append(_Drift(uuid, known[0].power_w, power))
        return found

    def settle_drift(
        self, gpu_uuids: list[str], reason: str | None, spot: dict[str, dict[str, Any]], settings: IdlePowerConfig,
        remeasure: Callable[[], str | None],
    ) -> tuple[CellIdlePower, list[str]]:  # fmt: skip
        """The cell's idle baseline, checked against the cell's own spot check; and the warnings to record.

        Within ``drift_threshold`` the baseline stands. Beyond it, the baseline is wrong for this
        very cell (noticing it only for the next one left this cell's adjusted figures wrong):
        idle power is measured again now, by ``remeasure`` (the session's ``ensure``, which
        measures afresh the GPUs just marked stale), and the cell subtracts the new baseline only
        if every GPU's new baseline agrees with its spot check. If one does not (idle power moved
        during the cell) or measuring fails, no baseline fits the cell's window: its adjusted
        figures are invalid, with the reason (after a failure the GPU stays marked, so the next
        cell measures it before running; after a move the new baseline, the latest, serves the
        next cell, whose own spot check judges it). The cell itself always stands.
        """
        wanted = IdleSettings.of(settings)
        in_force = self.for_cell(gpu_uuids, reason, spot, wanted)
        own_spot = {u: spot[u] for u in gpu_uuids if u in spot}
        drifts = self._drifts(own_spot, settings.drift_threshold)
        if not drifts:
            return in_force, []
        before = {u: known[0].power_w for u in gpu_uuids if (known := self._known.get(u)) is not None}
        self._stale.update(d.uuid for d in drifts)
        failure = self._remeasured(remeasure, drifts)
        if failure is not None:
            why = "; ".join(d.describe() for d in drifts) + f", and re-measuring the idle baseline failed: {failure}"
            return _invalid(in_force, why), [f"{d.describe()}; re-measuring it failed: {failure}" for d in drifts]
        for d in drifts:
            self._known[d.uuid] = (self._known[d.uuid][0], REMEASURED_SOURCE)
        moved = self._drifts(own_spot, settings.drift_threshold)
        warnings = [self._remeasured_warning(d, moved) for d in drifts]
        if moved:
            return _invalid(in_force, self._moved_reason(moved, before)), warnings
        return self.for_cell(gpu_uuids, reason, spot, wanted), warnings

    def _remeasured(self, remeasure: Callable[[], str | None], drifts: list[_Drift]) -> str | None:
        """Measure idle power again; why that gave no new baseline for every drifted GPU, else None.

        Never raises: the cell's measurement is done, and a failure here can only cost it its
        adjusted figures, never the cell.
        """
        try:
            failure = remeasure()
        except Exception as exc:  # noqa: BLE001 - a failed re-measurement must not lose the cell (see above)
            return f"{type(exc).__name__}: {exc}"
        if failure is not None:
            return failure
        left = [d.uuid for d in drifts if d.uuid in self._stale]
        return f"no new baseline for {', '.join(left)}" if left else None

    def _remeasured_warning(self, d: _Drift, moved: list[_Drift]) -> str:
        new_w = self._known[d.uuid][0].power_w
        if any(m.uuid == d.uuid for m in moved):
            return f"{d.describe()}; re-measured after the cell: {new_w:.1f} W, still beyond the drift threshold of the spot check"
        return f"{d.describe()}; re-measured after the cell: {new_w:.1f} W, which agrees with the spot check and is subtracted"

    def _moved_reason(self, moved: list[_Drift], before: dict[str, float]) -> str:
        """Why no baseline fits the window: per GPU, the baseline before, the spot check, the new one."""
        gpus = "; ".join(
            f"GPU {m.uuid}: baseline {before.get(m.uuid, m.baseline_w):.1f} W before the cell,"
            f" spot check {m.spot_w:.1f} W inside it, re-measured {m.baseline_w:.1f} W after it"
            for m in moved
        )
        return f"idle power moved during the cell ({gpus}); no idle baseline fits its window"


def _invalid(idle: CellIdlePower, why: str) -> CellIdlePower:
    """The cell's baseline kept on record but not to be subtracted; a baseline that is absent stays absent."""
    if idle.baseline_power_w is None:
        return idle
    return idle.model_copy(update={"baseline_invalid_reason": why})
