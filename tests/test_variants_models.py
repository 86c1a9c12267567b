"""Model-changing variants (quantization, pruning, DeepCache, compile) on the tiny U-Net, on CPU."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from stand_ins import apply_variant, stand_in_pipeline
from torch import nn

from harness.models.unet import LatentSyncUNet, load_unet
from harness.models.unet_config import UNetConfig
from harness.pipeline.lipsync import LipsyncPipeline
from variants.base import VariantError
from variants.compile import Compile
from variants.deepcache import DeepCache, DeepCacheUNet
from variants.pruning import Pruning, Skipped, count_parameters, droppable_blocks, prune_inner_channels
from variants.quantization import Quantization

CPU = {"device_type": "cpu"}


def _inputs(
    frames: int = 2, seed: int = 0, batch: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, frames, 8, 8, generator=g)
    audio = torch.randn(batch * frames, 50, 384, generator=g)
    return sample, torch.tensor(900 - 150 * seed), audio


@pytest.fixture
def unet() -> LatentSyncUNet:
    return load_unet("tiny").eval()


def _run(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return module(*inputs)


def _rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _call_counter(modules: dict[str, nn.Module]) -> dict[str, int]:
    calls = dict.fromkeys(modules, 0)

    def hook(name: str):
        def count(*_: object) -> None:
            calls[name] += 1

        return count

    for name, module in modules.items():
        module.register_forward_hook(hook(name))
    return calls


# -- quantization


@pytest.mark.parametrize(
    ("value", "expected"),
    [("none", "none"), ("BNB-INT8", "bnb-int8"), (None, "none"), ("torchao-fp8", "torchao-fp8")],
)
def test_quantization_parses_known_methods(value, expected):
    assert Quantization(value).value == expected


def test_quantization_rejects_unknown_method_naming_the_choices():
    with pytest.raises(VariantError, match="bnb-nf4"):
        Quantization("int3")


@pytest.mark.parametrize("method", ["torchao-fp8", "torchao-fp8-row"])
def test_fp8_is_unavailable_on_cpu_with_the_reason(method):
    reason = Quantization(method).is_available(CPU)
    assert reason is not None and "8.9" in reason


@pytest.mark.parametrize("version, available", [("0.12.1+cu126", False), ("0.13.0", True)])
def test_fp8_on_a_gpu_needs_the_torchao_whose_config_floors_the_scale(monkeypatch, version, available):
    torchao = pytest.importorskip("torchao")
    monkeypatch.setattr(torchao, "__version__", version)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (9, 0))  # an H200's
    reason = Quantization("torchao-fp8-row").is_available({"device_type": "cuda"})
    assert (reason is None) == available
    if not available:
        assert "torchao >= 0.13" in reason and version in reason


def test_row_wise_fp8_says_it_needs_bf16_before_quantizing_anything(unet):
    with pytest.raises(VariantError, match="dtype: bf16"):
        apply_variant(Quantization("torchao-fp8-row"), stand_in_pipeline(unet))
    assert all(type(m.weight) is nn.Parameter for m in unet.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("method", ["torchao-fp8", "torchao-fp8-row"])
def test_fp8_scales_of_a_row_of_zeros_quantize_it_to_zeros_not_nan(method):
    """The unguided half's audio is zero, so the cross-attention's keys and values see rows of zeros; torchao's
    dynamic scale of such a row was 0 (0/0 = NaN: the H200's per-row denoise ended in NaN latents). The config's
    floor keeps it finite. torchao's own scale and quantize functions, on the CPU (its fp8 matmul needs a GPU)."""
    pytest.importorskip("torchao")
    from torchao.quantization.quant_primitives import _choose_scale_float8, _quantize_affine_float8

    from variants.quantization import _torchao_config

    config = _torchao_config(method)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    x[2] = 0
    block = [1, 64] if method == "torchao-fp8-row" else [4, 64]
    unfloored = _choose_scale_float8(x, block, hp_value_lb=None)
    scale = _choose_scale_float8(x, block, hp_value_lb=config.activation_value_lb)
    quantized = _quantize_affine_float8(x, scale).float()
    assert torch.isfinite(quantized).all() and (quantized[2] == 0).all()
    torch.testing.assert_close(quantized * scale, x.float(), rtol=0.07, atol=0.0)  # e4m3: 3 mantissa bits
    if method == "torchao-fp8-row":  # the failure this guards against
        assert unfloored[2].item() == 0 and torch.isnan(_quantize_affine_float8(x, unfloored).float()[2]).all()


# int8 activations too (one scale per token) move the output further than int8 weights alone: 0.13 here
@pytest.mark.parametrize(("method", "bound"), [("torchao-int8wo", 0.05), ("torchao-int8dq", 0.25)])
def test_torchao_int8_quantizes_the_linears_and_changes_the_output_a_little(unet, method, bound):
    pytest.importorskip("torchao")
    from torchao.utils import TorchAOBaseTensor

    variant = Quantization(method)
    assert variant.is_available(CPU) is None and variant.change_tier("none", method) == "lossy"
    inputs = _inputs()
    before = _run(unet, inputs)
    linears = {name: m for name, m in unet.named_modules() if isinstance(m, nn.Linear)}
    apply_variant(variant, stand_in_pipeline(unet))
    # int8dq's kernel needs more than 16 rows: the time embedding's MLP (one row per batch entry) stays float
    kept = {name for name, m in linears.items() if not isinstance(m.weight, TorchAOBaseTensor)}
    expected = {"time_embedding.linear_1", "time_embedding.linear_2"} if method == "torchao-int8dq" else set()
    assert kept == expected
    after = _run(unet, inputs)
    assert torch.isfinite(after).all()
    assert 0 < _rel_error(after, before) < bound


@pytest.mark.parametrize(("method", "layer_type"), [("bnb-int8", "Linear8bitLt"), ("bnb-nf4", "Linear4bit")])
def test_bitsandbytes_replaces_linears_or_says_why_not(unet, method, layer_type):
    variant = Quantization(method)
    reason = variant.is_available(CPU)
    if reason is not None:
        assert "bitsandbytes" in reason
        pytest.skip(reason)
    inputs = _inputs()
    before = _run(unet, inputs)
    count = sum(isinstance(m, nn.Linear) for m in unet.modules())
    apply_variant(variant, stand_in_pipeline(unet))
    assert [type(m).__name__ for m in unet.modules()].count(layer_type) == count
    assert not any(type(m) is nn.Linear for m in unet.modules())
    after = _run(unet, inputs)
    assert torch.isfinite(after).all()
    # nf4 keeps 4 bits per weight: a larger drift than int8, still far from noise
    assert 0 < _rel_error(after, before) < (0.05 if method == "bnb-int8" else 0.5)


def test_nf4_is_unavailable_where_bitsandbytes_dequantizes_it_wrongly(monkeypatch):
    pytest.importorskip("bitsandbytes", reason="pip install bitsandbytes (the project's [quant] extra)")
    # bitsandbytes 0.50.2 on AVX-512 CPUs: a 96-wide layer's weights come back 3-30% off (0.69 on the tiny
    # U-Net's output, where the test above asked for < 0.5); the probe then makes the variant unavailable
    monkeypatch.setattr("variants.quantization._nf4_cpu_error", lambda: 0.03)
    assert "dequantizes NF4 weights wrongly on this CPU" in Quantization("bnb-nf4").is_available(CPU)
    assert Quantization("bnb-int8").is_available(CPU) is None  # int8 does not take that path
    monkeypatch.setattr("variants.quantization._nf4_cpu_error", lambda: 0.0)
    assert Quantization("bnb-nf4").is_available(CPU) is None


# -- pruning


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("none", "none"),
        (None, "none"),
        ("channels:0.25", "channels:0.25"),
        ({"method": "channels", "ratio": 0.5}, "channels:0.5"),
        ("drop-motion", "drop-motion"),
        ({"method": "drop-motion"}, "drop-motion"),
        ("drop-blocks:a.b, c", "drop-blocks:a.b,c"),
        ({"method": "drop-blocks", "blocks": ["x"]}, "drop-blocks:x"),
    ],
)
def test_pruning_parses_short_and_long_forms(value, expected):
    assert Pruning(value).value == expected


