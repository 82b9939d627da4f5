"""Embedded random-weight models, so a study runs offline with nothing downloaded.

Energy per output token does not depend on weight values once the output length is fixed
(``ignore_eos``), so a Llama-architecture model with seeded random weights is a fair workload for
smoke tests and for keeping a GPU busy. The model is written once into a cache directory in the
ordinary Hugging Face layout, and every engine then loads it through its normal path
(``AutoModelForCausalLM.from_pretrained``), exactly as it would load a hub model.

Layout of the cache: ``$LLEM_CACHE_DIR/models/<name>-v<version>``, where ``$LLEM_CACHE_DIR``
defaults to ``$XDG_CACHE_HOME/pytest-llem`` or ``~/.cache/pytest-llem``.

Concurrency: several pytest-xdist workers (or cell children) may ask for the same model at
once. Each builder writes into its own temporary sibling directory and renames it into place;
a rename can only succeed onto a missing (or empty) directory, so the first complete copy wins
and later builders discard theirs. A small stamp file, ``llem_model.json``, is written last inside
the temporary directory: a directory without a matching stamp is incomplete and is rebuilt.

torch and transformers are imported only inside the functions that need them: ``resolve_model``
on a hub id or local path must stay import-light.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_llem.errors import LlemError

STAMP_FILE = "llem_model.json"
STAMP_FORMAT = 1


@dataclass(frozen=True)
class EmbeddedModelSpec:
    """The recipe of one embedded model; changing any field requires bumping ``version``.

    The version is part of the directory name, so a changed recipe never reuses an old cache.
    """

    name: str
    version: int
    seed: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 2048
    init_gain: float = 2.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    #: "saved": seeded weights written to disk; "random": architecture only, weights drawn on load
    #: directly on the device (see models/loading.py) -- for models too large to write quickly.
    weights: str = "saved"
    vocab_size: int | None = None  # None: the byte-level tokenizer's size

    @property
    def dir_name(self) -> str:
        """Directory name inside the models cache."""
        return f"{self.name}-v{self.version}"


EMBEDDED_MODELS: dict[str, EmbeddedModelSpec] = {
    # About 0.84 M parameters: fast enough for CPU tests, still a real Llama graph (GQA, RoPE).
    "llem-tiny": EmbeddedModelSpec(
        name="llem-tiny",
        version=1,
        seed=20240611,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    # About 136 M parameters: enough work per token to keep a GPU measurably busy.
    "llem-small": EmbeddedModelSpec(
        name="llem-small",
        version=1,
        seed=20240612,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=4,
    ),
    # About 7.5 B parameters in 8 layers of Llama-3-70B's shape: little Python per step and a lot
    # of GPU work, so plain generate() keeps an H100 busy (GPU-bound). Architecture only.
    "llem-wide": EmbeddedModelSpec(
        name="llem-wide",
        version=1,
        seed=20240613,
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=8,
        num_attention_heads=64,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        weights="random",
    ),
    # Llama-3.1-8B's architecture (vocabulary included), architecture only: for comparisons
    # with published figures for that model.
    "llem-llama3-8b": EmbeddedModelSpec(
        name="llem-llama3-8b",
        version=1,
        seed=20240614,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        weights="random",
        vocab_size=128256,
    ),
}


def cache_root() -> Path:
    """Root of pytest-llem's cache: ``$LLEM_CACHE_DIR``, else the XDG cache, else ``~/.cache``."""
    explicit = os.environ.get("LLEM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pytest-llem"


def embedded_model_dir(name: str) -> Path:
    """Where the embedded model ``name`` lives (or will live) in the cache."""
    return cache_root() / "models" / _spec(name).dir_name


def is_embedded(name: str) -> bool:
    """True for the names of models that pytest-llem builds itself."""
    return name in EMBEDDED_MODELS


def resolve_model(name: str) -> str:
    """Turn a study's model name into what an engine's ``from_pretrained`` accepts.

    Embedded names are materialised (once) and replaced by their local directory; anything else
    (a local directory or a hub id) is returned unchanged, since engines resolve those themselves.
    """
    if not is_embedded(name):
        return name
    return str(materialize(name))


def materialize(name: str) -> Path:
    """Make sure the embedded model ``name`` is complete in the cache; return its directory."""
    spec = _spec(name)
    target = embedded_model_dir(name)
    if is_complete(target, spec):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        scratch.chmod(0o755)  # mkdtemp makes it private; a shared cache should stay readable
        _build(spec, scratch)
        _install(scratch, target, spec)
    finally:
        # After a successful rename the scratch path no longer exists; otherwise ours lost.
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def is_complete(directory: Path, spec: EmbeddedModelSpec) -> bool:
    """A directory is usable only if its stamp, written last, matches the spec."""
    stamp = read_stamp(directory)
    if stamp is None:
        return False
    return (
        stamp.get("format") == STAMP_FORMAT
        and stamp.get("name") == spec.name
        and stamp.get("version") == spec.version
        and stamp.get("seed") == spec.seed
        and (directory / "config.json").is_file()
    )


def read_stamp(directory: Path) -> dict[str, Any] | None:
    """The stamp of a materialised model, or None when missing or unreadable."""
    try:
        data = json.loads((directory / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _spec(name: str) -> EmbeddedModelSpec:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise LlemError(f"{name!r} is not an embedded model (known: {known})") from None


def _install(scratch: Path, target: Path, spec: EmbeddedModelSpec) -> None:
    """Rename the finished scratch directory into place, or defer to a copy that beat us."""
    for _ in range(5):
        try:
            os.rename(scratch, target)
            return
        except OSError:
            if is_complete(target, spec):
                return  # another builder won the race; the caller discards our copy
            if not target.exists():
                continue  # a stale copy vanished between our rename and the check: try again
        # An incomplete directory (crashed older layout, manual damage): move it aside, retry.
        stale = target.parent / f".{target.name}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(target, stale)
        except FileNotFoundError:
            continue  # someone else moved it aside first
        shutil.rmtree(stale, ignore_errors=True)
    raise LlemError(f"could not install the embedded model {spec.name!r} into {target}")


def _build(spec: EmbeddedModelSpec, directory: Path) -> None:
    """Write config, seeded weights, tokenizer and (last) the stamp into ``directory``."""
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    # Byte-level: needs no vocabulary file, so nothing has to be downloaded.
    tokenizer = ByT5Tokenizer()
    config = LlamaConfig(
        vocab_size=spec.vocab_size or len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=spec.rms_norm_eps,
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    tokenizer.save_pretrained(str(directory))
    if spec.weights == "random":
        config.save_pretrained(str(directory))
        parameters = None
    else:
        # Constructing the model draws from torch's global RNG (transformers' own init); fork
        # it so the caller's RNG state is untouched, then overwrite every weight from our own
        # generator.
        with torch.random.fork_rng(devices=[]):
            model = LlamaForCausalLM(config)
        _seed_weights(model, spec)
        model.save_pretrained(str(directory))
        parameters = sum(p.numel() for p in model.parameters())
    stamp = {
        "format": STAMP_FORMAT,
        "name": spec.name,
        "version": spec.version,
        "seed": spec.seed,
        "weights": spec.weights,
        "parameter_count": parameters,
    }
    (directory / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def _seed_weights(model: Any, spec: EmbeddedModelSpec) -> None:
    """Initialise every parameter from a private generator, seeded per parameter name.

    Our own init (not transformers') keeps the weights identical across transformers versions,
    and seeding per name keeps them stable if a parameter is ever added or reordered.
    Matrices (the embedding included) get N(0, (init_gain / sqrt(fan_in))^2), norm scales 1,
    anything else (biases) 0. The gain is deliberately large: at transformers' usual std of 0.02
    a random Llama with tied embeddings only repeats its last input token, which would make
    greedy outputs trivially equal and hide batching or padding bugs in the parity tests.
    """
    import torch

    generator = torch.Generator(device="cpu")
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim >= 2:
                generator.manual_seed(spec.seed + zlib.crc32(name.encode("utf-8")))
                std = spec.init_gain / math.sqrt(param.shape[1])
                param.normal_(mean=0.0, std=std, generator=generator)
            elif "norm" in name:
                param.fill_(1.0)
            else:
                param.zero_()
