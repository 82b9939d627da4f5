"""What crosses the boundary between the parent and a cell's child process, typed.

One task goes in on the child's stdin (:class:`CellTask` or :class:`IdleTask`, as JSON); events
come back over a pipe as JSON lines (:data:`ChildEvent`): ``alive``, ``prepared`` (a spare
child started ahead of its task, once its imports are done), ``ready`` once the engine's imports
are done and the task is in hand, ``phase`` as the cell moves on, then exactly one ``result`` (the
task's measurement: :class:`~pytest_llem.results.measurement.CellMeasurement` or
:class:`IdleMeasurement`) or ``error``. Both sides use these models, so a change of shape is a
change in one place, and the experiment is validated by the one schema that declares it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.results.measurement import IdlePower


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CellTask(_Message):
    """Measure one cell: the resolved experiment and where it lives."""

    kind: Literal["cell"] = "cell"
    config: ExperimentConfig
    base_dir: str = Field(description="The study file's directory: relative dataset paths resolve against it.")
    cell_dir: str = Field(description="The cell's directory, where the timeseries is written.")
    idle_reference_w: dict[str, float] = Field(
        default_factory=dict, description="Idle power per GPU UUID known to the parent, for the pre-flight check."
    )
    skip_unused_kernels: bool = Field(
        True, description="execution.skip_unused_kernels: the engine need not compile kernels the cell never calls."
    )


class IdleTask(_Message):
    """Sample the idle power of every GPU the child can see."""

    kind: Literal["idle"] = "idle"
    duration_s: float
    interval_s: float


#: A task for the child, told apart by ``kind``.
ChildTask = Annotated[CellTask | IdleTask, Field(discriminator="kind")]
TASKS: TypeAdapter[CellTask | IdleTask] = TypeAdapter(ChildTask)


class IdleMeasurement(_Message):
    """What an idle task found: one :class:`IdlePower` per GPU, and how it was sampled."""

    idle_power: list[IdlePower]
    gpu_uuids: list[str]
    method: str


class AliveEvent(_Message):
    event: Literal["alive"] = "alive"
    pid: int


class ReadyEvent(_Message):
    """Imports and device setup are done: the start-up deadline no longer applies."""

    event: Literal["ready"] = "ready"


class PreparedEvent(_Message):
    """A child started ahead of its task (a spare) has imported its engine's libraries and waits.

    ``cuda_initialized``: whether those imports created a CUDA context (torch's view). A spare
    must not hold one: it may wait while idle power is measured, and a context alone draws tens
    of watts. The parent stops starting spares for the session when one says yes.
    """

    event: Literal["prepared"] = "prepared"
    cuda_initialized: bool


class PhaseEvent(_Message):
    """The cell moved on (``phase``), or says how far it is within one (``detail``, e.g. "4/10 s")."""

    event: Literal["phase"] = "phase"
    phase: str
    detail: str | None = None


class ResultEvent(_Message):
    """The task's measurement, as JSON; the parent validates it against the task's result type."""

    event: Literal["result"] = "result"
    measurement: dict[str, Any]


class ErrorEvent(_Message):
    """The task raised: the exception's class name, message and the child's traceback."""

    event: Literal["error"] = "error"
    type: str
    message: str
    traceback: str


AnyEvent = AliveEvent | PreparedEvent | ReadyEvent | PhaseEvent | ResultEvent | ErrorEvent
#: An event from the child, told apart by ``event``.
ChildEvent = Annotated[AnyEvent, Field(discriminator="event")]
EVENTS: TypeAdapter[AnyEvent] = TypeAdapter(ChildEvent)
