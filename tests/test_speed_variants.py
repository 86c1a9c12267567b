"""Speed variants on tiny models, on CPU: a forced attention kernel, fused attention projections, the compile
recipe's options, channels-last convolutions, optimum-quanto quantization and TAESD with seeded random weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from stand_ins import apply_variant, stand_in_pipeline
from torch import nn

from harness.config import RunConfig
from harness.models.scheduler import load_scheduler
from harness.models.unet import LatentSyncUNet, load_unet
from harness.models.vae import TaesdAsVae, load_vae
from harness.models.weights import resolve_weights
from harness.pipeline.lipsync import LipsyncPipeline
from variants import load_pipeline, transforms_for
from variants.attention import BACKENDS, Attention, SdpaKernelUNet
from variants.base import VariantError
from variants.channels_last import ChannelsLast
from variants.compile import Compile
from variants.deepcache import DeepCache, DeepCacheUNet
from variants.fuse_qkv import FuseQkv
from variants.pruning import Pruning
from variants.quantization import Quantization
from variants.quanto_linears import quantize_linears_quanto
from variants.vae import Vae
from variants.vae_slicing import VaeSlicing
from variants.values import resolve

CPU = {"device_type": "cpu"}


def _inputs(side: int = 8, frames: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 13, frames, side, side, generator=g)
    audio = torch.randn(frames, 50, 384, generator=g)
    return sample, torch.tensor(900 - 150 * seed), audio


def _run(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return module(*inputs)


def _rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture
def unet() -> LatentSyncUNet:
    return load_unet("tiny").eval()


# -- attention kernel


def test_attention_parses_and_sits_between_deepcache_and_compile():
    assert Attention("MATH").value == "math" and Attention(None).value == "auto"
    with pytest.raises(VariantError, match="cudnn"):
        Attention("fastest")
    assert Attention.change_tier("auto", "flash") == Attention.change_tier("math", "efficient") == "float"
    assert DeepCache.order < Attention.order < Compile.order
    assert Attention("auto").transforms() == [] and Attention("auto").is_available(CPU) is None


@pytest.mark.parametrize("name", ["efficient", "cudnn"])
def test_gpu_only_kernels_are_reported_unavailable_on_cpu(unet, name):
    reason = Attention(name).is_available(CPU)
    assert reason is not None and BACKENDS[name].name in reason and "cpu" in reason
    # the transform checks the loaded U-Net's own head dims on the pipeline's device and dtype too
    with pytest.raises(VariantError, match=f"attention={name}: the {BACKENDS[name].name} kernel"):
        apply_variant(Attention(name), stand_in_pipeline(unet))


def test_every_attention_call_runs_under_the_chosen_kernel(unet):
    """A kernel CPU lacks makes the wrapped U-Net fail: the choice reaches its attention layers."""
    with pytest.raises(RuntimeError, match="No viable backend"):
        _run(SdpaKernelUNet(unet, BACKENDS["efficient"]), _inputs())


def test_kernels_that_run_on_cpu_give_the_unwrapped_output(unet):
    runnable = [name for name in BACKENDS if Attention(name).is_available(CPU) is None]
    assert "math" in runnable
    inputs = _inputs()
    plain = _run(unet, inputs)
    for name in runnable:
        pipeline = stand_in_pipeline(unet)
        apply_variant(Attention(name), pipeline)
        wrapper = pipeline.unet
        assert isinstance(wrapper, SdpaKernelUNet) and wrapper.backend == BACKENDS[name]
        # what the pipeline reads from its U-Net still answers
        assert (wrapper.config, wrapper.dtype, wrapper.device) == (unet.config, unet.dtype, unet.device)
        # the same attention through another kernel: equal up to float reassociation
        torch.testing.assert_close(_run(wrapper, inputs), plain, rtol=1e-4, atol=1e-5)


@torch._functorch.config.patch(enable_autograd_cache=True)  # the wrapper turns it off for the process
def test_compile_compiles_inside_the_attention_wrapper(unet):
    """Listed in any order, compile comes after attention and goes through the wrapper's compile, so the kernel
    choice stays outside the compiled graph. Nothing is called, so nothing is actually compiled here."""
    # compile_cache off: no process-wide inductor cache folder is set by a test
    config = RunConfig().replace(compile="default", attention="math", compile_cache="off")
    pipeline = stand_in_pipeline(unet, SimpleNamespace(decoder=nn.Conv2d(4, 3, 1)), config=config)
    for transform in transforms_for(config):
        LipsyncPipeline.apply(pipeline, transform)
    assert pipeline.applied == ["unet:attention=math", "unet:compile=default", "vae:compile=default"]
    assert isinstance(pipeline.unet, SdpaKernelUNet) and pipeline.unet.unet is unet
    assert unet._compiled_call_impl is not None and pipeline.unet._compiled_call_impl is None
    assert not torch._functorch.config.enable_autograd_cache


# One process as a run has it: the harness's compile cache folder, then a compile of one attention call, with
# torch's own kernel choice (auto) or under attention=math; prints whether the code calls the flash kernel, the
# graph-cache counters and the output's deviation from eager.
_COMPILE_ONE = """
import sys, torch
from variants.compile import use_compile_cache
mode, cache = sys.argv[1:]
use_compile_cache(cache)  # first, as the levers bench does: before torch's compile configs are imported
from variants.attention import BACKENDS, SdpaKernelUNet
from torch._inductor.utils import run_and_get_code
torch.manual_seed(0)
class Attend(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(8, 8)
    def forward(self, q):
        q = self.project(q)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)
