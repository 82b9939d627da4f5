"""Engine names to engine objects, importing each engine's heavy libraries only on demand.

The plugin and the study layer know engines by name only; the spawned child calls
:func:`create_engine`, so torch, vLLM or TensorRT-LLM are imported in the child and never in the
pytest process.
"""

from __future__ import annotations

from pytest_llem.config.engines import ENGINE_NAMES
from pytest_llem.engines.protocol import Engine
from pytest_llem.errors import EngineUnavailable

_INSTALL_HINT = {
    "transformers": 'pip install "pytest-llem[transformers]"',
    "vllm": 'pip install "pytest-llem[vllm]"',
    "tensorrt": 'pip install "pytest-llem[tensorrt]"',
}


#: The top-level packages whose absence means the engine is simply not installed.
_PACKAGES = {
    "transformers": {"torch", "transformers"},
    "vllm": {"vllm"},
    "tensorrt": {"tensorrt_llm"},
}


def create_engine(name: str) -> Engine:
    """A fresh, unloaded engine; :class:`EngineUnavailable` says what to install when it can't."""
    try:
        if name == "transformers":
            from pytest_llem.engines.transformers import TransformersEngine

            return TransformersEngine()
        if name == "vllm":
            from pytest_llem.engines.vllm import VllmEngine

            return VllmEngine()
        if name == "tensorrt":
            from pytest_llem.engines.tensorrt import TensorrtEngine

            return TensorrtEngine()
    except ModuleNotFoundError as exc:
        # Only the engine's own packages being absent means "not installed here". Anything else
        # (a dependency of theirs missing, an API that moved, a bug of ours) is a broken
        # environment: it must fail the cell with its traceback, never turn into a quiet skip.
        if exc.name not in _PACKAGES[name]:
            raise
        raise EngineUnavailable(
            f"the {name} engine cannot be imported ({exc}); install it with: {_INSTALL_HINT[name]}"
        ) from exc
    known = ", ".join(ENGINE_NAMES)
    raise EngineUnavailable(f"unknown engine {name!r}; known engines: {known}")
