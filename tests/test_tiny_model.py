"""The embedded random-weight models: deterministic, offline, safe to build concurrently."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pytest_llem.errors import LlemError
from pytest_llem.models import tiny
from tests.timing import scaled


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def weights_digest(directory: Path) -> str:
    """One checksum over every tensor of the checkpoint, by name."""
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_resolve_model_materialises_embedded_names_into_the_cache(cache: Path) -> None:
    path = Path(tiny.resolve_model("llem-tiny"))
    assert path == cache / "models" / "llem-tiny-v1"
    stamp = tiny.read_stamp(path)
    assert stamp is not None
    assert stamp["name"] == "llem-tiny" and stamp["version"] == 1
    assert stamp["seed"] == tiny.EMBEDDED_MODELS["llem-tiny"].seed
    assert 500_000 < stamp["parameter_count"] < 3_000_000
    # nothing but the finished model is left in the cache
    assert [p.name for p in path.parent.iterdir()] == ["llem-tiny-v1"]


def test_other_names_pass_through_untouched(cache: Path) -> None:
    assert tiny.resolve_model("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    assert tiny.resolve_model("/models/local-dir") == "/models/local-dir"
    assert not cache.exists()


def test_unknown_embedded_name_is_a_clear_error(cache: Path) -> None:
    with pytest.raises(LlemError, match="not an embedded model"):
        tiny.materialize("llem-huge")


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLEM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tiny.cache_root() == tmp_path / "xdg" / "pytest-llem"
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "mine"))
    assert tiny.embedded_model_dir("llem-small") == tmp_path / "mine" / "models" / "llem-small-v1"


def test_loads_through_the_ordinary_from_pretrained_path(cache: Path) -> None:
    path = tiny.resolve_model("llem-tiny")
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.bos_token_id is None
    assert model.config.tie_word_embeddings
    stamp = tiny.read_stamp(Path(path))
    assert stamp is not None
    assert sum(p.numel() for p in model.parameters()) == stamp["parameter_count"]
    assert tokenizer.decode(tokenizer.encode("héllo", add_special_tokens=False)) == "héllo"


def test_materialisation_is_deterministic_and_leaves_global_rng_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng_before = torch.get_rng_state()
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "one"))
    first = tiny.materialize("llem-tiny")
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "two"))
    second = tiny.materialize("llem-tiny")
    assert first != second
    assert weights_digest(first) == weights_digest(second)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_a_complete_directory_is_reused_not_rebuilt(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny.materialize("llem-tiny")

    def no_build(*args: Any) -> None:
        raise AssertionError("rebuilt a complete model")

    monkeypatch.setattr(tiny, "_build", no_build)
    assert tiny.materialize("llem-tiny") == path


def other_seed_stamp(directory: Path) -> dict[str, Any]:
    stamp = tiny.read_stamp(directory)
    assert stamp is not None
    return {**stamp, "seed": stamp["seed"] + 1}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: (d / tiny.STAMP_FILE).unlink(), id="no-stamp"),
        pytest.param(lambda d: (d / tiny.STAMP_FILE).write_text("{not json"), id="garbled-stamp"),
        pytest.param(lambda d: (d / tiny.STAMP_FILE).write_text(json.dumps(other_seed_stamp(d))), id="other-seed"),
        pytest.param(lambda d: (d / "config.json").unlink(), id="no-config"),
    ],
)
def test_an_incomplete_directory_is_rebuilt(cache: Path, damage: Any) -> None:
    path = tiny.materialize("llem-tiny")
    digest = weights_digest(path)
    damage(path)
    assert not tiny.is_complete(path, tiny.EMBEDDED_MODELS["llem-tiny"])
    assert tiny.materialize("llem-tiny") == path
    assert tiny.is_complete(path, tiny.EMBEDDED_MODELS["llem-tiny"])
    assert weights_digest(path) == digest
    assert [p.name for p in path.parent.iterdir()] == ["llem-tiny-v1"]


def test_concurrent_builders_agree_and_the_first_copy_wins(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All builders finish their copies before any renames, so all but one lose the race."""
    builders = 3
    barrier = threading.Barrier(builders, timeout=scaled(120))
    real_build = tiny._build
    installs: list[Path] = []
    real_install = tiny._install

    def build_then_wait(spec: tiny.EmbeddedModelSpec, directory: Path) -> None:
        real_build(spec, directory)
        barrier.wait()

    def recording_install(scratch: Path, target: Path, spec: tiny.EmbeddedModelSpec) -> None:
        real_install(scratch, target, spec)
        if not scratch.exists():
            installs.append(scratch)  # this builder's rename went through

    monkeypatch.setattr(tiny, "_build", build_then_wait)
    monkeypatch.setattr(tiny, "_install", recording_install)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(tiny.materialize("llem-tiny"))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(builders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    target = cache / "models" / "llem-tiny-v1"
    assert results == [target] * builders
    assert len(installs) == 1
    assert tiny.is_complete(target, tiny.EMBEDDED_MODELS["llem-tiny"])
    assert [p.name for p in target.parent.iterdir()] == ["llem-tiny-v1"]  # losers cleaned up


def test_install_moves_an_incomplete_target_aside(cache: Path, tmp_path: Path) -> None:
    spec = tiny.EMBEDDED_MODELS["llem-tiny"]
    good = tiny.materialize("llem-tiny")
    scratch = good.parent / ".scratch"
    shutil.copytree(good, scratch)
    (good / tiny.STAMP_FILE).unlink()  # the installed copy is now incomplete (and not empty)
    tiny._install(scratch, good, spec)
    assert not scratch.exists()
    assert tiny.is_complete(good, spec)
    assert [p.name for p in good.parent.iterdir()] == ["llem-tiny-v1"]


@pytest.mark.parametrize(("name", "low", "high"), [("llem-tiny", 0.5e6, 3e6), ("llem-small", 100e6, 200e6)])
def test_embedded_model_sizes(name: str, low: float, high: float) -> None:
    """Counted on the meta device: no memory, no weights, just the architecture."""
    spec = tiny.EMBEDDED_MODELS[name]
    config = transformers.LlamaConfig(
        vocab_size=len(transformers.ByT5Tokenizer()),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    assert low < sum(p.numel() for p in model.parameters()) < high
