"""Structured pruning of the U-Net: inner channels by magnitude, all motion modules, or named residual blocks.

Channel pruning uses torch-pruning (DepGraph) on the dimensions no other layer sees: the GEGLU feed-forward
inner dimension (ff.net.0.proj's value and gate rows together, ff.net.2's columns) and the attention inner
dimension (to_q/to_k/to_v rows, to_out.0 columns, the same number kept in every head) of every spatial and
temporal transformer. Each feed-forward and attention module gets its own dependency graph, traced on a few
tokens, and its channels are ranked by torch-pruning's group L2 magnitude. The residual stream, the skip
connections, GroupNorm groups and the motion modules' position encodings keep their widths, so nothing
downstream changes shape. One graph over the whole U-Net (torch-pruning 1.6.1) does not work: it prunes the
residual stream inconsistently (SpatialTransformer.proj_in's output against the reshape keyed on its input's
width), and that width is also tied to GroupNorm(32) groups, the `pos_encoder.pe` buffers and the skip
concatenations.

No fine-tuning follows: pruned outputs drift from the baseline, more so at higher ratios.
"""

from __future__ import annotations

import difflib
import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from variants.base import Transform, Variant, VariantError

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline

log = logging.getLogger(__name__)

METHODS = ("channels", "drop-motion", "drop-blocks")
# Kept widths round up to a multiple of this where the width allows: tensor cores and flash attention want
# head dims and matmul sizes in multiples of 8.
ALIGN = 8


class Pruning(Variant):
    family = "pruning"
    summary = "structured U-Net pruning: inner channels by magnitude, motion modules, or named blocks"
    field_name = "pruning"
    phase = "float-weights"

    @classmethod
    def normalize(cls, value: Any) -> str:
        """The canonical text 'none', 'channels:R', 'drop-motion' or 'drop-blocks:NAME,NAME' from YAML's forms."""
        if value is None or value is False or value in ("none", "off"):
            return "none"
        if isinstance(value, str):
            method, _, arg = value.partition(":")
            method, arg = method.strip(), arg.strip()
            value = {"method": method}
            if arg and method == "channels":
                value["ratio"] = arg
            elif arg and method == "drop-blocks":
                value["blocks"] = arg.split(",")
            elif arg:
                raise VariantError(f"{method!r} takes no argument, got {arg!r}; expected {cls.allowed()}")
        if not isinstance(value, dict) or value.get("method") not in METHODS:
            raise VariantError(f"expected {cls.allowed()}, got {value!r}")
        method = value["method"]
        keys = {"channels": {"ratio"}, "drop-motion": set(), "drop-blocks": {"blocks"}}[method]
        unknown = sorted(set(value) - keys - {"method"})
        if unknown:
            raise VariantError(f"{method} does not take {unknown}; expected {cls.allowed()}")
        if method == "channels":
            return f"channels:{_ratio(value.get('ratio'))}"
        if method == "drop-blocks":
            return f"drop-blocks:{','.join(_block_names(value.get('blocks')))}"
        return method

    @classmethod
    def allowed(cls) -> str:
        return (
            "'none', 'channels:R' or {method: channels, ratio: R in (0, 1)}, 'drop-motion', or "
            "'drop-blocks:NAME,NAME' or {method: drop-blocks, blocks: [names of motion modules / transformers]}"
        )

    def transforms(self) -> list[Transform]:
        if self.value == "none":
            return []
        method, _, arg = self.value.partition(":")

        def prune(unet: nn.Module, _pipeline: LipsyncPipeline) -> nn.Module:
            before = count_parameters(unet)
            if method == "channels":
                prune_inner_channels(unet, float(arg))
            elif method == "drop-motion":
                names = [name for name, module in unet.named_modules() if _is_motion_module(module)]
                if not names:
                    raise VariantError("pruning: drop-motion found no motion modules in the U-Net")
                drop_blocks(unet, names)
            else:
                drop_blocks(unet, arg.split(","))
            log.info("pruning %s: U-Net parameters %d -> %d", method, before, count_parameters(unet))
            return unet

        return [Transform("unet", f"pruning={self.value}", prune)]


def _ratio(value: Any) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        ratio = math.nan
    if not 0.0 < ratio < 1.0:
        raise VariantError(f"channels needs a ratio in (0, 1), got {value!r}")
    return ratio


def _block_names(blocks: Any) -> list[str]:
    if (
        not blocks
        or not isinstance(blocks, list)
        or not all(isinstance(b, str) and b.strip() for b in blocks)
    ):
        raise VariantError(
            f"drop-blocks needs a non-empty list of module names, got {blocks!r} "
            "(e.g. blocks: [up_blocks.3.motion_modules.2])"
        )
    return [b.strip() for b in blocks]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Skipped(nn.Module):
    """Stands in for a dropped residual block: returns its input unchanged."""

    def __init__(self, name: str):
        super().__init__()
        self.dropped = name

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"dropped={self.dropped}"


def droppable_blocks(unet: nn.Module) -> list[str]:
    """Names of the modules whose output is their input plus a residual branch, so identity can replace them."""
    return [name for name, module in unet.named_modules() if isinstance(module, _residual_types())]


def drop_blocks(unet: nn.Module, names: list[str]) -> None:
    """Replace each named residual block with identity; unknown or non-residual names fail with a hint."""
    modules = dict(unet.named_modules())
    allowed = droppable_blocks(unet)
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, allowed, n=3)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; droppable blocks include {allowed[:4]}"
            )
            raise VariantError(f"pruning: the U-Net has no module {name!r}{hint}")
        if name not in allowed and not isinstance(modules[name], Skipped):
            raise VariantError(
                f"pruning: {name!r} ({type(modules[name]).__name__}) is not a residual block and cannot be "
                "dropped; drop motion modules (…motion_modules.N), spatial transformers (…attentions.N) or "
                "transformer blocks (…transformer_blocks.N)"
            )
    for name in sorted(set(names), key=len):
        if any(name.startswith(done + ".") for done in names if done != name and len(done) < len(name)):
            continue  # inside a block dropped already
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, Skipped(name))


