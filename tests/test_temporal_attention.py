"""temporal-attention=reduction: the motion modules' attention as a float32 multiply-and-sum gives SDPA's output
(within float rounding) with separate or fused projections, and only the temporal layers change."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from harness.models.motion_module import TemporalAttention
from harness.models.unet import load_unet
from variants.base import VariantError
from variants.temporal_attention import ReductionAttnProcessor, use_reduction_attention


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dim, heads, frames", [(64, 8, 16), (40, 1, 3)])
def test_reduction_gives_sdpas_output(dim, heads, frames, fused):
    torch.manual_seed(0)
    layer = TemporalAttention(dim, heads, max_len=24, position_encoding=True).eval()
    if fused:
        layer.fuse_projections()
    tokens = torch.randn(6, frames, dim)
    with torch.no_grad():
        layer.set_processor(AttnProcessor2_0())
        expected = layer(tokens)
        layer.set_processor(ReductionAttnProcessor())
        got = layer(tokens)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(got, tokens)  # it did attend (the output is no copy of its input)


def test_only_the_temporal_layers_of_the_unet_change():
    unet = load_unet("tiny").eval()
    before = {name: type(m.processor) for name, m in unet.named_modules() if isinstance(m, Attention)}
    use_reduction_attention(unet)
    after = {name: type(m.processor) for name, m in unet.named_modules() if isinstance(m, Attention)}
    temporal = {name for name, m in unet.named_modules() if isinstance(m, TemporalAttention)}
    assert temporal and all(after[name] is ReductionAttnProcessor for name in temporal)
    assert all(after[name] is before[name] for name in set(after) - temporal)  # spatial and audio: as they were


def test_a_unet_without_motion_modules_is_refused():
    with pytest.raises(VariantError, match="no motion module"):
        use_reduction_attention(torch.nn.Sequential(torch.nn.Linear(4, 4)))