@pytest.mark.parametrize(
    "value",
    [
        "channels:1.5",
        "channels",
        {"method": "channels", "ratio": 0},
        "drop-motion:3",
        {"method": "cut"},
        {"method": "drop-blocks", "blocks": []},
        {"method": "channels", "ratio": 0.2, "blocks": ["x"]},
    ],
)
def test_pruning_rejects_bad_values(value):
    with pytest.raises(VariantError, match="pruning"):
        Pruning(value)


def test_pruning_describes_itself_as_one_tracking_value():
    assert Pruning({"method": "drop-blocks", "blocks": ["a", "b"]}).describe() == {
        "pruning": "drop-blocks:a,b"
    }


def test_channel_pruning_shrinks_inner_dims_and_keeps_the_io(unet):
    inputs = _inputs()
    before = _run(unet, inputs)
    params = count_parameters(unet)
    ff_widths = [m.net[2].in_features for m in unet.modules() if type(m).__name__ == "FeedForward"]
    apply_variant(Pruning("channels:0.25"), stand_in_pipeline(unet))
    after = _run(unet, inputs)
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert not torch.allclose(after, before)
    pruned_ff = [m.net[2].in_features for m in unet.modules() if type(m).__name__ == "FeedForward"]
    assert pruned_ff == [w - w // 4 for w in ff_widths]
    # The attention and feed-forward inner dims hold most weights of the tiny model but not all of them.
    assert 0.05 * params < params - count_parameters(unet) < 0.25 * params


def test_attention_pruning_of_dead_channels_leaves_the_output_unchanged():
    """Channels with zero weights carry nothing: pruning exactly them must not change the output, which also
    checks the softmax temperature is kept for the smaller head dim."""
    from diffusers.models.attention import FeedForward
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    block = nn.ModuleDict(
        {"attn": Attention(query_dim=64, heads=2, dim_head=32), "ff": FeedForward(64, activation_fn="geglu")}
    ).eval()
    dead = torch.cat([torch.arange(8) * 4 + 1, 32 + torch.arange(8) * 4 + 3])  # 8 per head, heads of 32
    with torch.no_grad():
        for layer in (block.attn.to_q, block.attn.to_k, block.attn.to_v):
            layer.weight[dead] = 0
        block.attn.to_out[0].weight[:, dead] = 0
        inner = block.ff.net[2].in_features  # 256: zero a quarter of the GEGLU channels
        gone = torch.arange(0, inner, 4)
        block.ff.net[0].proj.weight[gone] = 0
        block.ff.net[0].proj.bias[gone] = 0
    x = torch.randn(3, 10, 64)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return block.ff(block.attn(x))

    before = forward()
    assert prune_inner_channels(block, 0.25) == 2
    assert block.attn.to_q.out_features == 48 and block.ff.net[2].in_features == 192
    torch.testing.assert_close(forward(), before, rtol=1e-5, atol=1e-5)


def test_drop_motion_removes_every_motion_module_and_they_are_not_called(unet):
    motion = {n: m for n, m in unet.named_modules() if n.split(".")[-2:-1] == ["motion_modules"]}
    motion_params = sum(count_parameters(m) for m in motion.values())
    params = count_parameters(unet)
    inputs = _inputs()
    before = _run(unet, inputs)
    calls = _call_counter(motion)
    apply_variant(Pruning("drop-motion"), stand_in_pipeline(unet))
    after = _run(unet, inputs)
    levels, layers = len(unet.config.block_out_channels), unet.config.layers_per_block
    assert len(motion) == levels * layers + levels * (layers + 1)  # after every resnet but the mid block's
    assert all(count == 0 for count in calls.values())
    assert count_parameters(unet) == params - motion_params
    assert after.shape == before.shape and torch.isfinite(after).all() and not torch.allclose(after, before)


def _last_motion_modules(unet: LatentSyncUNet) -> tuple[str, str]:
    """Names of the last and the second-to-last motion module of the last up block."""
    last = len(unet.up_blocks[-1].motion_modules) - 1
    prefix = f"up_blocks.{len(unet.up_blocks) - 1}.motion_modules"
    return f"{prefix}.{last}", f"{prefix}.{last - 1}"


def test_drop_blocks_skips_the_named_blocks_only(unet):
    last, kept = _last_motion_modules(unet)
    names = [last, "mid_block.attentions.0"]
    modules = dict(unet.named_modules())
    calls = _call_counter({name: modules[name] for name in [*names, kept]})
    params = count_parameters(unet)
    dropped_params = sum(count_parameters(modules[name]) for name in names)
    pipeline = stand_in_pipeline(unet)
    apply_variant(Pruning({"method": "drop-blocks", "blocks": names}), pipeline)
    out = _run(pipeline.unet, _inputs())
    assert calls == {names[0]: 0, names[1]: 0, kept: 1}
    assert all(isinstance(unet.get_submodule(name), Skipped) for name in names)
    assert count_parameters(unet) == params - dropped_params
    assert torch.isfinite(out).all()


def test_drop_blocks_names_the_fault(unet):
    last, _ = _last_motion_modules(unet)
    misspelt = last.replace("motion_modules", "motion_module")
    with pytest.raises(VariantError, match=f"did you mean {last}"):
        apply_variant(Pruning(f"drop-blocks:{misspelt}"), stand_in_pipeline(unet))
    with pytest.raises(VariantError, match="not a residual block"):
        apply_variant(Pruning("drop-blocks:up_blocks.3.resnets.0"), stand_in_pipeline(unet))
    droppable = droppable_blocks(unet)
    assert "mid_block.attentions.0.transformer_blocks.0" in droppable and last in droppable
    assert not any(".resnets." in name or "samplers" in name for name in droppable)


def test_channel_pruning_of_a_quantized_unet_explains_the_order(unet):
    pytest.importorskip("torchao")
    pipeline = stand_in_pipeline(unet)
    apply_variant(Quantization("torchao-int8wo"), pipeline)
    with pytest.raises(
        VariantError, match="prunes before it quantizes, whatever order the settings are given"
    ):
        apply_variant(Pruning("channels:0.25"), pipeline)
    assert Pruning.order < Quantization.order < DeepCache.order < Compile.order


# -- DeepCache


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("off", "off"),
        (None, "off"),
        ("upstream-default", "interval=3,branch=0"),
        (4, "interval=4,branch=0"),
        ("4", "interval=4,branch=0"),
        ({"interval": 2, "branch": 1}, "interval=2,branch=1"),
        ("interval=2, branch=1", "interval=2,branch=1"),
    ],
)
def test_deepcache_parses(value, expected):
    assert DeepCache(value).value == expected


