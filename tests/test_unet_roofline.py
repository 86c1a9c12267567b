"""bench/unet_roofline.py's accounting, on the CPU: the FLOPs by class add up to the counted total and, at 512,
to the reference's count; inductor's kernel names, launching ops and attention shapes map to their classes; a
profiled tiny eager call puts its time into the classes, with the attention scopes agreeing with the shape rule."""

from __future__ import annotations

import sys
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import unet_roofline as roofline  # noqa: E402  (bench/ is a folder of scripts, not a package)
from unet_roofline import (  # noqa: E402
    CONV,
    COPIES,
    CROSS,
    ELEMENTWISE,
    LINEAR,
    MATH_CLASSES,
    OTHER,
    SCOPE,
    SPATIAL,
    TEMPORAL,
)

from harness.models.unet import load_unet  # noqa: E402
from variants.temporal_attention import PackedAttnProcessor, use_temporal_processor  # noqa: E402


def test_flops_by_class_add_up_to_the_reference_count_at_512():
    work = roofline.count_work("latentsync", 512, 16, 2, torch.float16)
    assert sum(work["flops"].values()) == pytest.approx(work["total_flops"], rel=1e-12)
    assert work["total_flops"] / 1e12 == pytest.approx(roofline.REFERENCE_TFLOP[512], rel=1e-4)
    assert all(work["flops"][c] > 0 for c in MATH_CLASSES)
    assert work["flops"][ELEMENTWISE] == work["flops"][COPIES] == 0
    assert all(work["bytes"][c] > 0 for c in (*MATH_CLASSES, ELEMENTWISE, COPIES))
    # what max-autotune times one by one: 20 matmul problems over the 424 linear calls, 32 convolution shapes
    assert work["problems"] == {"linear": 20, "linear_calls": 424, "convolutions": 32, "convolution_calls": 98}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("triton_poi_fused__to_copy_clone_3", COPIES),
        ("triton_poi_fused_cat_12", COPIES),
        ("triton_poi_fused_convolution_0", COPIES),  # a layout change for an extern convolution
        ("triton_poi_fused_add_convolution_9", ELEMENTWISE),
        ("triton_poi_fused_addmm_0", ELEMENTWISE),  # a matmul's bias add, split from the extern mm
        ("triton_red_fused_add_native_group_norm_silu_12", ELEMENTWISE),
        ("triton_per_fused_native_layer_norm_4", ELEMENTWISE),
        ("triton_tem_fused_mm_5", LINEAR),
        ("triton_tem_fused_convolution_2", CONV),
        ("graph_0_cpp_fused_clone_1", COPIES),
        ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64", None),
    ],
)
def test_inductor_kernel_names_map_to_classes(name, expected):
    assert roofline.fused_class(name) == expected


def _chain(*links: tuple[str, list]) -> list[SimpleNamespace]:
    """Profiler events innermost first, each (name, input shapes), linked by cpu_parent."""
    events = [SimpleNamespace(name=name, input_shapes=shapes, cpu_parent=None) for name, shapes in links]
    for inner, outer in pairwise(events):
        inner.cpu_parent = outer
    return events


SDPA = "aten::_scaled_dot_product_flash_attention"


@pytest.mark.parametrize(
    ("links", "kernel", "expected"),
    [
        ((("aten::cudnn_convolution", []), ("aten::_convolution", []), ("aten::convolution", [])), "xmma_fprop", CONV),
        ((("aten::add_", []), ("aten::_convolution", [])), "elementwise_kernel", CONV),  # the conv's own bias add
        ((("aten::addmm", []), ("aten::linear", [])), "nvjet_hsh", LINEAR),
        ((("aten::native_group_norm", []), ("aten::group_norm", [])), "RowwiseMoments", ELEMENTWISE),
        ((("aten::copy_", []), ("aten::contiguous", [])), "elementwise_kernel", COPIES),
        # the flash kernel's own op takes (batch, tokens, heads, dim): the SDPA op's (batch, heads, tokens, dim) decide
        ((("aten::_flash_attention_forward", [[64, 50, 8, 40]]), (SDPA, [[32, 8, 4096, 40], [32, 8, 50, 40]])),
         "flash_fwd", CROSS),
        (((SDPA, [[8192, 8, 16, 40], [8192, 8, 16, 40]]),), "flash_fwd", TEMPORAL),
        (((SDPA, [[32, 8, 4096, 40], [32, 8, 4096, 40]]),), "flash_fwd", SPATIAL),
        # packed temporal attention: 8 sequences of 16 frames as 128 tokens, under a block-diagonal mask
        ((("aten::_scaled_dot_product_cudnn_attention", [[1024, 8, 128, 40], [1024, 8, 128, 40], [1024, 8, 128, 40],
                                                         [1024, 8, 128, 128], []]),), "cudnn_sdpa_fprop", TEMPORAL),
        ((("aten::_scaled_dot_product_cudnn_attention", [[32, 8, 256, 40], [32, 8, 256, 40], [32, 8, 256, 40], [],
                                                         []]),), "cudnn_sdpa_fprop", SPATIAL),
        ((("cuLaunchKernel", []), ("triton_poi_fused_clone_3", []), ("CompiledFunction", [])), "triton_poi_fused_clone_3",
         COPIES),
        ((("triton_red_fused_native_group_norm_2", []),), "triton_red_fused_native_group_norm_2", ELEMENTWISE),
        ((), "Memcpy DtoD (Device -> Device)", COPIES),
        ((("CompiledFunction", []),), "some_library_kernel", OTHER),
        ((), "sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc", CONV),  # no op linked: by name
        ((), "nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", LINEAR),
        ((), "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::Half>>", ELEMENTWISE),
        # an inductor kernel named after the ops it fused, a convolution's among them, is no convolution
        ((("graph_0_cpp_fused_cat_convolution_native_group_norm_silu_6", []),), "k", ELEMENTWISE),
        ((("triton_poi_fused__scaled_dot_product_flash_attention_3", []),), "triton_poi_fused_3", COPIES),
    ],
)
def test_kernels_take_the_class_of_their_launching_ops(links, kernel, expected):
    assert roofline.kernel_class(_chain(*links), kernel, frames=16) == (expected, None)


