"""DeepCache (Ma et al., arXiv 2312.00858): reuse the U-Net's deep features across neighbouring sampler steps.

Adjacent denoising steps change the high-level features little. Every `interval`-th U-Net call of a sampler run
(the first included) runs the whole U-Net and caches the features entering up block `L-1-branch` (L = number of
levels); the calls in between run only the shallow path: conv_in, down_blocks[0..branch], then
up_blocks[L-1-branch..] on the cached features, and the output head.

This works at BLOCK granularity: branch 0 caches everything except conv_in, down_blocks[0], up_blocks[-1] and
conv_out. The reference's DeepCacheSDHelper(cache_interval=3, cache_branch_id=0) caches at the granularity of
single layers inside those blocks, so its shallow path is shorter than ours and its outputs differ from ours.
The shallow path also runs down_blocks[branch]'s downsampler, whose output only the deep path uses (one conv).
The wrapper calls the U-Net's blocks itself through LatentSyncUNet's stem / run_down_blocks / run_up_blocks / head
(harness/models/unet.py); test_variants_models checks its full path equals the U-Net's own forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from metrics.fidelity import EXACT, FLOAT, LOSSY
from variants.base import Transform, Variant, VariantError

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline

UPSTREAM_DEFAULT = {"interval": 3, "branch": 0}  # what the reference inference script turns on


class DeepCache(Variant):
    family = "deepcache"
    summary = "reuse deep U-Net features for interval-1 of every interval steps (DeepCache)"
    field_name = "deepcache"
    order = 40  # wraps the U-Net after pruning and quantization changed it, before compile

    @classmethod
    def normalize(cls, value: Any) -> str:
        """The canonical text 'off' or 'interval=N,branch=B' from YAML's forms (see `allowed`)."""
        if value is None or value is False or value == "off":
            return "off"
        if value == "upstream-default":
            value = dict(UPSTREAM_DEFAULT)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = {"interval": value}
        elif isinstance(value, str) and value.strip().isdigit():
            value = {"interval": int(value)}
        elif isinstance(value, str):
            value = _parse_pairs(value, cls.allowed())
        if not isinstance(value, dict):
            raise VariantError(f"expected {cls.allowed()}, got {value!r}")
        unknown = sorted(set(value) - {"interval", "branch"})
        if unknown:
            raise VariantError(f"unknown keys {unknown}; expected {cls.allowed()}")
        parsed = {
            "interval": value.get("interval", UPSTREAM_DEFAULT["interval"]),
            "branch": value.get("branch", 0),
        }
        for key, low in (("interval", 1), ("branch", 0)):
            if not isinstance(parsed[key], int) or isinstance(parsed[key], bool) or parsed[key] < low:
                raise VariantError(f"{key} must be an integer >= {low}, got {parsed[key]!r}")
        return f"interval={parsed['interval']},branch={parsed['branch']}"

    @classmethod
    def allowed(cls) -> str:
        return (
            "'off', 'upstream-default' (interval 3, branch 0), an interval N, 'interval=N,branch=B' "
            "or {interval: N >= 1, branch: B >= 0 (< number of U-Net levels)}"
        )

    @staticmethod
    def spec(value: str) -> dict[str, int]:
        """{'interval': N, 'branch': B} of a canonical value other than 'off'."""
        return {key: int(number) for key, number in _parse_pairs(value, "").items()}

    @classmethod
    def change_tier(cls, old: str, new: str) -> str:
        # Interval 1 refreshes the cache on every call: the full U-Net runs its blocks in its own order, as with
        # 'off' (bitwise equal in eager mode), but compiled it is another graph, fused otherwise: float.
        def full(value: str) -> bool:
            return value == "off" or cls.spec(value)["interval"] == 1

        if old == new:
            return EXACT
        return FLOAT if full(old) and full(new) else LOSSY

    def transforms(self) -> list[Transform]:
        if self.value == "off":
            return []
        spec = self.spec(self.value)

        def wrap(unet: nn.Module, _pipeline: LipsyncPipeline) -> DeepCacheUNet:
            return DeepCacheUNet(unet, **spec)

        def reset_each_segment(hooks: list, pipeline: LipsyncPipeline) -> list:
            return [*hooks, pipeline.unet.reset]

        label = f"deepcache={self.value}"
        return [Transform("unet", label, wrap), Transform("segment_hooks", label, reset_each_segment)]