@pytest.mark.parametrize(
    "value", ["fast", {"interval": 0}, {"interval": 2, "branch": -1}, {"every": 2}, True, "interval=x"]
)
def test_deepcache_rejects_bad_values(value):
    with pytest.raises(VariantError, match="deepcache"):
        DeepCache(value)


def test_deepcache_runs_deep_blocks_on_full_steps_only(unet):
    deep = {
        "down_blocks.1": unet.down_blocks[1],
        "mid_block": unet.mid_block,
        "up_blocks.2": unet.up_blocks[2],
    }
    shallow = {"down_blocks.0": unet.down_blocks[0], "up_blocks.3": unet.up_blocks[3]}
    steps = [_inputs(seed=i) for i in range(6)]
    plain = [_run(unet, inputs) for inputs in steps]
    pipeline = stand_in_pipeline(unet)
    apply_variant(DeepCache("upstream-default"), pipeline)
    calls = _call_counter({**deep, **shallow})
    history = []
    for inputs in steps:
        history.append(_run(pipeline.unet, inputs))
        assert len({calls[name] for name in deep}) == 1  # the deep part runs all or nothing
        assert all(calls[name] == len(history) for name in shallow)
    assert calls["mid_block"] == 2  # calls 1 and 4
    for i, (cached, full) in enumerate(zip(history, plain, strict=True)):
        if i % 3 == 0:
            torch.testing.assert_close(cached, full, rtol=0, atol=0)
        else:
            assert torch.isfinite(cached).all() and not torch.allclose(cached, full, atol=1e-3)
    # A new segment (segment hook) starts with a full step even mid-interval.
    for hook in pipeline.segment_hooks:
        hook()
    torch.testing.assert_close(_run(pipeline.unet, steps[1]), plain[1], rtol=0, atol=0)
    assert calls["mid_block"] == 3


