"""Quantization of the U-Net's Linear layers: bitsandbytes int8 / NF4; torchao int8 weight-only, int8 dynamic
activations with int8 weights (`int8dq`), fp8 dynamic activations and weights with one scale per tensor (`fp8`)
or per row (`fp8-row`: bf16 runs only, torchao quantizes bfloat16 weights row-wise); optimum-quanto int8 / int4 /
fp8 weights or int8 weights and activations (variants.quanto_linears).

torchao's configs leave inductor's settings alone here (`set_inductor_config=False`): by default they turn on
coordinate-descent tuning for the whole process, which made a compiled fp8 U-Net take minutes longer to
compile and mixed a compile setting into a quantization one. `compile: default+recipe` asks for it openly.

Only nn.Linear layers change (attention projections, feed-forwards, motion-module projections, the time
embedding, except under int8dq); convolutions and norms keep their dtype. It comes after pruning (which slices
float weights) and before DeepCache and compile in the transform order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from variants.base import ChoiceVariant, Transform, VariantError
from variants.quanto_linears import (
    QUANTO_METHODS,
    quantize_linears_quanto,
    quanto_missing,
    stand_in_calibration,
)

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline

log = logging.getLogger(__name__)

METHODS = (
    "none",
    "bnb-int8",
    "bnb-nf4",
    "torchao-int8wo",
    "torchao-int8dq",
    "torchao-fp8",
    "torchao-fp8-row",
    *QUANTO_METHODS,
)
FP8_METHODS = ("torchao-fp8", "torchao-fp8-row")
FP8_ACTIVATION_FLOOR = 1e-12  # the least amax a dynamic fp8 scale is computed from (see _torchao_config)
FP8_MIN_TORCHAO = (0, 13)  # the first torchao whose fp8 config takes that floor (activation_value_lb)
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs with fp8 tensor cores
# torch._scaled_mm needs both matrix dimensions divisible by 16; smaller layers stay in high precision.
FP8_DIM_MULTIPLE = 16
# torch._int_mm (int8dq's kernel) needs more than 16 rows; the time embedding's MLP gets one per batch entry (2 in
# a guided call: the H200 run failed on it), so those two layers stay in float.
INT8DQ_FLOAT_MODULE = "time_embedding"
# LLM.int8 outlier threshold: activation columns above it run in fp16 (the bitsandbytes default for inference).
INT8_OUTLIER_THRESHOLD = 6.0


class Quantization(ChoiceVariant):
    family = "quantization"
    summary = (
        "quantize the U-Net's Linear layers (bitsandbytes int8/nf4, torchao int8 weight-only/int8 dynamic/fp8, "
        "quanto int8/int4/fp8 weights or int8 weights and activations)"
    )
    field_name = "quantization"
    choices = METHODS
    aliases = {"off": "none", "false": "none", "0": "none"}
    phase = "quantization"

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.value == "none":
            return None
        device_type = env.get("device_type") or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.value.startswith("bnb-"):
            return _bitsandbytes_missing(device_type, self.value)
        if self.value in QUANTO_METHODS:
            return quanto_missing(self.value, device_type)
        if self.value in FP8_METHODS:
            if device_type != "cuda":
                return "fp8 matmuls need a CUDA GPU of compute capability >= 8.9; this run is on CPU"
            capability = torch.cuda.get_device_capability()
            if capability < FP8_MIN_CAPABILITY:
                return f"fp8 matmuls need compute capability >= 8.9; this GPU has {capability[0]}.{capability[1]}"
        from torch.torch_version import TorchVersion  # packaging's version order, vendored by torch

        try:
            import torchao
        except ImportError:
            return "torchao is not installed; pip install torchao (or the project's [quant] extra)"
        if self.value in FP8_METHODS and TorchVersion(torchao.__version__) < FP8_MIN_TORCHAO:
            return (
                f"{self.value} needs torchao >= {'.'.join(map(str, FP8_MIN_TORCHAO))} (its activation floor keeps "
                f"a row of zeros from a NaN scale); this is {torchao.__version__}: pip install -U torchao"
            )
        return None

    def transforms(self) -> list[Transform]:
        if self.value == "none":
            return []
        method = self.value

        def quantize(unet: nn.Module, pipeline: LipsyncPipeline) -> nn.Module:
            if method == "torchao-fp8-row" and pipeline.dtype != torch.bfloat16:
                raise VariantError(
                    f"quantization={method}: torchao quantizes row-wise fp8 from bfloat16 weights only; "
                    f"this run is {str(pipeline.dtype).removeprefix('torch.')} (set dtype: bf16)"
                )
            # run only by methods that quantize activations (quanto-w8a8)
            calibration = stand_in_calibration(pipeline)
            count = quantize_linears(unet, method, pipeline.device, pipeline.dtype, calibration)
            if count == 0:
                raise VariantError(
                    f"quantization={method}: the U-Net has no nn.Linear layer it could quantize"
                )
            log.info("quantization=%s: quantized %d Linear layers of the U-Net", method, count)
            return unet

        return [Transform("unet", f"quantization={method}", quantize)]


def quantize_linears(
    module: nn.Module,
    method: str,
    device: torch.device,
    dtype: torch.dtype,
    calibration: Callable[[nn.Module], None] | None = None,
) -> int:
    """Quantize every nn.Linear inside `module` in place with `method`; returns how many layers changed.
    `calibration(module)` runs the module on representative inputs, for methods with activation scales."""
    if method not in METHODS[1:]:
        raise VariantError(f"quantization: no method {method!r}; expected one of {', '.join(METHODS[1:])}")
    if method in QUANTO_METHODS:
        return quantize_linears_quanto(module, method, calibration)
    if method in ("bnb-int8", "bnb-nf4"):
        return _replace_linears(module, lambda linear: _bnb_linear(linear, method, device, dtype))
    from torchao.quantization import quantize_

    count = 0

    def eligible(layer: nn.Module, fqn: str) -> bool:
        nonlocal count
        ok = (
            isinstance(layer, nn.Linear)
            and (
                method not in FP8_METHODS
                or (layer.in_features % FP8_DIM_MULTIPLE == 0 and layer.out_features % FP8_DIM_MULTIPLE == 0)
            )
            and not (method == "torchao-int8dq" and INT8DQ_FLOAT_MODULE in fqn.split("."))
        )
        count += int(ok)
        return ok

    quantize_(module, _torchao_config(method), filter_fn=eligible)
    return count


def _torchao_config(method: str) -> Any:
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
        PerTensor,
    )

    if method == "torchao-int8wo":
        return Int8WeightOnlyConfig(set_inductor_config=False)
    if method == "torchao-int8dq":
        return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    granularity = PerRow() if method == "torchao-fp8-row" else PerTensor()
    # A row of zeros (the audio cross-attention's keys and values in the unguided half: its audio is zero) would
    # get a zero scale and quantize to 0/0 = NaN: on the H200 the per-row denoise ended in NaN latents. The floor
    # (activation_value_lb) is torchao 0.13's, hence the quant extra's least version.
    return Float8DynamicActivationFloat8WeightConfig(
        granularity=granularity, set_inductor_config=False, activation_value_lb=FP8_ACTIVATION_FLOOR
    )


def _replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> int:
    """Swap each nn.Linear child (recursively) for make(linear); returns the number swapped."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
            count += 1
        else:
            count += _replace_linears(child, make)
    return count


