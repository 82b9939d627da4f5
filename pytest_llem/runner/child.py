"""The spawned child's entry point: ``python -m pytest_llem.runner.child --fd N``.

It reads the cell's spec as JSON on stdin and reports over the pipe ``N`` as JSON lines:
``alive`` as soon as the interpreter runs, ``ready`` once the engine's imports are done,
``phase`` as the cell moves on, then exactly one ``result`` or ``error``. Everything the
engine prints goes to stdout/stderr, which the parent sends to the cell's log file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any


class Channel:
    """The child's end of the report pipe."""

    def __init__(self, fd: int) -> None:
        self._out: IO[str] = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, event: str, **payload: Any) -> None:
        self._out.write(json.dumps({"event": event, **payload}, default=str) + "\n")
        self._out.flush()

    def phase(self, name: str) -> None:
        print(f"[pytest-llem] phase: {name}", flush=True)
        self.send("phase", phase=name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest_llem.runner.child")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    channel = Channel(args.fd)
    channel.send("alive", pid=os.getpid())
    try:
        spec = json.loads(sys.stdin.read())
        from pytest_llem.config.experiment import ExperimentConfig
        from pytest_llem.engines.registry import create_engine
        from pytest_llem.runner.measure import measure_cell

        if spec.get("task") == "baseline":
            from pytest_llem.runner.idle import measure_idle

            channel.send("ready")
            channel.phase("idle")
            channel.send("result", measurement=measure_idle(spec["duration_s"], spec["interval_s"]))
            return 0
        config = ExperimentConfig.model_validate(spec["config"])
        engine = create_engine(config.engine)  # imports the engine's libraries (torch, ...)
        channel.send("ready")
        measurement = measure_cell(
            config,
            engine=engine,
            base_dir=Path(spec["base_dir"]),
            cell_dir=Path(spec["cell_dir"]),
            phase=channel.phase,
            idle_reference_w=spec.get("idle_reference_w") or {},
        )
        channel.send("result", measurement=measurement)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as a report
        traceback.print_exc()
        channel.send("error", type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main())