@pytest.mark.parametrize("branch", [0, 1, 2, 3])
def test_deepcache_shallow_path_on_its_own_cache_equals_the_full_unet(unet, branch):
    """The shallow path fed the features the full path cached from the same inputs must give the U-Net's
    output exactly: this checks which skips the shallow up blocks take."""
    inputs = _inputs(frames=3, batch=2)
    wrapper = DeepCacheUNet(unet, interval=2, branch=branch)
    with torch.no_grad():
        full, cache = wrapper.full_path(*inputs)
        shallow = wrapper.shallow_path(*inputs, cache)
    expected = _run(unet, inputs)
    torch.testing.assert_close(full, expected, rtol=0, atol=0)
    torch.testing.assert_close(shallow, expected, rtol=0, atol=0)


def test_deepcache_branch_must_fit_the_unet(unet):
    with pytest.raises(VariantError, match="branch must be in 0..3"):
        apply_variant(DeepCache({"interval": 3, "branch": 4}), stand_in_pipeline(unet))


# -- compile


def test_compile_parses_and_checks_the_device():
    assert Compile(False).value == "off" and Compile(True).value == "default"
    with pytest.raises(VariantError, match="max-autotune"):
        Compile("fastest")
    assert Compile.change_tier("off", "default") == Compile.change_tier("default", "max-autotune") == "float"
    for mode in ("reduce-overhead", "cudagraphs"):
        assert "CUDA" in Compile(mode).is_available(CPU)


