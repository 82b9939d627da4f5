"""A stand-in for NVIDIA's ``tensorrt_llm`` on machines without it (it needs a CUDA machine).

Tests put ``tests/fakes/engines`` first on ``sys.path`` so the engine adapter imports this as
``tensorrt_llm``; the adapter has no switch for it. It fakes exactly the LLM-API surface the
adapter uses, with the names and signatures of TensorRT-LLM 1.x: ``LLM`` (whose extra keyword
arguments are checked against the pydantic fields of its args class), ``SamplingParams`` (a
keyword-only dataclass), and from ``tensorrt_llm.llmapi`` ``KvCacheConfig``, ``QuantConfig``,
``QuantAlgo``, ``TorchLlmArgs`` and ``TrtLlmArgs``.

Environment, read when a variable matters (see ``llmapi.py``):

* ``LLEM_FAKE_TRTLLM_BACKEND``: ``pytorch`` (default, 1.x ``LLM``: ``TorchLlmArgs``, has
  ``load_format``, no ``quant_config``) or ``tensorrt`` (the engine-building ``LLM``:
  ``TrtLlmArgs``, has ``quant_config``, no ``load_format``). Read at import.
* ``LLEM_FAKE_TRTLLM_LOG``: a file that gets one JSON line per event (``init`` with every
  constructor argument, ``generate`` with the sampling params, ``shutdown``).
* ``LLEM_FAKE_TRTLLM_EOS_AT``: comma-separated ``[index@]step[:token]``; the request at
  ``index`` of a ``generate`` call (every request without ``index@``) emits ``token`` (default
  its ``end_id``) at output position ``step``.
* ``LLEM_FAKE_TRTLLM_DROP_END_ID=1``: a request that stops on ``end_id`` returns its ids
  without that token (as some builds may).
* ``LLEM_FAKE_TRTLLM_SHUFFLE=1``: ``generate`` returns its outputs in reverse order.
* ``LLEM_FAKE_TRTLLM_STEP_SLEEP`` / ``LLEM_FAKE_TRTLLM_BUILD_SLEEP``: seconds slept per
  decoding step (per wave of ``max_batch_size`` requests) and while constructing ``LLM``.
"""

from tensorrt_llm.llmapi import LLM, SamplingParams

FAKE = True
__version__ = "0.0.0-fake"

__all__ = ["FAKE", "LLM", "SamplingParams", "__version__"]