module, q = Attend(), torch.randn(1, 2, 16, 8)
if mode != "auto":
    module = SdpaKernelUNet(module, BACKENDS[mode])
module.compile()
with torch.no_grad():
    out, code = run_and_get_code(module, q)
    eager = (module if mode == "auto" else module.unet).forward(q)  # forward itself: not compiled
hits = torch._dynamo.utils.counters["inductor"]["fxgraph_cache_hit"]
print("flash" if "flash_attention" in code[0] else "no-flash", hits, float((out - eager).abs().max()))
"""


def _compile_one(mode: str, cache: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _COMPILE_ONE, mode, str(cache)], capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[1], env={**os.environ, **env},
    )


def test_a_forced_kernel_is_compiled_not_taken_from_a_cache_of_another(tmp_path):
    """In separate processes sharing the harness's cache folder, as the levers and a sweep's trials run: a graph
    compiled with torch's own choice (on a CPU, the flash kernel), then the same call under attention=math. The
    math graph is compiled, not the cached flash one (AOTAutograd's cache keys dynamo's graph, where both are one
    SDPA call; on the H200 `attention: flash` ran `compile`'s cuDNN graph). And a TORCHINDUCTOR_AUTOGRAD_CACHE=1
    in the environment, which outranks the variant's switch, is an error naming it, not a silent wrong graph."""
    auto = _compile_one("auto", tmp_path)
    assert auto.returncode == 0, auto.stderr[-2000:]
    forced = _compile_one("math", tmp_path)
    assert forced.returncode == 0, forced.stderr[-2000:]
    (kernel, _, _), (forced_kernel, hits, deviation) = auto.stdout.split(), forced.stdout.split()
    assert (kernel, forced_kernel, hits) == ("flash", "no-flash", "0")
    assert float(deviation) < 1e-5
    env_forced = _compile_one("math", tmp_path, TORCHINDUCTOR_AUTOGRAD_CACHE="1")
    assert env_forced.returncode != 0 and "attention=math under compile" in env_forced.stderr
    assert "TORCHINDUCTOR_AUTOGRAD_CACHE=1" in env_forced.stderr


def test_attention_wraps_deepcache_which_compile_then_compiles(unet):
    config = RunConfig().replace(
        compile="default", attention="math", deepcache="upstream-default", compile_cache="off"
    )
    pipeline = stand_in_pipeline(unet, SimpleNamespace(decoder=nn.Conv2d(4, 3, 1)), config=config)
    for transform in transforms_for(config):
        LipsyncPipeline.apply(pipeline, transform)
    labels = [entry.split("=")[0] for entry in pipeline.applied]
    assert labels == [
        "unet:deepcache",
        "segment_hooks:deepcache",
        "unet:attention",
        "unet:compile",
        "vae:compile",
    ]
    deepcache = pipeline.unet.unet
    assert isinstance(deepcache, DeepCacheUNet) and pipeline.unet.reset == deepcache.reset
    assert deepcache._full != deepcache.full_path and deepcache._shallow != deepcache.shallow_path
    assert unet._compiled_call_impl is None


def test_deepcache_inside_the_attention_wrapper_still_caches(unet):
    steps = [_inputs(seed=i) for i in range(2)]
    plain = [_run(unet, inputs) for inputs in steps]
    pipeline = stand_in_pipeline(unet)
    apply_variant(DeepCache("upstream-default"), pipeline)
    apply_variant(Attention("math"), pipeline)
    full, shallow = (_run(pipeline.unet, inputs) for inputs in steps)
    torch.testing.assert_close(full, plain[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(shallow, plain[1], atol=1e-3)  # the second call reused the cached features
    for hook in pipeline.segment_hooks:
        hook()
    torch.testing.assert_close(_run(pipeline.unet, steps[1]), plain[1], rtol=1e-4, atol=1e-5)


# -- fused attention projections


def _attention_layers(unet: nn.Module) -> list[nn.Module]:
    from diffusers.models.attention_processor import Attention as DiffusersAttention

    return [m for m in unet.modules() if isinstance(m, DiffusersAttention)]


def test_fuse_qkv_replaces_the_projections_by_one_linear_with_the_same_output(unet):
    assert FuseQkv("true").value == "on" and FuseQkv("off").transforms() == []
    assert FuseQkv.change_tier("off", "on") == "float"
    assert Pruning.order < FuseQkv.order < ChannelsLast.order < Quantization.order < Compile.order
    inputs = _inputs()
    plain = _run(unet, inputs)
    layers = _attention_layers(unet)
    cross = sum(m.is_cross_attention for m in layers)
    linears = sum(isinstance(m, nn.Linear) for m in unet.modules())
    assert cross and len(layers) > cross  # the tiny U-Net has both kinds
    pipeline = stand_in_pipeline(unet)
    apply_variant(FuseQkv("on"), pipeline)
    assert pipeline.applied == ["unet:fuse-qkv=on"] and pipeline.unet is unet
    for m in layers:
        names = {name for name, _ in m.named_children()}
        fused = {"to_q", "to_kv"} if m.is_cross_attention else {"to_qkv"}
        assert fused <= names and not {"to_k", "to_v"} & names and ("to_q" in names) == m.is_cross_attention
    # three Linears became one in each self-attention, two became one in each cross-attention
    assert sum(isinstance(m, nn.Linear) for m in unet.modules()) == linears - 2 * (len(layers) - cross) - cross
    torch.testing.assert_close(_run(unet, inputs), plain, rtol=1e-5, atol=1e-6)
    with pytest.raises(VariantError, match="no unfused"):  # applying it twice is a mistake, said so
        apply_variant(FuseQkv("on"), stand_in_pipeline(unet))


def test_quantization_after_fuse_qkv_quantizes_the_fused_projection(unet):
    pytest.importorskip("torchao")
    from torchao.utils import TorchAOBaseTensor

    config = RunConfig().replace(quantization="torchao-int8wo", fuse_qkv="on")
    pipeline = stand_in_pipeline(unet, config=config)
    for transform in transforms_for(config):
        LipsyncPipeline.apply(pipeline, transform)
    assert pipeline.applied == ["unet:fuse-qkv=on", "unet:quantization=torchao-int8wo"]
    assert all(isinstance(m.to_qkv.weight, TorchAOBaseTensor) for m in _attention_layers(unet) if hasattr(m, "to_qkv"))


# -- compile recipe


@pytest.mark.parametrize("value", ["default+recipe", "max-autotune-no-cudagraphs+recipe"])
def test_compile_recipe_passes_the_modes_options_and_the_recipes_to_inductor(value):
    from torch._inductor import list_mode_options

    from variants.compile import INDUCTOR_RECIPE

    kwargs = Compile(value).compile_kwargs()
    mode = value.removesuffix("+recipe")
    assert kwargs == {"options": {**list_mode_options(mode), **INDUCTOR_RECIPE}, "dynamic": False}
    assert kwargs["options"]["conv_1x1_as_mm"] and not kwargs["options"]["epilogue_fusion"]
    # torch.compile checks every option name against inductor's config when it is called (nothing compiles yet)
    torch.compile(nn.Linear(2, 2), **kwargs)
    with pytest.raises(RuntimeError, match="no_such_option"):
        torch.compile(nn.Linear(2, 2), options={**kwargs["options"], "no_such_option": True})
    assert Compile.change_tier("default", value) == "float"


# -- regional compile


@pytest.mark.parametrize("value", ["default+regional", "max-autotune-no-cudagraphs+recipe+regional"])
def test_regional_compile_passes_the_modes_arguments(value):
    assert Compile(value).compile_kwargs() == Compile(value.removesuffix("+regional")).compile_kwargs()
    assert Compile.change_tier("default", value) == "float"


def test_regional_compile_compiles_each_repeated_block_and_alike_blocks_share_a_graph(unet, monkeypatch):
    """Only the resnets, spatial transformers and motion modules compile, not the U-Net; blocks of one class
    and shape share a graph, so fewer graphs are built than there are blocks; none is left eager by dynamo's
    limit of graphs per code object (a class's forward); the output is eager's. Dynamo's eager backend stands in
    for inductor here: which modules compile is the variant's, how is torch's."""
    from torch._dynamo.utils import counters

    from harness.models.motion_module import MotionModule
    from harness.models.unet_layers import ResnetBlock, SpatialTransformer

    inputs = _inputs(frames=4)
    regions = [m for m in unet.modules() if isinstance(m, (ResnetBlock, SpatialTransformer, MotionModule))]
    shapes: set[tuple] = set()  # each region call's class, weights' shapes and input shapes: one graph each

    def record(module: nn.Module, args: tuple) -> None:
        arg_shapes = tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args)
        shapes.add((type(module), tuple(p.shape for p in module.parameters()), arg_shapes))

    hooks = [m.register_forward_pre_hook(record) for m in regions]
    expected = _run(unet, inputs)
    for hook in hooks:
        hook.remove()
    monkeypatch.setattr(Compile, "compile_kwargs", lambda self: {"backend": "eager", "dynamic": False})
    torch._dynamo.reset()
    # dynamo's default limit, restored afterwards with whatever the variant set (torch's own patch: pytest's
    # monkeypatch deletes a config entry on undo)
    with torch._dynamo.config.patch(recompile_limit=8):
        apply_variant(Compile("default+regional"), stand_in_pipeline(unet))
        assert unet._compiled_call_impl is None and unet.conv_in._compiled_call_impl is None
        assert all(m._compiled_call_impl is not None for m in regions)
        counters.clear()
        torch.testing.assert_close(_run(unet, inputs), expected, rtol=0, atol=0)
        assert len(shapes) <= counters["stats"]["unique_graphs"] < len(regions)
        assert not counters["unimplemented"]  # no graph break: no block left eager at dynamo's limit
        resnet_shapes = [signature for signature in shapes if signature[0] is ResnetBlock]
        assert len(resnet_shapes) > 8  # the tiny U-Net's resnets alone pass dynamo's default limit of 8 a class
        with torch._dynamo.config.patch(error_on_recompile=True):  # warm: every block finds its graph
            torch.testing.assert_close(_run(unet, inputs), expected, rtol=0, atol=0)
    torch._dynamo.reset()


@pytest.mark.parametrize("wrapper", ["attention", "deepcache"])
def test_regional_compile_refuses_a_unet_inside_a_wrapper_with_its_own_compile(unet, wrapper):
    """attention's wrapper turns AOTAutograd's cache off in its compile (else a forced kernel can run another's
    graph) and DeepCache compiles its two paths: compiling the blocks inside would bypass both."""
    settings = {"attention": "math"} if wrapper == "attention" else {"deepcache": "upstream-default"}
    config = RunConfig().replace(compile="default+regional", compile_cache="off", **settings)
    pipeline = stand_in_pipeline(unet, SimpleNamespace(decoder=nn.Conv2d(4, 3, 1)), config=config)
    with pytest.raises(VariantError, match="regional compiles the U-Net's blocks, which would bypass"):
        for transform in transforms_for(config):
            LipsyncPipeline.apply(pipeline, transform)
    assert all(m._compiled_call_impl is None for m in unet.modules())


# -- channels-last


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last)


def _conv_outputs_channels_last(module: nn.Module, run) -> dict[str, bool]:
    """{conv name: whether its output was channels-last} over one call of run(); 1x1 outputs are either."""
    seen: dict[str, bool] = {}

    def record(name: str):
        def hook(_module: nn.Module, _args: object, out: torch.Tensor) -> None:
            seen[name] = _is_channels_last(out) and not out.is_contiguous()

        return hook

    handles = [
        conv.register_forward_hook(record(name))
        for name, conv in module.named_modules()
        if isinstance(conv, nn.Conv2d)
    ]
    run()
    for handle in handles:
        handle.remove()
    return seen


def test_channels_last_runs_every_convolution_channels_last_with_the_same_output(unet):
    vae = load_vae("tiny").eval()
    inputs = _inputs(side=16)  # 16x16 latents: the deepest level is 2x2, where the layout is visible
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    plain_unet = _run(unet, inputs)
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mode()
        plain_decoded = vae.decode(latents).sample
    pipeline = stand_in_pipeline(unet, vae)
    apply_variant(ChannelsLast("on"), pipeline)
    assert pipeline.applied == ["unet:channels-last=on", "vae:channels-last=on"]
    for model in (pipeline.unet, pipeline.vae):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(_is_channels_last(conv.weight) for conv in convs)
    spatial = [m.weight for m in unet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert not any(weight.is_contiguous() for weight in spatial)  # converted, not merely ambiguous
    outputs: dict[str, torch.Tensor] = {}
    seen = _conv_outputs_channels_last(unet, lambda: outputs.update(unet=_run(unet, inputs)))
    assert seen and all(seen.values()), [name for name, ok in seen.items() if not ok]
    torch.testing.assert_close(outputs["unet"], plain_unet, rtol=1e-4, atol=1e-5)
    assert outputs["unet"].is_contiguous()  # the U-Net hands the sampler a plain tensor
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(images).latent_dist.mode(), latents, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(vae.decode(latents).sample, plain_decoded, rtol=1e-4, atol=1e-5)


def test_channels_last_sits_after_pruning_and_before_quantization():
    assert ChannelsLast("true").value == "on" and ChannelsLast(False).value == "off"
    assert ChannelsLast("off").transforms() == [] and ChannelsLast.change_tier("off", "on") == "float"
    assert Pruning.order < ChannelsLast.order < Quantization.order < Compile.order


# -- VAE slicing


@pytest.mark.parametrize("kind", ["full", "taesd"])
def test_vae_slicing_encodes_and_decodes_one_image_at_a_time_with_the_same_output_and_draws(unet, kind):
    vae = load_vae("tiny", kind=kind, taesd="tiny").eval()
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        plain_sample = vae.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(5))
        plain_decoded = vae.decode(plain_sample).sample
    pipeline = stand_in_pipeline(unet, vae)
    apply_variant(VaeSlicing("on"), pipeline)
    assert pipeline.applied == ["vae:vae-slicing=on"]
    batches: list[int] = []
    hooks = [
        part.register_forward_hook(lambda _m, args, _out: batches.append(args[0].shape[0]))
        for part in (pipeline.vae.encoder, pipeline.vae.decoder)
    ]
    with torch.no_grad():
        # sampled once from the concatenated per-image parameters: the same noise draws as the whole batch
        sliced_sample = pipeline.vae.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(5))
        sliced_decoded = pipeline.vae.decode(sliced_sample).sample
    for hook in hooks:
        hook.remove()
    assert batches == [1] * 6
    torch.testing.assert_close(sliced_sample, plain_sample, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sliced_decoded, plain_decoded, rtol=1e-4, atol=1e-5)