def prune_inner_channels(unet: nn.Module, ratio: float) -> int:
    """Remove `ratio` of every attention and GEGLU inner dimension with torch-pruning; returns the number of
    layer groups pruned."""
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention_processor import Attention

    pruned = 0
    for module in list(unet.modules()):
        if isinstance(module, Attention):
            _prune_attention(module, ratio)
            pruned += 1
        elif hasattr(module, "net") and len(module.net) == 3 and isinstance(module.net[0], GEGLU):
            _check_plain(module.net[0].proj, module.net[2])
            example = _tokens(module.net[0].proj)
            _prune_group(module, (example,), module.net[2], heads=1, ratio=ratio)
            pruned += 1
    if pruned == 0:
        raise VariantError("pruning: channels found no attention or GEGLU feed-forward layer in the U-Net")
    return pruned


def _kept(width: int, ratio: float) -> int:
    kept = max(1, width - int(width * ratio))
    if width % ALIGN == 0 and width >= 2 * ALIGN:
        kept = min(width, math.ceil(kept / ALIGN) * ALIGN)
    return kept


def _tokens(first: nn.Linear, count: int = 4) -> torch.Tensor:
    """A small input for tracing the layer's module: (1, count, in_features) on its device and dtype."""
    return torch.randn(1, count, first.in_features, device=first.weight.device, dtype=first.weight.dtype)


def _prune_group(module: nn.Module, example: tuple | dict, root: nn.Linear, heads: int, ratio: float) -> int:
    """Prune the input channels of `root` and everything torch-pruning's dependency graph couples to them
    (traced on `example`), keeping the same number per head, chosen by the group's L2 magnitude (torch-pruning's
    default criterion). Returns the channels kept per head."""
    import torch_pruning as tp

    width = root.in_features
    head_dim = width // heads
    kept = _kept(head_dim, ratio)
    if kept == head_dim:
        return kept
    # The graph is read off autograd: trace with gradients on, whatever the caller's mode and the weights' flags
    # (pruning replaces the parameters, so the flags are restored by name afterwards).
    flags = {name: param.requires_grad for name, param in module.named_parameters()}
    with torch.enable_grad():
        for param in module.parameters():
            param.requires_grad_(True)
        graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    group = graph.get_pruning_group(root, tp.prune_linear_in_channels, idxs=list(range(width)))
    importance = tp.importance.GroupMagnitudeImportance(p=2)(group).float()
    keep = importance.view(heads, head_dim).topk(kept, dim=1).indices
    keep = keep + torch.arange(heads, device=keep.device)[:, None] * head_dim
    drop = sorted(set(range(width)) - set(keep.flatten().tolist()))
    with torch.no_grad():
        graph.get_pruning_group(root, tp.prune_linear_in_channels, idxs=drop).prune()
    for name, param in module.named_parameters():
        param.requires_grad_(flags.get(name, False))
    return kept


def _prune_attention(attn: nn.Module, ratio: float) -> None:
    """Keep the same number of channels in every head (q, k, v and to_out's inputs share them: torch-pruning
    couples them through the attention product). Heads stay; the head dim shrinks."""
    q, k, v, out = attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]
    _check_plain(q, k, v, out)
    heads = attn.heads
    inner = q.out_features
    if k.out_features != inner or v.out_features != inner or inner % heads:
        raise VariantError(
            "pruning: channels needs attention q/k/v of one width divisible by the head count; got "
            f"{q.out_features}/{k.out_features}/{v.out_features} with {heads} heads"
        )
    head_dim = inner // heads
    example = {"hidden_states": _tokens(q)}
    if attn.is_cross_attention:
        example["encoder_hidden_states"] = _tokens(k, count=3)
    kept = _prune_group(attn, example, out, heads=heads, ratio=ratio)
    if kept == head_dim:
        return
    # SDPA scales logits by 1/sqrt(head dim); the new head dim would sharpen them. Scaling q by
    # sqrt(kept / head_dim) restores the trained 1/sqrt(head_dim), and `attn.scale` follows for processors
    # that pass it explicitly.
    with torch.no_grad():
        q.weight.mul_(math.sqrt(kept / head_dim))
        if q.bias is not None:
            q.bias.mul_(math.sqrt(kept / head_dim))
    attn.scale = kept**-0.5
    for name in ("inner_dim", "inner_kv_dim"):
        if hasattr(attn, name):
            setattr(attn, name, kept * heads)


def _check_plain(*layers: nn.Module) -> None:
    for layer in layers:
        if type(layer) is not nn.Linear or type(layer.weight) is not nn.Parameter:
            raise VariantError(
                f"pruning: cannot slice a {type(layer).__name__} with {type(layer.weight).__name__} weights; "
                "pruning needs the float weights of a U-Net that nothing has quantized yet (the harness prunes "
                "before it quantizes, whatever order the settings are given in)"
            )


def _residual_types() -> tuple[type, ...]:
    from harness.models.motion_module import MotionModule, TemporalBlock, TemporalTransformer
    from harness.models.unet_layers import SpatialTransformer, TransformerBlock

    return (MotionModule, TemporalTransformer, TemporalBlock, SpatialTransformer, TransformerBlock)


def _is_motion_module(module: nn.Module) -> bool:
    from harness.models.motion_module import MotionModule

    return isinstance(module, MotionModule)
