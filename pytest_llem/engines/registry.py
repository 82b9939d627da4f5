"""Engine names to engine objects, importing each engine's heavy libraries only on demand.

The plugin and the study layer know engines by name only; the spawned child calls
:func:`create_engine`, so torch, vLLM or TensorRT-LLM are imported in the child and never in the
pytest process.
"""

from __future__ import annotations

from pytest_llem.engines.protocol import Engine
from pytest_llem.errors import EngineUnavailable

ENGINE_NAMES = ("transformers", "vllm", "tensorrt")

_INSTALL_HINT = {
    "transformers": 'pip install "pytest-llem[transformers]"',
    "vllm": 'pip install "pytest-llem[vllm]"',
    "tensorrt": 'pip install "pytest-llem[tensorrt]"',
}


def create_engine(name: str) -> Engine:
    """A fresh, unloaded engine; :class:`EngineUnavailable` says what to install when it can't."""
    if name == "transformers":
        try:
            from pytest_llem.engines.transformers import TransformersEngine
        except ImportError as exc:
            raise EngineUnavailable(
                f"the transformers engine needs torch and transformers ({exc}); "
                f"install them with: {_INSTALL_HINT[name]}"
            ) from exc
        return TransformersEngine()
    if name in ("vllm", "tensorrt"):
        raise EngineUnavailable(f"the {name} engine is not available in this version of pytest-llem yet")
    known = ", ".join(ENGINE_NAMES)
    raise EngineUnavailable(f"unknown engine {name!r}; known engines: {known}")