def test_vae_slicing_is_float_tier_and_sits_before_compile():
    assert VaeSlicing("true").value == "on" and VaeSlicing("off").transforms() == []
    assert VaeSlicing.change_tier("off", "on") == "float"
    assert ChannelsLast.order < VaeSlicing.order < Quantization.order < Compile.order


# -- optimum-quanto


def test_quanto_methods_say_what_they_miss(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    pytest.importorskip("optimum.quanto")
    for method in ("quanto-int8", "quanto-int4", "quanto-fp8", "quanto-w8a8"):
        assert Quantization(method).value == method
    assert Quantization("quanto-int8").is_available(CPU) is None
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert "no-such-compiler" in Quantization("quanto-int4").is_available(CPU)
    assert Quantization("quanto-fp8").is_available(CPU) is None  # no compiled kernel on CPU
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    for method in ("quanto-int4", "quanto-fp8"):
        assert "nvcc" in Quantization(method).is_available({"device_type": "cuda"})
    assert Quantization("quanto-w8a8").is_available({"device_type": "cuda"}) is None
    monkeypatch.setitem(sys.modules, "optimum.quanto", None)  # import now fails as if not installed
    assert "pip install optimum-quanto" in Quantization("quanto-int8").is_available(CPU)


def test_quanto_int8_quantizes_every_linear_and_stays_close(unet):
    pytest.importorskip("optimum.quanto")
    from optimum.quanto import QLinear, WeightQBytesTensor

    inputs = _inputs()
    before = _run(unet, inputs)
    names = {name for name, m in unet.named_modules() if type(m) is nn.Linear}
    apply_variant(Quantization("quanto-int8"), stand_in_pipeline(unet))
    quantized = {name: m for name, m in unet.named_modules() if isinstance(m, QLinear)}
    assert set(quantized) == names and not any(type(m) is nn.Linear for m in unet.modules())
    assert all(
        isinstance(m.weight, WeightQBytesTensor) and m.weight._data.dtype == torch.int8
        for m in quantized.values()
    )
    after = _run(unet, inputs)
    assert torch.isfinite(after).all()
    # Per-channel int8 moves each weight by at most 1/254 of its row's largest: under 1% per layer, a few
    # percent at most through the whole U-Net (the bound the torchao int8 test uses too).
    assert 0 < _rel_error(after, before) < 0.05


def test_quanto_w8a8_calibrates_its_activation_scales_at_load(unet):
    pytest.importorskip("optimum.quanto")
    from optimum.quanto import QLinear

    from harness.models.whisper import load_whisper

    inputs = _inputs()
    before = _run(unet, inputs)
    pristine = {k: v.clone() for k, v in unet.state_dict().items()}
    with pytest.raises(VariantError, match="calibration"):
        quantize_linears_quanto(load_unet("tiny"), "quanto-w8a8")
    pipeline = stand_in_pipeline(
        unet,
        config=RunConfig(steps=2, segment_frames=2),
        whisper=load_whisper("tiny"),
        make_scheduler=lambda: load_scheduler("ddim"),
    )
    apply_variant(Quantization("quanto-w8a8"), pipeline)
    layers = [m for m in unet.modules() if isinstance(m, QLinear)]
    assert layers and all(m.activation_qtype is not None for m in layers)
    assert all(m.input_scale.item() != 1.0 for m in layers)  # every layer ran under calibration
    calibrated = _run(unet, inputs)
    # Without calibration the scales stay at quanto's default 1.0: an int8 step of 1.0 on the activations.
    uncalibrated = load_unet("tiny").eval()
    uncalibrated.load_state_dict(pristine)
    quantize_linears_quanto(uncalibrated, "quanto-w8a8", calibration=lambda _module: None)
    assert torch.isfinite(calibrated).all()
    assert _rel_error(calibrated, before) < 0.5 * _rel_error(_run(uncalibrated, inputs), before)


# -- TAESD with random weights


def _taesd_params(blocks: int, convs: int, channels: int = 64) -> int:
    """Parameters of madebyollin/taesd's encoder or decoder: `blocks` residual blocks of three 3x3 convs,
    `convs` bias-free 3x3 resampling convs, and the two end convs between 3 / 4 channels and `channels`."""
    conv3 = 9 * channels * channels
    ends = (9 * 3 * channels + channels) + (9 * channels * 4 + 4)  # 3 -> c and c -> 4 (or 4 -> c, c -> 3)
    return blocks * 3 * (conv3 + channels) + convs * conv3 + ends


def test_synthetic_taesd_is_the_real_size_and_reproducible():
    vae = load_vae("unused", kind="taesd", taesd="synthetic")
    assert isinstance(vae, TaesdAsVae)
    encoder = sum(p.numel() for p in vae.encoder.parameters())
    decoder = sum(p.numel() for p in vae.decoder.parameters())
    # encoder: 10 blocks + 3 stride-2 convs; decoder: 10 blocks + 3 convs after upsampling; ~1.22 M each
    assert encoder == _taesd_params(blocks=10, convs=3) == 1_222_532
    assert decoder == _taesd_params(blocks=10, convs=3) - 1 == 1_222_531  # its last conv ends in 3, not 4
    again = load_vae("unused", kind="taesd", taesd="synthetic")
    assert all(torch.equal(a, b) for a, b in zip(vae.parameters(), again.parameters(), strict=True))
    with torch.no_grad():
        latents = vae.encode(torch.rand(1, 3, 64, 64) * 2 - 1).latent_dist.sample()
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()


def test_random_taesd_needs_no_folder_and_marks_a_checkpoint_run_synthetic(tmp_path):
    assert Vae("taesd").is_available({"taesd_weights": "synthetic"}) is None
    assert Vae("taesd").is_available({"taesd_weights": "tiny"}) is None
    assert "synthetic or tiny" in Vae("taesd").is_available({"taesd_weights": str(tmp_path / "none")})
    root = tmp_path / "ckpt"
    (root / "whisper").mkdir(parents=True)
    for name in ("latentsync_unet.pt", "whisper/tiny.pt", "sd-vae-ft-mse/diffusion_pytorch_model.bin"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"")
    assert resolve_weights(root).is_real and resolve_weights(root, taesd=tmp_path).is_real
    source = resolve_weights(root, taesd="synthetic")
    assert source.kind == "checkpoint+synthetic-taesd" and not source.is_real
    assert resolve_weights("tiny", taesd="synthetic").kind == "tiny"


def test_tiny_taesd_pipeline_runs_end_to_end(tmp_path):
    from scipy.io import wavfile

    from harness.pipeline.demo_clip import demo_audio, demo_frames
    from harness.pipeline.media import VideoWriter, iter_frames

    video, audio, out = tmp_path / "v.mp4", tmp_path / "a.wav", tmp_path / "out.mp4"
    with VideoWriter(video, fps=25) as writer:
        for frame in demo_frames(10):
            writer.write(np.ascontiguousarray(frame[:256, :256]))
    wavfile.write(audio, 16000, demo_audio(0.4))
    config = resolve(
        {"weights": "tiny", "device": "cpu", "steps": 1, "vae": "taesd", "taesd_weights": "tiny"}
    )
    pipeline = load_pipeline(config)
    assert isinstance(pipeline.vae, TaesdAsVae)
    assert sum(p.numel() for p in pipeline.vae.parameters()) < 50_000  # the tiny TAESD, not the real one
    result = pipeline.run(video, audio, out)
    assert result.num_frames == 10 and not result.no_face_frames
    assert len(list(iter_frames(out))) == 10