def test_the_eager_scope_is_reported_where_it_disagrees_with_the_shape_rule():
    chain = _chain((SDPA, [[32, 8, 4096, 40], [32, 8, 4096, 40]]), (SCOPE + TEMPORAL, []))
    assert roofline.kernel_class(chain, "flash_fwd", frames=16) == (SPATIAL, TEMPORAL)
    assert roofline.kernel_class(_chain((SDPA, []), (SCOPE + CROSS, [])), "flash_fwd", frames=16) == (CROSS, CROSS)


@pytest.mark.parametrize("temporal", ["sdpa", "packed"])
def test_a_profiled_tiny_call_fills_the_classes_and_the_scopes_agree(temporal, tmp_path):
    unet = load_unet("tiny").eval()
    if temporal == "packed":  # 128-token packs under a mask: temporal by the mask, as no spatial layer is masked
        use_temporal_processor(unet, PackedAttnProcessor, "packed")
    frames = 4  # no spatial layer of the tiny U-Net at 256 sees 4 tokens: the shape rule is unambiguous
    gen = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(2, 13, frames, 32, 32, generator=gen),
        torch.tensor(500),
        torch.randn(2 * frames, 50, 384, generator=gen),
    )
    profile = roofline.profile_call(unet, inputs, frames, calls=1, scopes=True)
    assert all(profile["class_ms"][c] > 0 for c in (*MATH_CLASSES, ELEMENTWISE, COPIES))
    assert profile["scope_disagreement_ms"] == 0
    assert sum(profile["class_ms"].values()) == pytest.approx(profile["kernel_ms"])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules())  # scopes removed
    work = roofline.count_work("small", 256, frames, 2, torch.float32)
    rows = roofline.roofline_rows(profile, work, call_ms=1.2 * profile["kernel_ms"], peaks=roofline.PEAKS)
    assert {r["class"] for r in rows} >= set(roofline.CLASSES)
    assert all("tflops" in r for r in rows if r["class"] in MATH_CLASSES)
    meta = {"device": "cpu", "resolution": 256, "batch": 2, "frames": frames, "weights": "tiny", "dtype": "fp32"}
    item = {"name": temporal, "profile": profile, "work": work, "call_ms": 1.2 * profile["kernel_ms"]}
    table = roofline.write_outputs(tmp_path, 256, [item], meta)[1].read_text()
    problems = work["problems"]
    assert 0 < problems["linear"] < problems["linear_calls"] and 0 < problems["convolutions"]
    assert f"{problems['linear']} linear (M x K x N) over {problems['linear_calls']} calls" in table


def _event(
    name: str, device: str, start: float = 0.0, end: float = 0.0, kernels=(), parent=None, id=0, linked=0,
    shapes=(),
) -> SimpleNamespace:
    from torch.autograd import DeviceType

    return SimpleNamespace(
        name=name, device_type=DeviceType.CUDA if device == "cuda" else DeviceType.CPU, input_shapes=list(shapes),
        cpu_parent=parent, kernels=[SimpleNamespace(name=k, duration=us) for k, us in kernels],
        time_range=SimpleNamespace(start=start, end=end), is_user_annotation=False, id=id,
        linked_correlation_id=linked,
    )


