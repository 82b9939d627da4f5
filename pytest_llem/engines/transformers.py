"""The Hugging Face transformers engine: ``AutoModelForCausalLM.generate`` on given token ids.

Runs on one device: the first visible CUDA device when there is one (the cell's child process
sees only its own GPU), else the CPU. Batches are left-padded, as decoder-only generation needs,
and the padding is built here from the token ids the measurement loop hands over, so the
tokenizer never re-tokenises or truncates anything.

Generation settings are written into ``model.generation_config`` itself rather than passed per
call: since transformers 4.5x, ``generate`` fills every unset field of a passed config from the
model's own config, which would bring back a checkpoint's EOS id under ``ignore_eos`` or its
sampling defaults (``do_sample=True, temperature=0.6``) under greedy decoding.

``ignore_eos`` is implemented by setting ``eos_token_id=None``: generation then knows no EOS and
always runs ``max_new_tokens`` steps, while the model stays free to emit the EOS token as an
ordinary token, which is what vLLM's ``ignore_eos`` does. The alternative,
``min_new_tokens=max_new_tokens``, would mask the EOS logit and so change the tokens produced.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch
import transformers
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from pytest_llem.config.engines import TransformersConfig
from pytest_llem.config.experiment import Precision
from pytest_llem.energy._nvml import nvml_uuid
from pytest_llem.engines.latency import batch_latencies
from pytest_llem.engines.protocol import (
    BatchResult,
    LoadRequest,
    count_output_tokens,
)
from pytest_llem.errors import EngineUnavailable, LlemError
from pytest_llem.models.loading import load_causal_lm
from pytest_llem.results.measurement import GpuInfo

_DTYPES: dict[Precision, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}

class TransformersEngine:
    """:class:`~pytest_llem.engines.protocol.Engine` over transformers' ``generate``."""

    name = "transformers"

    def __init__(self) -> None:
        self._model: Any = None
        self._request: LoadRequest | None = None
        self._settings = TransformersConfig()
        self._device = torch.device("cpu")
        self._pad_id = 0
        self.weights_source = "pretrained"

    # -- loading -----------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> None:
        """Load the model in the requested precision onto the chosen device, in eval mode."""
        settings = request.section(TransformersConfig)
        device = _pick_device(request.device)
        if device.type == "cpu" and request.precision == "fp16":
            # torch runs half precision on most CPUs through slow fallbacks: a first user's fp16
            # cell spent 244 s in warm-up. Said before loading, and skippable like a missing GPU.
            raise EngineUnavailable(
                "precision fp16 on the CPU: torch has no fast half-precision kernels there (a cell can take"
                " minutes); use fp32 or bf16 on a CPU, or run fp16 cells on a GPU"
            )
        extra: dict[str, Any] = {}
        if settings.attn_implementation is not None:
            extra["attn_implementation"] = settings.attn_implementation
        model, self.weights_source = load_causal_lm(
            request.model, device, {_dtype_keyword(): _DTYPES[request.precision]}, extra
        )
        model.eval()
        # Left padding needs a pad id; any id will do, since the attention mask hides it.
        pad_id = request.pad_token_id
        if pad_id is None:
            pad_id = request.eos_token_ids[0] if request.eos_token_ids else 0
        model.generation_config = _generation_config(request, settings, pad_id)
        if settings.torch_compile:
            # Compile forward, not the module: generate() on an OptimizedModule would run the
            # original module's uncompiled forward.
            model.forward = torch.compile(model.forward)
        self._model = model
        self._request = request
        self._settings = settings
        self._device = device
        self._pad_id = pad_id
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)

    # -- what the loop asks about ------------------------------------------------------------

    @property
    def gpus(self) -> list[GpuInfo]:
        """The one GPU the model sits on, by NVML-style UUID; empty on the CPU or before load."""
        if self._model is None or self._device.type != "cuda":
            return []
        index = _cuda_index(self._device)
        props = torch.cuda.get_device_properties(index)
        return [GpuInfo(uuid=nvml_uuid(props.uuid), name=str(props.name), cuda_index=index)]

    @property
    def device_description(self) -> str:
        """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``."""
        if self._device.type == "cuda":
            index = _cuda_index(self._device)
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        return str(self._device)

    def parameter_count(self) -> int:
        """Parameters counted once each (tied embeddings are one tensor)."""
        return int(sum(p.numel() for p in self._loaded().parameters()))

    def plan_batches(self, prompts: list[list[int]]) -> list[list[list[int]]]:
        """Consecutive chunks of ``batch_size`` in the given order; the last may be smaller."""
        size = self._settings.batch_size
        return [prompts[start : start + size] for start in range(0, len(prompts), size)]

    def run_batch(self, batch: list[list[int]]) -> BatchResult:
        """Generate for one left-padded batch; the timer spans a synchronised ``generate``.

        A :class:`_StepTimer` streamer timestamps every decoding step, from which come each
        request's time to first token, its inter-token gaps and its own end-to-end time (up to
        the step of its last counted token; see :class:`~pytest_llem.engines.protocol.BatchResult`).
        Should the steps timed not match the positions generated (a transformers release that
        streams differently), the latency figures are left empty and each request's end-to-end
        time falls back to the batch's wall time, rather than being wrong.
        """
        model = self._loaded()
        request = self._request
        assert request is not None
        if not batch or any(len(ids) == 0 for ids in batch):
            raise LlemError("run_batch needs a non-empty batch of non-empty prompts")
        input_ids, attention_mask = _left_pad(batch, self._pad_id, self._device)
        torch.manual_seed(request.decoding.seed)  # sampling is reproducible batch by batch
        timer = _StepTimer()
        self._synchronize()
        start = time.perf_counter()
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=model.generation_config,
            streamer=timer,
        )
        self._synchronize()
        wall = time.perf_counter() - start
        generated = output[:, input_ids.shape[1] :].tolist()
        counted = [count_output_tokens(row, request.eos_token_ids, request.ignore_eos) for row in generated]
        width = output.shape[1] - input_ids.shape[1]
        if len(timer.step_times) != width or not timer.ended:
            return BatchResult.untimed(counted, wall)
        return BatchResult.timed(counted, wall, batch_latencies(start, timer.step_times, [len(row) for row in counted]))

    def version(self) -> str | None:
        """The installed transformers version."""
        return str(transformers.__version__)

    def effective_settings(self) -> dict[str, Any]:
        """Settings in force after load, read back from the model where it can tell."""
        model = self._loaded()
        request = self._request
        assert request is not None
        config = model.generation_config
        return {
            "batch_size": self._settings.batch_size,
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "attn_implementation_requested": self._settings.attn_implementation,
            "use_cache": self._settings.use_cache,
            "torch_compile": self._settings.torch_compile,
            "dtype": str(model.dtype),
            "device": self.device_description,
            "torch_version": str(torch.__version__),
            "transformers_version": str(transformers.__version__),
            "padding_side": "left",
            "weights": self.weights_source,
            "generation": {
                "do_sample": bool(config.do_sample),
                "temperature": config.temperature if config.do_sample else None,
                "top_p": config.top_p if config.do_sample else None,
                "top_k": config.top_k if config.do_sample else None,
                "repetition_penalty": config.repetition_penalty,
                "max_new_tokens": config.max_new_tokens,
                "seed": request.decoding.seed,
                "pad_token_id": self._pad_id,
                "eos_token_id": config.eos_token_id,
                "eos_handling": (
                    "ignore_eos: eos_token_id=None, every request runs max_new_tokens steps"
                    if request.ignore_eos
                    else "stop at the first EOS; counted up to and including it"
                ),
            },
        }

    def peak_memory_bytes(self) -> int | None:
        """Peak CUDA memory allocated since the end of load (weights included); None on CPU."""
        if self._device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self._device))

    def release(self) -> None:
        """Drop the model and give cached device memory back."""
        self._model = None
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    # -- helpers -----------------------------------------------------------------------------

    def _loaded(self) -> Any:
        if self._model is None:
            raise LlemError("the transformers engine has no model loaded; call load() first")
        return self._model

    def _synchronize(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)