def _parse_pairs(text: str, allowed: str) -> dict[str, Any]:
    """'interval=3,branch=0' -> {'interval': 3, 'branch': 0}."""
    pairs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, number = part.partition("=")
        if not sep:
            raise VariantError(f"expected {allowed}, got {text!r}")
        try:
            pairs[key.strip()] = int(number)
        except ValueError:
            raise VariantError(f"{key.strip()} must be an integer, got {number.strip()!r}") from None
    return pairs


class DeepCacheUNet(nn.Module):
    """Called like the LatentSync U-Net; runs it fully every `interval` calls and shallowly in between.

    Call `reset()` when a new sampler run starts (the pipeline's segment hooks do): the next call is then full.
    """

    def __init__(self, unet: nn.Module, interval: int, branch: int = 0):
        super().__init__()
        missing = [
            n
            for n in (
                "stem",
                "down_blocks",
                "mid_block",
                "up_blocks",
                "run_down_blocks",
                "run_up_blocks",
                "head",
            )
            if not hasattr(unet, n)
        ]
        if missing:
            raise VariantError(
                f"deepcache: the U-Net ({type(unet).__name__}) has no {missing}; it needs the LatentSync layout"
            )
        levels = len(unet.down_blocks)
        if not 0 <= branch < levels:
            raise VariantError(f"deepcache: branch must be in 0..{levels - 1} for this {levels}-level U-Net")
        self.unet = unet
        self.interval = interval
        self.branch = branch
        self.calls = 0
        self.cache: torch.Tensor | None = None
        self._full: Callable[..., tuple[torch.Tensor, torch.Tensor]] = self.full_path
        self._shallow: Callable[..., torch.Tensor] = self.shallow_path

    # The pipeline and other variants read these from whatever pipeline.unet is.
    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def reset(self) -> None:
        self.calls = 0
        self.cache = None

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile the two paths as separate graphs; the call counter stays in Python, outside both."""
        self._full = torch.compile(self.full_path, *args, **kwargs)
        self._shallow = torch.compile(self.shallow_path, *args, **kwargs)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int | float, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        refresh = self.calls % self.interval == 0 or self.cache is None
        # A batch of another shape (a fresh sampler whose hook did not run) cannot reuse the cache.
        if not refresh and self.cache.shape[0] != sample.shape[0] * sample.shape[2]:
            refresh = True
        if refresh:
            self.calls = 0
            out, cache = self._full(sample, timestep, encoder_hidden_states)
            # A copy: compiled graphs with CUDA graphs reuse their output buffers on the next replay.
            self.cache = cache.clone()
        else:
            out = self._shallow(sample, timestep, encoder_hidden_states, self.cache)
        self.calls += 1
        return out

    def full_path(
        self, sample: torch.Tensor, timestep: torch.Tensor | int | float, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole U-Net; also returns the features entering the first cached-from up block."""
        unet = self.unet
        emb, x, frames = unet.stem(sample, timestep, audio)
        x, skips = unet.run_down_blocks(unet.down_blocks, x, emb, audio, frames)
        x = unet.mid_block(x, emb, audio, frames)
        first_shallow = len(unet.up_blocks) - 1 - self.branch
        cache, skips = unet.run_up_blocks(unet.up_blocks[:first_shallow], x, skips, emb, audio, frames)
        x, _ = unet.run_up_blocks(unet.up_blocks[first_shallow:], cache, skips, emb, audio, frames)
        return unet.head(x, sample.shape), cache

    def shallow_path(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        audio: torch.Tensor,
        cache: torch.Tensor,
    ) -> torch.Tensor:
        """conv_in, down_blocks[..branch], then the last branch+1 up blocks starting from `cache`."""
        unet = self.unet
        emb, x, frames = unet.stem(sample, timestep, audio)
        _, skips = unet.run_down_blocks(unet.down_blocks[: self.branch + 1], x, emb, audio, frames)
        shallow_up = unet.up_blocks[len(unet.up_blocks) - 1 - self.branch :]
        # Up blocks take their skips from the end of the list, and the shallow ones come last: they take the
        # first skips the down path made; the rest belong to deep up blocks.
        skips = skips[: sum(len(block.resnets) for block in shallow_up)]
        x, _ = unet.run_up_blocks(shallow_up, cache, skips, emb, audio, frames)
        return unet.head(x, sample.shape)