def test_the_timeline_checks_the_attribution_and_kernels_without_a_launching_op_are_an_error():
    # The convolution's kernel (30 us) carries its op's id; a runtime call outside any op carries the same id and
    # is no owner; an element-wise kernel overlapping it by 2 us names no op and falls back to its own name.
    conv = _event("aten::cudnn_convolution", "cpu", 0.0, 1.0, id=5)
    stray = _event("cudaStreamSynchronize", "cpu", 0.5, 2.0, id=5)
    annotation = _event(SCOPE + TEMPORAL, "cuda", 0.0, 40.0)
    annotation.is_user_annotation = True
    timeline = [_event("sm90_xmma_fprop_implicit_gemm", "cuda", 3.0, 33.0, linked=5),
                _event("elementwise_kernel", "cuda", 31.0, 36.0, linked=99)]
    found = roofline.attribute([conv, stray, annotation, *timeline], cuda=True, frames=16)
    assert found["class_us"][CONV] == 30.0 and found["class_us"][ELEMENTWISE] == 5.0
    assert sum(found["class_us"].values()) == found["device_kernel_us"] == 35.0
    assert found["busy_us"] == 33.0  # the two kernels overlap by 2 us
    for kernel in timeline:  # a profiler that links no kernel to its op: no figures rather than guessed ones
        kernel.linked_correlation_id = 0
    with pytest.raises(RuntimeError, match="links none of the 2 GPU kernels"):
        roofline.attribute([conv, stray, *timeline], cuda=True, frames=16)


def test_with_device_links_each_kernel_counts_once_under_the_op_that_launched_it():
    # Compiled code: an attention op and a Triton kernel's profiler range share id 7, and both list the attention
    # kernel (through the ops' own lists it was counted twice). The device events name their launching op's id: each is
    # counted once, under the op of that id that started last before it; a kernel whose id names no op falls back
    # to its own name; a runtime call carrying id 7 is never an owner.
    sdpa = _event("aten::_scaled_dot_product_cudnn_attention", "cpu", 0.0, 5.0, id=7,
                  kernels=[("cudnn_sdpa_fprop", 20.0)], shapes=[[2, 8, 4096, 40], [2, 8, 4096, 40]])
    triton = _event("triton_poi_fused_add_native_group_norm_3", "cpu", 30.0, 31.0, id=7,
                    kernels=[("cudnn_sdpa_fprop", 20.0), ("triton_poi_fused_add_native_group_norm_3", 4.0)])
    runtime = _event("cuLaunchKernelEx", "cpu", 29.0, 30.5, id=7)
    timeline = [
        _event("cudnn_sdpa_fprop", "cuda", 6.0, 26.0, linked=7),
        _event("triton_poi_fused_add_native_group_norm_3", "cuda", 32.0, 36.0, linked=7),
        _event("nvjet_sm90_hsh_256x128", "cuda", 36.0, 39.0, linked=99),
    ]
    found = roofline.attribute([sdpa, triton, runtime, *timeline], cuda=True, frames=16)
    assert found["linked_by"] == roofline.BY_DEVICE_EVENTS
    assert found["class_us"][SPATIAL] == 20.0
    assert found["class_us"][ELEMENTWISE] == 4.0
    assert found["class_us"][LINEAR] == 3.0
    assert sum(found["class_us"].values()) == found["device_kernel_us"] == 27.0


def test_an_older_torchs_gpu_events_get_their_launching_ops_id_from_the_raw_results():
    from torch.autograd import DeviceType

    conv = _event("aten::cudnn_convolution", "cpu", 0.0, 5.0, id=3, kernels=[("xmma_fprop", 10.0)])
    twin = _event("aten::cudnn_convolution", "cpu", 1.0, 6.0, id=4, kernels=[("xmma_fprop", 10.0)])
    kernel = SimpleNamespace(**{k: v for k, v in vars(_event("xmma_fprop", "cuda", 7.0, 17.0)).items()
                                if k != "linked_correlation_id"})  # as an older torch's FunctionEvent
    raw = [SimpleNamespace(start_ns=lambda: 8_000, end_ns=lambda: 18_000, device_type=lambda: DeviceType.CUDA,
                           linked_correlation_id=lambda: 3)]
    prof = SimpleNamespace(profiler=SimpleNamespace(kineto_results=SimpleNamespace(
        trace_start_ns=lambda: 1_000, events=lambda: raw)))
    events = [conv, twin, kernel]
    roofline.link_device_events(prof, events)
    assert kernel.linked_correlation_id == 3
    found = roofline.attribute(events, cuda=True, frames=16)
    assert found["linked_by"] == roofline.BY_DEVICE_EVENTS
    assert found["class_us"][CONV] == 10.0 == found["device_kernel_us"]  # listed by two ops, counted once


def test_the_standalone_script_profiles_a_tiny_call_and_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    argv = ["unet_roofline.py", "--tiny", "--device", "cpu", "--configs", "eager", "--frames", "4", "--calls", "1",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    roofline.main()
    table = (tmp_path / "unet_roofline_256.md").read_text()
    assert "| temporal attention |" in table and "eager ms" in table
    assert (tmp_path / "unet_roofline_256.png").stat().st_size > 0
