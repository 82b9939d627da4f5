"""What every inference engine offers the measurement loop.

An engine is one module implementing :class:`Engine`. The measurement loop (in the spawned
child) gives every engine the same token ids and counts tokens the same way, so figures are
comparable across engines; engines only turn token ids into generated token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pytest_llem.config.engines import ENGINE_SECTIONS, EngineSection
from pytest_llem.config.experiment import DecodingConfig, Precision
from pytest_llem.engines.latency import BatchLatencies
from pytest_llem.errors import LlemError
from pytest_llem.results.measurement import GpuInfo

#: Set in a cell's process: the path of its ``child.log``, where the engine's own output (and its
#: worker processes') lands. For choices an engine makes out of reach and only logs.
CELL_LOG_VARIABLE = "LLEM_CELL_LOG"


Section = TypeVar("Section", bound=EngineSection)


@dataclass(frozen=True)
class LoadRequest:
    """Everything an engine needs to load a model and generate, as the study validated it."""

    model: str  # local directory or hub id, already resolved (embedded models materialised)
    precision: Precision
    settings: EngineSection  # the engine's own section of the study
    decoding: DecodingConfig
    max_output_tokens: int
    ignore_eos: bool
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    device: str = "auto"  # "auto": CUDA when present, else CPU; or "cpu" / "cuda"
    #: ``execution.skip_unused_kernels``: the engine need not prepare kernels this cell never calls.
    skip_unused_kernels: bool = True

    def section(self, kind: type[Section]) -> Section:
        """The settings as the engine's own section ``kind``.

        A type check, not a validation: the section was validated when the study was read. A
        request carrying another engine's section is a wiring fault upstream, refused by name
        rather than run with settings meant for a different engine.
        """
        if not isinstance(self.settings, kind):
            got = type(self.settings)
            owner = _engine_of(got)
            given = f"the {owner} section {got.__name__}" if owner else f"a {got.__name__}"
            raise LlemError(f"the {_engine_of(kind)} engine was given {given}, not its own {kind.__name__}")
        return self.settings


def _engine_of(section: type[Any]) -> str | None:
    """The engine whose section ``section`` is, by the schema's own table; None for any other type."""
    return next((name for name, cls in ENGINE_SECTIONS.items() if cls is section), None)


@dataclass
class BatchResult:
    """One call into the engine for one batch of requests.

    ``output_token_ids`` holds, per request, the generated ids that count as output: up to and
    including the first EOS (unless ``ignore_eos``), never pads or tokens after EOS.

    Latency figures, all in seconds from the batch's synchronised start (the same start as
    ``wall_time_s``):

    * ``per_request_time_s``: per request, its own end-to-end time, up to the decoding step that
      produced its last counted token (its EOS, or its final token). This is deliberately not
      the batch's wall time: in a static batch a request that stops at EOS early has its result
      ready at that step, even though the batch generates on and returns later. Every value is
      at most ``wall_time_s``. An engine that cannot time steps may report the wall time here.
    * ``ttft_s``: per request, time until its first generated token was available.
    * ``itl_s``: flat over the batch, in request order, the gaps between consecutive *counted*
      output tokens of each request (``n - 1`` gaps for ``n`` counted tokens).

    ``ttft_s`` and ``itl_s`` are empty where the engine could not time decoding steps.
    """

    output_token_ids: list[list[int]]
    wall_time_s: float  # device-synchronised at both edges
    per_request_time_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)

    @classmethod
    def untimed(cls, output_token_ids: list[list[int]], wall_time_s: float) -> BatchResult:
        """A batch whose decoding steps were not timed: every request ends with the batch."""
        return cls(output_token_ids, wall_time_s, per_request_time_s=[wall_time_s] * len(output_token_ids))

    @classmethod
    def timed(cls, output_token_ids: list[list[int]], wall_time_s: float, latencies: BatchLatencies) -> BatchResult:
        """A batch with per-request figures from :mod:`pytest_llem.engines.latency`."""
        return cls(
            output_token_ids,
            wall_time_s,
            per_request_time_s=latencies.end_to_end_s,
            ttft_s=latencies.ttft_s,
            itl_s=latencies.itl_s,
        )


class Engine(Protocol):
    """The contract of an inference engine module."""

    name: str

    def load(self, request: LoadRequest) -> None:
        """Load the model onto its device(s); not measured for energy."""

    @property
    def gpus(self) -> list[GpuInfo]:
        """GPUs this engine runs on after :meth:`load` (by NVML UUID, which ignores CUDA_VISIBLE_DEVICES); empty on the CPU."""

    @property
    def device_description(self) -> str:
        """Where inference runs, in words, e.g. ``cuda:0 (NVIDIA H100)`` or ``cpu``."""

    def parameter_count(self) -> int:
        """Number of model parameters, for the FLOPs estimate."""

    def plan_batches(self, prompts: list[list[int]]) -> list[list[list[int]]]:
        """Group the prompts into the batches the engine runs (its measured shapes)."""

    def run_batch(self, batch: list[list[int]]) -> BatchResult:
        """Generate for one batch; synchronise the device before returning."""

    def version(self) -> str | None:
        """Version of the engine library."""

    def effective_settings(self) -> dict[str, Any]:
        """The settings in force, engine defaults included, for effective_config.json."""

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory allocated since load, where the engine can tell."""

    def release(self) -> None:
        """Free the model and device memory."""


def count_output_tokens(generated: list[int], eos_token_ids: tuple[int, ...], ignore_eos: bool) -> list[int]:
    """Cut one request's generated ids to what counts as output.

    Up to and including the first EOS; everything after it (pads, or tokens a batched
    ``generate`` keeps producing for finished rows) is not output. With ``ignore_eos`` every
    generated position counts, since generation ran to the fixed length on purpose.
    """
    if ignore_eos:
        return list(generated)
    eos = set(eos_token_ids)
    for position, token in enumerate(generated):
        if token in eos:
            return list(generated[: position + 1])
    return list(generated)
