"""Adaptive cycles from the parent's side: after the planned cells, rounds of one more cycle each.

Each round reads every adaptive study back from disk (as the summary will), asks
:func:`pytest_llem.verdicts.adaptive.needs` which configurations need another cycle, and hands
the session the cells to run: one per such configuration, in the study's configuration order,
numbered after the last cycle and placed after the last position. The session runs them as
pytest items and asks for the next round, until no configuration needs more (target met, gate
decided, cap reached, or stopped for a reason more cycles cannot fix).

Knows nothing of pytest: cells are named by study path, config id, cycle and position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_llem.execution.study_run import StudyRun
from pytest_llem.verdicts.adaptive import CycleNeed, headline, needs, relative_half_width
from pytest_llem.verdicts.finalize import finalize_study

#: Study name -> config id -> the gate rules a configuration is inconclusive under.
Inconclusive = Callable[[list[Path]], dict[str, dict[str, str]]]


@dataclass(frozen=True)
class AdaptiveCell:
    """One more cycle of one configuration, decided after the planned cycles."""

    study_path: Path
    config_id: str
    cycle: int
    position: int
    reason: str


@dataclass
class _ConfigurationState:
    planned: int  # cycles this session ran before any adaptive round
    cycles: list[int] = field(default_factory=list)  # every cycle number it ran this session
    last_need: CycleNeed | None = None  # the latest verdict on it; None: it needed nothing


class AdaptiveCycles:
    """The rounds of adaptive cycles of one session, over the studies that ask for them."""

    def __init__(
        self, runs: Mapping[Path, StudyRun], ran: list[tuple[Path, str, int]], inconclusive: Inconclusive
    ) -> None:
        """``ran``: (study path, config id, cycle) of every planned cell this session ran or tried."""
        self.runs = dict(runs)
        self.inconclusive = inconclusive
        self.rounds = 0
        self._state: dict[Path, dict[str, _ConfigurationState]] = {}
        for path, run in self.runs.items():
            order = [c.config_id for c in run.study.configurations]
            mine = [(config_id, cycle) for p, config_id, cycle in ran if p == path]
            self._state[path] = {
                config_id: _ConfigurationState(
                    planned=sum(1 for c, _ in mine if c == config_id), cycles=[k for c, k in mine if c == config_id]
                )
                for config_id in order
                if any(c == config_id for c, _ in mine)
            }

    def _failed(self, run: StudyRun) -> set[str]:
        return {e["config_id"] for e in run.manifest.entries() if e.get("status") == "failed"}

    def _next_position(self, run: StudyRun) -> int:
        return 1 + max((int(e.get("position") or 0) for e in run.manifest.entries()), default=0)

    def next_round(self) -> list[AdaptiveCell]:
        """The cells of the next round (empty: adaptive cycles are over)."""
        undecided = self.inconclusive([run.study_dir for run in self.runs.values()])
        cells: list[AdaptiveCell] = []
        for path, run in self.runs.items():
            states = self._state[path]
            ex = run.study.execution
            groups = finalize_study(run.study_dir).groups
            found = needs(
                groups,
                {config_id: len(state.cycles) for config_id, state in states.items()},
                target_ci_pct=ex.target_ci_pct,
                cap=ex.cycle_cap,
                inconclusive=undecided.get(run.study.name, {}),
                failed=self._failed(run),
            )
            verdicts = {need.config_id: need for need in found}
            position = self._next_position(run)
            for config_id, state in states.items():
                need = state.last_need = verdicts.get(config_id)
                if need is None or not need.more:
                    continue
                cycle = max(state.cycles) + 1
                state.cycles.append(cycle)
                cells.append(AdaptiveCell(path, config_id, cycle, position, f"round {self.rounds + 1}: {need.reason}"))
                position += 1
        if cells:
            self.rounds += 1
        return cells

    def report(self) -> list[str]:
        """What the rounds did, per study and configuration, for the terminal summary."""
        lines: list[str] = []
        for path, run in self.runs.items():
            ex = run.study.execution
            target = f"target +-{ex.target_ci_pct:g} %" if ex.target_ci_pct is not None else "no interval target"
            groups = {cid: g for g in finalize_study(run.study_dir).groups for cid in g.config_ids}
            lines.append(f"{run.study.name}: {target}, cap {ex.cycle_cap} cycles, {self.rounds} extra round(s)")
            for config_id, state in self._state[path].items():
                group = groups.get(config_id)
                summary = headline(group) if group is not None else None
                width = relative_half_width(summary) if summary is not None else None
                interval = f"{summary.metric} +-{100 * width:.1f} %" if summary is not None and width is not None else "no interval"
                if state.last_need is None:
                    outcome = "done"
                elif state.last_need.more:
                    outcome = "stopped before deciding (session stopping)"
                else:
                    outcome = state.last_need.reason
                lines.append(f"  {config_id}: {state.planned} -> {len(state.cycles)} cycles, {interval}; {outcome}")
        return lines
