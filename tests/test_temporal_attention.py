"""temporal-attention=reduction|packed|packed-flex: the motion modules' attention as a float32 multiply-and-sum,
or as packed sequences under a block-diagonal mask (SDPA's or flex_attention's), gives SDPA's output (within
float rounding) with separate or fused projections, and only the temporal layers change."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from stand_ins import apply_variant, stand_in_pipeline

from harness.config import RunConfig
from harness.models.motion_module import TemporalAttention
from harness.models.unet import load_unet
from variants.base import VariantError
from variants.temporal_attention import (
    FlexPackedAttnProcessor,
    PackedAttnProcessor,
    ReductionAttnProcessor,
    TemporalAttentionForm,
    pack_size,
    use_temporal_processor,
)

PROCESSORS = [ReductionAttnProcessor, PackedAttnProcessor, FlexPackedAttnProcessor]


@pytest.mark.parametrize("processor", PROCESSORS)
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dim, heads, frames, sequences", [(64, 8, 16, 24), (40, 1, 3, 6), (32, 2, 16, 9)])
def test_each_form_gives_sdpas_output(processor, dim, heads, frames, sequences, fused):
    torch.manual_seed(0)
    layer = TemporalAttention(dim, heads, max_len=24, position_encoding=True).eval()
    if fused:
        layer.fuse_projections()
    tokens = torch.randn(sequences, frames, dim)
    with torch.no_grad():
        layer.set_processor(AttnProcessor2_0())
        expected = layer(tokens)
        layer.set_processor(processor())
        got = layer(tokens)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(got, tokens)  # it did attend (the output is no copy of its input)


def test_packed_flex_compiles_into_one_graph_with_sdpas_output():
    """The value is meant for compile: flex_attention and its score modification trace into one graph without a
    break, and it still gives SDPA's output. Inductor's kernel for it is a GPU's (Triton): here the graph runs
    through AOTAutograd eagerly, since torch's C++ flex template fails on these views (the variant refuses it)."""
    torch.manual_seed(0)
    layer = TemporalAttention(40, 1, max_len=24, position_encoding=True).eval()  # head dim 40, as at 512's first level
    tokens = torch.randn(16, 16, 40)
    with torch.no_grad():
        layer.set_processor(AttnProcessor2_0())
        expected = layer(tokens)
        layer.set_processor(FlexPackedAttnProcessor())
        torch._dynamo.reset()
        got = torch.compile(layer, fullgraph=True, backend="aot_eager")(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_packing_takes_the_most_neighbouring_sequences_that_fit_and_divide():
    assert pack_size(2 * 4096, 16) == 8  # 512's first level: 8 sequences of 16 frames, 128 tokens
    assert pack_size(9, 16) == 3  # 9 sequences: 3 packs of 3 (9 is no multiple of 8)
    assert pack_size(7, 16) == 7 and pack_size(6, 3) == 6
    assert pack_size(5, 200) == 1  # sequences longer than a pack: left alone
    assert pack_size(2 * 4096, 16, 64) == 4 and pack_size(2 * 4096, 16, 256) == 16  # packed-64, packed-256


@pytest.mark.parametrize("value, sequences_a_pack", [("packed", 8), ("packed-64", 4), ("packed-256", 16)])
def test_each_packed_value_packs_its_length(value, sequences_a_pack):
    """A value's processor packs as many 16-token sequences as its length holds, and gives SDPA's output."""
    unet = load_unet("tiny").eval()
    (transform,) = TemporalAttentionForm(value).transforms()
    transform.apply(unet, None)
    layer = next(m for m in unet.modules() if isinstance(m, TemporalAttention))
    assert isinstance(layer.processor, PackedAttnProcessor)
    assert pack_size(32, 16, layer.processor.longest) == sequences_a_pack
    q, k, v = (torch.randn(32, 16, 64) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(x.view(32, 16, 2, 32).transpose(1, 2) for x in (q, k, v))).transpose(1, 2).reshape(32, 16, 64)
    torch.testing.assert_close(layer.processor.attend(q, k, v, 2, 32 ** -0.5), expected, rtol=1e-5, atol=1e-5)


def test_a_packed_token_sees_only_its_own_sequence():
    """Changing one sequence leaves its pack neighbours' outputs as they were."""
    torch.manual_seed(0)
    layer = TemporalAttention(32, 2, max_len=24, position_encoding=False).eval()
    layer.set_processor(PackedAttnProcessor())
    tokens = torch.randn(8, 16, 32)
    changed = tokens.clone()
    changed[3] = torch.randn(16, 32)
    with torch.no_grad():
        before, after = layer(tokens), layer(changed)
    keep = [i for i in range(8) if i != 3]
    torch.testing.assert_close(after[keep], before[keep], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(after[3], before[3])


@pytest.mark.parametrize(
    "value, processor",
    [("reduction", ReductionAttnProcessor), ("packed", PackedAttnProcessor), ("packed-flex", FlexPackedAttnProcessor)],
)
def test_only_the_temporal_layers_of_the_unet_change(value, processor):
    unet = load_unet("tiny").eval()
    before = {name: type(m.processor) for name, m in unet.named_modules() if isinstance(m, Attention)}
    (transform,) = TemporalAttentionForm(value).transforms()
    transform.apply(unet, None)
    after = {name: type(m.processor) for name, m in unet.named_modules() if isinstance(m, Attention)}
    temporal = {name for name, m in unet.named_modules() if isinstance(m, TemporalAttention)}
    assert temporal and all(after[name] is processor for name in temporal)
    assert all(after[name] is before[name] for name in set(after) - temporal)  # spatial and audio: as they were
    assert TemporalAttentionForm("sdpa").transforms() == []


def test_packed_flex_is_available_where_torch_has_flex_attention(monkeypatch):
    assert TemporalAttentionForm("packed-flex").is_available({"device_type": "cpu"}) is None  # torch 2.13
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *_: None)  # a torch before 2.5
    reason = TemporalAttentionForm("packed-flex").is_available({"device_type": "cpu"})
    assert "torch >= 2.5" in reason and TemporalAttentionForm("packed").is_available({}) is None


def test_packed_flex_compiled_on_the_cpu_is_refused_before_anything_changes():
    unet = load_unet("tiny").eval()
    pipeline = stand_in_pipeline(unet, config=RunConfig(compile="default", compile_cache="off"))
    with pytest.raises(VariantError, match="packed-flex: torch's CPU compiler cannot lower flex_attention"):
        apply_variant(TemporalAttentionForm("packed-flex"), pipeline)
    assert not any(isinstance(m.processor, FlexPackedAttnProcessor) for m in unet.modules() if isinstance(m, Attention))
    apply_variant(TemporalAttentionForm("packed-flex"), stand_in_pipeline(unet))  # eager: allowed
    assert any(isinstance(m.processor, FlexPackedAttnProcessor) for m in unet.modules() if isinstance(m, Attention))


def test_a_unet_without_motion_modules_is_refused():
    with pytest.raises(VariantError, match="temporal-attention=packed: the U-Net has no motion module"):
        use_temporal_processor(torch.nn.Sequential(torch.nn.Linear(4, 4)), PackedAttnProcessor, "temporal-attention=packed")
