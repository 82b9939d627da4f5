"""pytest-xdist: one GPU and one stamp per worker (the hooks are in xdist.py).

A mixin of :class:`~pytest_llem.session.core.LlemSession`: the controller hands each worker the
session's stamp and id (so they share each study's directory) and one GPU of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.session.common import names_studies


class LlemContentionWarning(pytest.PytestWarning):
    """Cells of one run share what they measure on (CPU cores under ``-n`` without GPUs)."""


class XdistWorkers:
    """The controller's side of pytest-xdist, and what a worker reports back."""

    config: pytest.Config
    is_worker: bool
    stamp: str | None
    session_id: str
    study_dirs: list[Path]
    _gpu_pool: list[str] | None


    def gpu_pool(self) -> list[str]:
        """The GPUs to hand out, one per worker (empty on a machine without NVIDIA GPUs)."""
        if self._gpu_pool is None:
            from pytest_llem.energy._nvml import visible_gpu_uuids

            self._gpu_pool = visible_gpu_uuids()[0]
        return self._gpu_pool

    def check_worker_count(self) -> None:
        """``-n`` beyond the GPUs is a usage error when studies are named: each worker needs its own GPU."""
        if self.is_worker or not names_studies(self.config):
            return
        workers = getattr(self.config.option, "numprocesses", None)
        pool = self.gpu_pool()
        if isinstance(workers, int) and workers > 1 and not pool:
            self.config.issue_config_time_warning(
                LlemContentionWarning(
                    f"-n {workers} without a GPU: every worker runs its cells on this machine's CPU cores at the"
                    " same time, so the cells contend for them and their speed and energy figures describe that"
                    " contention, not the configuration; run studies on a CPU without -n"
                ),
                stacklevel=2,
            )
        if isinstance(workers, int) and pool and workers > len(pool):
            raise pytest.UsageError(
                f"-n {workers} asks for more workers than the {len(pool)} GPU(s) visible: pytest-llem gives each"
                f" worker its own GPU; use -n {len(pool)} or -n auto"
            )

    def worker_input(self, gateway_id: str) -> dict[str, Any]:
        """What the controller hands worker ``gwN``: the session's stamp and the N-th GPU (or None)."""
        from pytest_llem.results.writer import utc_stamp

        self.stamp = self.stamp or utc_stamp()
        pool = self.gpu_pool()
        index = int(gateway_id.removeprefix("gw") or 0)
        return {
            "llem_stamp": self.stamp,
            "llem_session_id": self.session_id,
            "llem_gpu_uuid": pool[index] if index < len(pool) else None,
        }

    def add_worker_output(self, workeroutput: Mapping[str, Any]) -> None:
        """The study directories a finished worker wrote, for the controller's summary and gate."""
        for path in workeroutput.get("llem_study_dirs", []):
            self.study_dirs.append(Path(path))