class _StepTimer(BaseStreamer):  # type: ignore[misc, unused-ignore]  # Any where transformers is absent
    """Timestamps each decoding step of ``generate``, and does nothing else.

    ``generate`` calls :meth:`put` once with the prompt ids, then once per decoding step with
    that step's new token of every row (shape ``(batch,)``), whether a row has finished or not,
    and :meth:`end` when done. The check that a streamer takes batch size 1 only lives in
    ``TextStreamer``, not here. ``streamer`` has been an argument of ``generate`` throughout 4.x
    and 5.x.

    No device synchronisation is added. On CUDA the host time of a ``put`` is when the host saw
    the step, and that is a close bound on when the tokens existed: ``generate`` hands the
    streamer ``tokens.cpu()`` (a blocking device-to-host copy of ``batch`` ids) and reads
    ``unfinished_sequences.max() == 0`` on the host every step anyway, so the device is caught
    up at each step whether or not a streamer is attached; the cost of streaming is that tiny
    copy. A ``torch.cuda.synchronize()`` per step would perturb the measured window and is
    deliberately not done. (On Apple's MPS, transformers 5.2x defers the stop check and streams
    one step late, so step times there lag by about a step.)
    """

    def __init__(self) -> None:
        self.step_times: list[float] = []
        self.ended = False
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # the first call carries the prompt, not a decoding step
            self._prompt_seen = True
            return
        self.step_times.append(time.perf_counter())

    def end(self) -> None:
        self.ended = True


