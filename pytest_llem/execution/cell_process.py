"""How a cell's process is started and ended: the study's ``execution`` keys, applied.

``prestart_child`` (a spare whose imports are done, see :mod:`pytest_llem.runner.spare`),
``compile_cache`` (see :mod:`pytest_llem.runner.compile_cache`) and ``teardown`` (see
:func:`pytest_llem.runner.parent.run_in_child`); ``skip_unused_kernels`` travels with the
cell's task to its engine (:mod:`pytest_llem.engines.unused_kernels`). None of them acts inside a measured window: a
spare for the next cell imports libraries while this cell's engine loads, and is suspended from
this cell's idle spot check until its window has ended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.runner.compile_cache import CompileCache, compile_cache_for
from pytest_llem.runner.parent import PhaseListener, Teardown
from pytest_llem.runner.process import child_environment
from pytest_llem.runner.spare import POOL, SpareChild
from pytest_llem.study.schema import ExecutionConfig

#: When the next cell's spare may start: as this cell's engine starts loading (no idle check,
#: warm-up or window is running then), and in any case once its window has ended.
START_SPARE = ("ready", "report")
#: From this cell's idle spot check (a CPU cell has none: its warm-up) through its measured
#: window the spare is suspended.
PAUSE_SPARE = ("preflight", "warmup")
RESUME_SPARE = "report"


@dataclass
class CellProcess:
    """One cell's process settings: its environment, its compile cache, a spare to take over."""

    engine: str
    execution: ExecutionConfig
    gpu_uuid: str | None
    base_dir: Path
    #: The engines of the cells pytest runs next (the next one's first), distinct: their
    #: processes may start ahead while this cell's engine loads.
    upcoming_engines: tuple[str, ...] = ()
    cache: CompileCache = field(init=False)
    env: dict[str, str] = field(init=False)
    spare: SpareChild | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.cache = compile_cache_for(self.execution.compile_cache, self.base_dir)
        self.env = self._environment(self.cache)

    def _environment(self, cache: CompileCache) -> dict[str, str]:
        return child_environment(self.gpu_uuid, extra=cache.environment(dict(os.environ)))

    @property
    def spares_apply(self) -> bool:
        """Spares need an environment known ahead; a cold cache is new for every cell."""
        return self.execution.prestart_child and self.execution.compile_cache != "cold"

    def prestart(self) -> None:
        """Before the cell's idle checks: have its own spare importing, if none is (the first cell),
        and the coming cells' too (while the first cell's idle power is measured, not its load alone)."""
        if self.spares_apply:
            POOL.start(self.engine, self.env)
            for engine in self.upcoming_engines:
                POOL.start(engine, self.env)

    def take_spare(self) -> SpareChild | None:
        """The spare that becomes this cell's process, if one matches it."""
        self.spare = POOL.take(self.engine, self.env) if self.spares_apply else None
        return self.spare

    @property
    def teardown(self) -> Teardown:
        return self.execution.teardown

    def listener(self, on_phase: PhaseListener | None) -> PhaseListener:
        """``on_phase``, plus the next cell's spare: started as this cell's engine loads,
        suspended from its idle spot check through its window, let go on after it."""

        def hear(phase: str, detail: str | None) -> None:
            if self.upcoming_engines and self.spares_apply and detail is None:
                if phase in START_SPARE:
                    # The coming cells of this study share this cell's cache directory and environment;
                    # one of another study or GPU would not match, and is discarded when it comes.
                    POOL.retain(self.upcoming_engines)
                    for engine in self.upcoming_engines:
                        POOL.start(engine, self.env)
                if phase in PAUSE_SPARE:
                    POOL.pause()
                elif phase == RESUME_SPARE:
                    POOL.resume()
            if on_phase is not None:
                on_phase(phase, detail)

        return hear

    def describe(self) -> dict[str, Any]:
        """For the record: how this cell's process started and ended."""
        return {
            "prestarted": self.spare is not None,
            "prestart_disabled_reason": POOL.disabled_reason,
            "compile_cache": self.cache.describe(),
            "teardown": self.execution.teardown,
            "skip_unused_kernels": self.execution.skip_unused_kernels,
        }

    def close(self) -> None:
        self.cache.cleanup()