def _bnb_linear(linear: nn.Linear, method: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    has_bias = linear.bias is not None
    # bitsandbytes quantizes a parameter when it moves off the CPU (int8 only quantizes from CPU data),
    # so the float weight goes through host memory once.
    weight = linear.weight.detach().to("cpu")
    if method == "bnb-int8":
        layer = bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            has_fp16_weights=False,
            threshold=INT8_OUTLIER_THRESHOLD,
            device="meta",
        )
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            compute_dtype=dtype,
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().to("cpu", dtype), requires_grad=False)
    return layer.to(device)


def _bitsandbytes_missing(device_type: str, method: str) -> str | None:
    """None when bitsandbytes imports and has a working backend for the method on the device; else the reason."""
    try:
        import bitsandbytes
    except ImportError:
        return "bitsandbytes is not installed; pip install bitsandbytes (or the project's [quant] extra)"
    if device_type == "cuda":
        return None
    # CPU kernels arrived in bitsandbytes 0.48; older builds import but fail on the probe's first matmul.
    try:
        error = _nf4_cpu_error()
    except Exception as exc:  # any failure here means: no usable CPU backend
        return (
            f"bitsandbytes has no working CPU backend here ({type(exc).__name__}: {exc}); run on a CUDA GPU"
        )
    if method == "bnb-nf4" and error > NF4_PROBE_TOLERANCE:
        # bitsandbytes 0.50.2's AVX-512 CPU kernel dequantizes rows whose length is a multiple of 16 but not of
        # the 64-value block as if the blocks started at each row (the tiny U-Net's 32- and 96-wide layers)
        return (
            f"bitsandbytes {bitsandbytes.__version__} dequantizes NF4 weights wrongly on this CPU (a 96 x 96 "
            f"layer's output is off by {error:.0%} from its own weights dequantized flat); run on a CUDA GPU"
        )
    return None


NF4_PROBE_TOLERANCE = 1e-3


def _nf4_cpu_error() -> float:
    """Relative difference between an NF4 layer's output on the CPU and the same layer computed from its
    quantized weights dequantized as one flat tensor (the blocks of 64 values bitsandbytes quantizes in)."""
    import bitsandbytes.functional as F

    linear = nn.Linear(96, 96)  # rows of 96: not whole 64-value blocks
    layer = _bnb_linear(linear, "bnb-nf4", torch.device("cpu"), torch.float32)
    flat, state = F.quantize_4bit(
        linear.weight.detach().flatten(), quant_type="nf4", compress_statistics=True
    )
    weight = F.dequantize_4bit(flat, state).view_as(linear.weight)
    x = torch.randn(4, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = nn.functional.linear(x, weight, linear.bias)
        return ((layer(x) - expected).abs().max() / expected.abs().max()).item()