def _generation_config(request: LoadRequest, settings: TransformersConfig, pad_id: int) -> Any:
    """A complete config, so nothing falls back to the checkpoint's generation defaults.

    Greedy leaves temperature/top_p/top_k unset (transformers warns about sampling knobs that
    greedy ignores); sampling sets them all, and ``top_k=None`` becomes 0 (no top-k), because an
    unset top_k would silently become transformers' default of 50.
    """
    decoding = request.decoding
    eos: list[int] | None = None
    if not request.ignore_eos and request.eos_token_ids:
        eos = list(request.eos_token_ids)
    kwargs: dict[str, Any] = {
        "max_new_tokens": request.max_output_tokens,
        "num_beams": 1,
        "use_cache": settings.use_cache,
        "repetition_penalty": decoding.repetition_penalty,
        "pad_token_id": pad_id,
        "eos_token_id": eos,
        "bos_token_id": None,
    }
    if decoding.temperature > 0:
        kwargs.update(
            do_sample=True,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            top_k=decoding.top_k if decoding.top_k is not None else 0,
        )
    else:
        kwargs["do_sample"] = False
    config_class: Any = GenerationConfig  # typed in some transformers releases, not in others
    return config_class(**kwargs)


def _left_pad(batch: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask, padded on the left to the longest prompt."""
    width = max(len(ids) for ids in batch)
    ids = [[pad_id] * (width - len(row)) + list(row) for row in batch]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in batch]
    return (
        torch.tensor(ids, dtype=torch.long, device=device),
        torch.tensor(mask, dtype=torch.long, device=device),
    )


def _pick_device(requested: str) -> torch.device:
    """``auto``: first visible CUDA device, else CPU. Asking for CUDA without one is an error,
    since measuring GPU energy while inference silently ran on the CPU is worse than failing."""
    if requested == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EngineUnavailable(
                f"device {requested!r} was asked for, but torch {torch.__version__} sees no CUDA device"
            )
        device = torch.device("cuda:0" if requested == "cuda" else requested)
        if _cuda_index(device) >= torch.cuda.device_count():
            raise EngineUnavailable(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    raise LlemError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


def _dtype_keyword() -> str:
    """``dtype`` from transformers 4.56 on (``torch_dtype`` warns there), ``torch_dtype`` before.

    Decided by version rather than by trying: older versions hand an unknown ``dtype`` keyword
    on to the model constructor, which would fail only after the checkpoint was read.
    """
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56.0") else "torch_dtype"
