"""pytest-xdist coordination: one GPU per worker, one stamp per session, one study directory.

Registered only when xdist is installed (its hooks would be unknown otherwise). The controller
gives each worker the session's stamp (so all workers write into the same study directories,
whose manifest they update under a lock) and the UUID of the one GPU it may use; workers
report back the study directories they wrote, which the controller summarises at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.study.files import is_study_file

if TYPE_CHECKING:
    from pytest_llem.plugin import LlemSession


def _names_studies(config: pytest.Config) -> bool:
    return any(is_study_file(a) for a in config.args)


class XdistCoordination:
    def __init__(self, session: LlemSession) -> None:
        self.session = session
        self._pool: list[str] | None = None
        config = session.config
        if session.is_worker or not _names_studies(config):
            return
        workers = getattr(config.option, "numprocesses", None)
        pool = self.pool()
        if isinstance(workers, int) and pool and workers > len(pool):
            raise pytest.UsageError(
                f"-n {workers} asks for more workers than the {len(pool)} GPU(s) visible: pytest-llem gives each"
                f" worker its own GPU; use -n {len(pool)} or -n auto"
            )

    def pool(self) -> list[str]:
        """The GPUs to hand out, one per worker (empty on a machine without NVIDIA GPUs)."""
        if self._pool is None:
            from pytest_llem.energy._nvml import visible_gpu_uuids

            self._pool = visible_gpu_uuids()[0]
        return self._pool

    @pytest.hookimpl(trylast=True)
    def pytest_xdist_auto_num_workers(self, config: pytest.Config) -> int | None:
        """``-n auto`` with studies = one worker per GPU."""
        if _names_studies(config) and self.pool():
            return len(self.pool())
        return None

    def pytest_configure_node(self, node: Any) -> None:
        from pytest_llem.results.writer import utc_stamp

        self.session.stamp = self.session.stamp or utc_stamp()
        node.workerinput["llem_stamp"] = self.session.stamp
        pool = self.pool()
        index = int(str(node.gateway.id).removeprefix("gw") or 0)
        node.workerinput["llem_gpu_uuid"] = pool[index] if index < len(pool) else None

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        for path in getattr(node, "workeroutput", {}).get("llem_study_dirs", []):
            self.session.study_dirs.append(Path(path))
