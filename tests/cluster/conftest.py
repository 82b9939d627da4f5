"""A real single-node Slurm cluster for the cluster tests, and the stub engine for the cheap ones.

``slurm_cluster`` starts munged, slurmctld and slurmd by hand (no systemd) from a slurm.conf
generated in a temporary directory: one node, this host, 2 CPUs, no GRES. It needs Debian's
``slurm-wlm`` and ``munge`` (``apt-get install -y slurm-wlm munge``) and root (slurmd runs jobs
as their user); where they are missing the tests that need it are skipped, saying which.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_DIR
from tests.timing import scaled

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


@pytest.fixture
def stub_transformers(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cell children import the stub ``transformers`` (a fake at the import boundary)."""
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(STUB_DIR) + (os.pathsep + existing if existing else ""))
    return STUB_DIR


@dataclass
class SlurmCluster:
    """A running one-node cluster: pass ``env`` to sbatch/squeue (it names the cluster's slurm.conf)."""

    root: Path
    env: dict[str, str]

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=scaled(timeout), check=False)

    def wait(self, job_id: str, timeout: float) -> None:
        """Until no task of ``job_id`` is queued or running."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            listed = self.run("squeue", "-h", "-j", job_id, "-o", "%i %T")
            if listed.returncode == 0 and not listed.stdout.strip():
                return
            time.sleep(1)
        raise AssertionError(f"Slurm job {job_id} still queued or running after {timeout} s: {self.run('squeue').stdout}")


def _missing() -> str | None:
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"Slurm is not installed here ({', '.join(absent)} missing): apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "the one-node Slurm cluster needs root (slurmd starts every job as its user)"
    return None


def _config(root: Path, host: str) -> str:
    return f"""
ClusterName=llemtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldPort=16917
SlurmdPort=16918
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName={host} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd on this host, stopped (by their pid files) when the session ends."""
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir()
    shutil.chown(root / "munge", "munge", "munge")
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(_config(root, host))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: list[Path] = []
    try:
        munge = [
            "munged", f"--socket={root}/munge/munge.socket", f"--pid-file={root}/munge/munged.pid",
            f"--log-file={root}/munge/munged.log", f"--seed-file={root}/munge/seed", "--force",
        ]  # fmt: skip
        for command, pid_file in (
            (munge, root / "munge" / "munged.pid"),
            (["slurmctld", "-f", str(conf)], root / "slurmctld.pid"),
            (["slurmd", "-f", str(conf)], root / "slurmd.pid"),
        ):
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
            if proc.returncode != 0:
                pytest.skip(f"could not start {command[0]} of a one-node Slurm cluster: {proc.stderr.strip()}")
            started.append(pid_file)
        cluster = SlurmCluster(root, env)
        deadline = time.monotonic() + scaled(60)
        while "idle" not in cluster.run("sinfo", "-h", "-o", "%T").stdout:
            if time.monotonic() > deadline:
                pytest.skip(f"the one-node Slurm cluster never became idle: {cluster.run('sinfo').stdout}")
            time.sleep(0.5)
        yield cluster
    finally:
        for pid_file in reversed(started):
            _stop(pid_file)
