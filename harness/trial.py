"""A trial: one input clip, one combination of variants, the resolved config they give, and its hash."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import RunConfig, settings
from harness.noise import MIN_REPEATS
from metrics.fidelity import EXACT, LOSSY, loosest
from variants import VARIANTS
from variants.base import Variant, in_transform_order
from variants.values import resolve

# Timed repeats and warm-ups of a trial that names none (a sweep file without `repeats`/`warmup`): as many
# timed repeats as a speed verdict needs on each side (harness.noise). `harness run` asks for its cold run only.
DEFAULT_REPEATS = MIN_REPEATS
DEFAULT_WARMUP = 1


@dataclass
class Trial:
    name: str
    variants: dict[str, Any] = field(default_factory=dict)  # family -> value
    base: dict[str, Any] = field(default_factory=dict)  # RunConfig fields shared by the sweep
    input_name: str = "demo"
    video: str = ""
    audio: str = ""
    repeats: int = DEFAULT_REPEATS
    warmup: int = DEFAULT_WARMUP
    profile: bool = True
    torch_trace: bool = False  # also a torch.profiler trace (chrome JSON + op table) of one run
    score: bool = True
    keep_video: bool = True
    is_baseline: bool = False
    compare: bool = False  # a sweep's other trial: compared with its input's baseline (harness.fidelity)
    baseline_variants: dict[str, Any] = field(default_factory=dict)  # what the fidelity reference ran with
    score_options: dict[str, Any] = field(default_factory=dict)  # weight paths for metrics.score.score_video

    def build_variants(self) -> list[Variant]:
        return build_variants(self.variants)

    def base_config(self) -> RunConfig:
        """Defaults < sweep base < this trial's inputs, validated: what the variants are judged against."""
        return resolve(self.base, {"video": self.video, "audio": self.audio}, where=("base", "inputs"))

    def resolve(self) -> RunConfig:
        """The base config with this trial's variants applied, in order."""
        return configure(self.base_config(), self.build_variants())

    def reference_config(self) -> RunConfig:
        """The config of the run this trial's output is compared with: the base with the baseline's variants."""
        return configure(self.base_config(), build_variants(self.baseline_variants))

    def noop_families(self) -> list[str]:
        """Families whose value is already the base's: they change nothing in this trial."""
        base = self.base_config()
        return [v.family for v in self.build_variants() if v.is_noop(base)]

    def changes(self) -> dict[str, tuple[Any, Any]]:
        """{setting: (reference value, this trial's value)} for every setting that differs from the reference."""
        return self.resolve().changes_from(self.reference_config())

    @property
    def tier(self) -> str:
        """The fidelity tier of this trial against its reference run (metrics.fidelity): the loosest of the tiers
        of the settings that differ. A trial that changes nothing is `exact`: it must reproduce the reference."""
        return loosest(change_tier(name, old, new) for name, (old, new) in self.changes().items())

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
        return f"{safe_name(self.name)}-{self.key()}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Trial:
        return Trial(**data)


def safe_name(name: str) -> str:
    """A trial name as its folder spells it: characters other than letters, digits and -_.= become '_'."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)


def build_variants(values: dict[str, Any]) -> list[Variant]:
    """Instantiate variants (checking every value) in their families' declared order."""
    built = [VARIANTS.get(family)(value) for family, value in values.items()]
    return in_transform_order(built)


def configure(config: RunConfig, variants: list[Variant]) -> RunConfig:
    for variant in variants:
        config = variant.configure(config)
    return config


def change_tier(name: str, old: Any, new: Any) -> str:
    """The fidelity tier of moving setting `name` from `old` to `new`, as its owning family declares; a setting
    no family owns (inputs, seed, crf, ...) is exact only when unchanged."""
    family = settings()[name].family
    if not family:
        return EXACT if old == new else LOSSY
    return VARIANTS.get(family).change_tier(old, new)


def _file_stamp(path: str) -> str:
    """An input's identity for reuse: its content's hash (a file of the same size with its time reset is
    another input), hashed once per file version in a process."""
    if not path:
        return ""
    try:
        info = os.stat(path)
    except OSError:
        return str(path)  # a missing input fails its checks before anything runs
    # the change time is set by the kernel on every write (a reset mtime cannot hide one)
    return _content_hash(
        str(Path(path).resolve()), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino
    )


@functools.lru_cache(maxsize=256)
def _content_hash(path: str, _size: int, _mtime_ns: int, _ctime_ns: int, _inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()