def test_compile_comes_last_and_compiles_the_wrapper_not_the_bypassed_unet(unet):
    """Listed before DeepCache, compile still applies after it (its declared order) and compiles the wrapper's
    two paths."""
    from harness.config import RunConfig
    from variants import transforms_for

    vae = SimpleNamespace(encoder=nn.Conv2d(3, 8, 1), decoder=nn.Conv2d(4, 3, 1))
    pipeline = stand_in_pipeline(unet, vae)
    config = RunConfig().replace(compile="max-autotune-no-cudagraphs", deepcache="upstream-default")
    for transform in transforms_for(config):
        LipsyncPipeline.apply(pipeline, transform)
    assert [a.split(":")[0] for a in pipeline.applied] == ["unet", "segment_hooks", "unet", "vae"]
    wrapper = pipeline.unet
    assert isinstance(wrapper, DeepCacheUNet)
    assert wrapper._full != wrapper.full_path and wrapper._shallow != wrapper.shallow_path
    assert vae.decoder._compiled_call_impl is not None and vae.encoder._compiled_call_impl is not None
    assert unet._compiled_call_impl is None


@pytest.mark.slow
def test_default_compile_matches_eager_on_a_small_unet():
    if Compile("default").is_available(CPU):
        pytest.skip(Compile("default").is_available(CPU))
    # One level, one layer: every layer type of the U-Net (resnet, spatial and temporal transformers, skip
    # concat) at the least compile time inductor needs on CPU.
    config = dataclasses.replace(
        UNetConfig.named("tiny"),
        block_out_channels=(32,),
        down_block_types=("CrossAttnDownBlock3D",),
        up_block_types=("CrossAttnUpBlock3D",),
        layers_per_block=1,
    )
    torch.manual_seed(0)
    small = LatentSyncUNet(config).eval()
    inputs = _inputs()
    eager = _run(small, inputs)
    pipeline = stand_in_pipeline(small)
    apply_variant(Compile("default"), pipeline)
    compiled = _run(pipeline.unet, inputs)
    assert small._compiled_call_impl is not None
    assert math.isfinite(_rel_error(compiled, eager)) and _rel_error(compiled, eager) < 1e-4


def test_channel_pruning_keeps_inference_weights_frozen(unet):
    unet.requires_grad_(False)
    attn = next(m for m in unet.modules() if type(m).__name__ == "Attention")
    width = attn.to_q.out_features
    apply_variant(Pruning("channels:0.5"), stand_in_pipeline(unet))
    assert not any(p.requires_grad for p in unet.parameters())
    assert attn.to_q.out_features == attn.to_k.out_features == attn.to_out[0].in_features == attn.inner_dim
    assert attn.inner_dim < width and attn.inner_dim % attn.heads == 0
