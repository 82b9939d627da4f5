"""The load request's typed settings: each engine takes its own section, or is refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem.config.engines import TensorrtConfig, TransformersConfig, VllmConfig
from pytest_llem.config.experiment import DecodingConfig
from pytest_llem.engines.protocol import LoadRequest
from pytest_llem.errors import LlemError


def request_with(settings: Any) -> LoadRequest:
    return LoadRequest(
        model="m",
        precision="bf16",
        settings=settings,
        decoding=DecodingConfig(),
        max_output_tokens=4,
        ignore_eos=False,
        eos_token_ids=(1,),
        pad_token_id=0,
    )


def test_the_engines_own_section_comes_back_as_given() -> None:
    section = VllmConfig(max_num_seqs=3)
    assert request_with(section).section(VllmConfig) is section


@pytest.mark.parametrize(
    ("settings", "kind", "message"),
    [
        (
            TransformersConfig(),
            VllmConfig,
            "the vllm engine was given the transformers section TransformersConfig, not its own VllmConfig",
        ),
        (
            VllmConfig(),
            TensorrtConfig,
            "the tensorrt engine was given the vllm section VllmConfig, not its own TensorrtConfig",
        ),
        # Settings that crossed as a plain mapping, as they once did.
        (
            {"batch_size": 2},
            TransformersConfig,
            "the transformers engine was given a dict, not its own TransformersConfig",
        ),
    ],
)
def test_another_section_is_refused_naming_both(
    settings: Any, kind: type[Any], message: str
) -> None:
    with pytest.raises(LlemError) as refused:
        request_with(settings).section(kind)
    assert str(refused.value) == message
