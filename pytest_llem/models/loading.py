"""Loading a causal LM from a directory or hub id, including architecture-only models.

A directory holding a ``config.json`` (and a tokenizer) but no weight files is an
*architecture-only* model: it is constructed from its config directly on the target device with
seeded random weights. Energy per output token does not depend on weight values when the output
length is fixed (``ignore_eos``), so this measures, say, a Llama-3.1-8B-shaped model without
downloading 16 GB, and builds it in seconds on a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.safetensors.index.json", "*.bin.index.json")
STAMP_FILE = "llem_model.json"


#: How a model value says "a path on this machine" whether or not it exists (``/`` included:
#: no hub id starts with it).
LOCAL_PATH_PREFIXES = ("./", "../", "~", "/")


def resolve_model_path(model: str, base_dir: Path) -> str:
    """The study's ``model:`` as an engine must load it: a local directory made absolute, else unchanged.

    A value that starts with ``./``, ``../``, ``~`` or ``/`` (or is ``.`` or ``..``), or that
    names something existing relative to ``base_dir``, is a local path, resolved against
    ``base_dir`` (the study file's directory), as dataset paths are: the cell's process runs in
    the cell's directory, where ``./tinycopy`` would not exist and a hub lookup would follow.
    A local path written explicitly that does not exist raises :class:`FileNotFoundError`
    naming the resolved path, never a hub lookup for ``./tinycopy``. Anything else (a hub id,
    an embedded model's name) is returned unchanged; a directory beside the study wins over a
    hub id or an embedded name it shadows, as it would for ``from_pretrained`` in that directory.

    Only the process that loads the model resolves it: the measurement_config_hash stays on
    the value as written. The hash says what is measured, in the study's terms, so that a
    study moved or checked out elsewhere with its model directory beside it still compares
    with its baselines; the resolved directory is recorded in each cell's ``model_path``.
    """
    if not model:
        return model
    explicit = model.startswith(LOCAL_PATH_PREFIXES) or model in (".", "..")
    candidate = Path(os.path.normpath(base_dir / os.path.expanduser(model)))
    try:
        exists = candidate.exists()
    except OSError:  # a hub id that is no possible file name (too long, say) names no local path
        exists = False
    if exists:
        return str(candidate)
    if explicit:
        raise FileNotFoundError(
            f"model: {model!r} is a local path, resolved against the study file's directory to"
            f" {candidate}, which does not exist"
        )
    return model


def is_architecture_only(model: str) -> bool:
    """True for a local directory with a config but no weight files."""
    directory = Path(model)
    if not (directory / "config.json").is_file():
        return False
    return not any(any(directory.glob(pattern)) for pattern in WEIGHT_PATTERNS)


def random_weights_seed(model: str) -> int:
    """The seed recorded by an embedded model's stamp, else 0."""
    try:
        stamp = json.loads((Path(model) / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    seed = stamp.get("seed", 0) if isinstance(stamp, dict) else 0
    return int(seed) if isinstance(seed, int) else 0


def load_causal_lm(model: str, device: Any, dtype_kwargs: dict[str, Any], extra: dict[str, Any]) -> tuple[Any, str]:
    """The model on ``device`` and how its weights were obtained (``"pretrained"``/``"random"``)."""
    import torch
    from transformers import AutoModelForCausalLM

    if not is_architecture_only(model):
        loaded = AutoModelForCausalLM.from_pretrained(model, **dtype_kwargs, **extra)
        return loaded.to(device), "pretrained"
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    if "attn_implementation" in extra:
        config._attn_implementation = extra["attn_implementation"]
    with torch.random.fork_rng(devices=[device] if getattr(device, "type", "cpu") == "cuda" else []):
        torch.manual_seed(random_weights_seed(model))
        auto: Any = AutoModelForCausalLM
        with torch.device(device):
            built = auto.from_config(config, **dtype_kwargs)
    return built, "random"
