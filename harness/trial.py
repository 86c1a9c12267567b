"""A trial: one input clip, one combination of variants, the resolved config they give, and its hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import RunConfig, resolve
from variants import VARIANTS
from variants.base import Variant, VariantError


@dataclass
class Trial:
    name: str
    variants: dict[str, Any] = field(default_factory=dict)  # family -> value
    base: dict[str, Any] = field(default_factory=dict)  # RunConfig fields shared by the sweep
    input_name: str = "demo"
    video: str = ""
    audio: str = ""
    repeats: int = 1
    warmup: int = 0
    profile: bool = True
    torch_trace: bool = False  # also a torch.profiler trace (chrome JSON + op table) of one run
    score: bool = True
    keep_video: bool = True
    is_baseline: bool = False
    score_options: dict[str, Any] = field(default_factory=dict)  # weight paths for metrics.score.score_video

    def build_variants(self) -> list[Variant]:
        return build_variants(self.variants)

    def resolve(self) -> RunConfig:
        """Defaults < sweep base < this trial's inputs < variants, validated."""
        config = resolve(self.base, {"video": self.video, "audio": self.audio}, where=("base", "inputs"))
        for variant in self.build_variants():
            config = variant.configure(config)
        return config.validate()

    @property
    def lossless(self) -> bool:
        """All variants declare themselves lossless (and at least one changes something)."""
        built = [v for v in self.build_variants() if not v.is_noop]
        return bool(built) and all(v.lossless for v in built)

    def key(self) -> str:
        """Hash of everything that decides the result: finished trials with this key are skipped on re-run."""
        payload = {
            "config": self.resolve().to_dict(),
            "variants": self.variants,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "profile": self.profile,
            "torch_trace": self.torch_trace,
            "score": self.score,
            "inputs": [_file_stamp(self.video), _file_stamp(self.audio)],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def folder_name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in self.name)
        return f"{safe}-{self.key()}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Trial:
        return Trial(**data)


# Families that change the loaded model apply in this order, whatever order the YAML lists them in:
# pruning needs float weights, DeepCache wraps the final U-Net, compile goes last.
APPLY_ORDER = ("pruning", "quantization", "deepcache", "compile")


def build_variants(values: dict[str, Any]) -> list[Variant]:
    """Instantiate variants (in apply order) and reject incompatible combinations before any work."""
    built = [VARIANTS.get(family)(value) for family, value in values.items()]
    built.sort(key=lambda v: APPLY_ORDER.index(v.family) if v.family in APPLY_ORDER else -1)
    fields_seen: dict[str, str] = {}
    for variant in built:
        for name in variant.sets_fields:
            if name in fields_seen and not variant.is_noop:
                raise VariantError(
                    f"{variant.family} and {fields_seen[name]} both set the config field {name!r}"
                )
            fields_seen[name] = variant.family
        reason = variant.conflicts(built)
        if reason:
            raise VariantError(reason)
    return built


def _file_stamp(path: str) -> str:
    if not path:
        return ""
    p = Path(path)
    return f"{p.resolve()}:{p.stat().st_size}:{int(p.stat().st_mtime)}" if p.exists() else str(p)
