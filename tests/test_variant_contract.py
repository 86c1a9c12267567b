"""The variant contract, as properties over every pair of families and several bases: a variant is a no-op
exactly when its value is already the base's, a trial's fidelity tier is the loosest tier of the settings it
changes, and model transforms apply in the families' declared order, whatever order the trial
lists them in. The expectations here are written out independently of the code under test, then checked
against what the loaded pipeline actually did."""

from __future__ import annotations

import itertools

import pytest
import torch

from harness.config import RunConfig
from harness.pipeline.lipsync import LipsyncPipeline
from harness.trial import Trial
from variants import VARIANTS, load_pipeline, transforms_for
from variants.deepcache import DeepCacheUNet
from variants.pruning import Skipped
from variants.values import resolve

# Values to try per family: some equal a base below, some do not.
SAMPLES: dict[str, list] = {
    "threading": [2],
    "detect-processes": [2],
    "detector": ["buffalo_s"],
    "steps": [3, 20],
    "guidance": [1.0],
    "precision": ["fp32", "bf16"],
    "quantization": ["torchao-int8wo"],
    "pruning": ["drop-motion"],
    "resolution": [512],
    "deepcache": ["upstream-default", 1],
    "scheduler": ["dpm++"],
    "vae": ["taesd"],
    "whisper-precision": ["int8", "fp32"],
    "compile": ["default"],
    "batch": [2],
    "attention": ["math"],
    "fuse-qkv": ["on"],
    "temporal-attention": ["reduction", "packed", "packed-64"],
    "channels-last": ["on"],
    "vae-slicing": ["on"],
    "execution": ["pipelined"],
    "encoder-preset": ["veryfast", "medium"],
}
FIELD = {
    "threading": "workers",
    "detect-processes": "detect_processes",
    "detector": "detector",
    "steps": "steps",
    "guidance": "guidance",
    "precision": "dtype",
    "quantization": "quantization",
    "pruning": "pruning",
    "resolution": "resolution",
    "deepcache": "deepcache",
    "scheduler": "scheduler",
    "vae": "vae",
    "whisper-precision": "whisper_dtype",
    "compile": "compile",
    "batch": "segments_per_call",
    "attention": "attention",
    "fuse-qkv": "fuse_qkv",
    "temporal-attention": "temporal_attention",
    "channels-last": "channels_last",
    "vae-slicing": "vae_slicing",
    "execution": "execution",
    "encoder-preset": "encoder_preset",
}
FAMILY = {field: family for family, field in FIELD.items()}
# Each setting's tier when it changes, written out (metrics.fidelity): the same arithmetic on the same data
# (exact), the same math in another order or kernel (float), and DeepCache between the values that run the full
# U-Net on every call (float); every other change is lossy.
EXACT_FIELDS = {"workers", "detect_processes", "execution"}
FLOAT_FIELDS = {
    "segments_per_call", "compile", "attention", "fuse_qkv", "temporal_attention", "channels_last", "vae_slicing"
}
FULL_UNET_DEEPCACHE = {"off", "interval=1,branch=0"}
# The declared transform order, written out: the encoder, then the U-Net from its float weights outwards.
ORDER = ["whisper_dtype", "pruning", "fuse_qkv", "temporal_attention", "channels_last", "vae_slicing", "quantization", "deepcache", "attention", "compile"]
BASES = [
    {},
    {"steps": 3},
    {"dtype": "bf16"},
    {"whisper_dtype": "int8"},
    {"deepcache": "upstream-default", "workers": 2},
]
COMMON = {"weights": "tiny", "device": "cpu", "taesd_weights": "taesd"}


def _values() -> list[tuple[str, object]]:
    return [(family, value) for family, values in SAMPLES.items() for value in values]


def test_samples_cover_every_family():
    assert set(SAMPLES) == set(VARIANTS.names()) == set(FIELD)


def _expected_tier(field: str, old: object, new: object) -> str:
    if old == new or field in EXACT_FIELDS:
        return "exact"
    if field in FLOAT_FIELDS or (field == "deepcache" and {old, new} <= FULL_UNET_DEEPCACHE):
        return "float"
    return "lossy"


@pytest.mark.parametrize(
    "base", BASES, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()) or "defaults"
)
def test_noop_tier_and_order_for_every_pair(base):
    base_config = resolve(COMMON, base)
    pairs = [(a, b) for a, b in itertools.combinations(_values(), 2) if a[0] != b[0]]
    for (fa, va), (fb, vb) in pairs:
        for variants in ({fa: va, fb: vb}, {fb: vb, fa: va}):  # the listed order never matters
            trial = Trial("t", variants=variants, base={**COMMON, **base})
            config = trial.resolve()
            wanted = {FIELD[f]: VARIANTS.get(f).parse(v) for f, v in variants.items()}
            # the trial's config is the base with exactly the variants' settings replaced
            assert config == RunConfig(**{**base_config.to_dict(), **wanted}), variants
            noop = {f for f, v in variants.items() if wanted[FIELD[f]] == getattr(base_config, FIELD[f])}
            assert set(trial.noop_families()) == noop, (base, variants)
            tiers = {_expected_tier(field, getattr(base_config, field), value) for field, value in wanted.items()}
            expected = next(t for t in ("lossy", "float", "exact") if t in tiers | {"exact"})
            assert trial.tier == expected, (base, variants)
            expected_order = [
                FAMILY[f]
                for f in ORDER
                if getattr(config, f) != getattr(RunConfig(), f) and _transforms(f, config)
            ]
            got = [t.label.split("=")[0] for t in transforms_for(config)]
            assert list(dict.fromkeys(got)) == expected_order, (base, variants)


def _transforms(field: str, config: RunConfig) -> bool:
    """Whether a changed setting transforms the loaded pipeline (fp16/bf16 Whisper take effect at load)."""
    return field != "whisper_dtype" or config.whisper_dtype == "int8"


def test_the_issue_cases():
    # base steps 3, trial {threading: 2, steps: 20}: 7x the steps, lossy (the loosest of exact and lossy)
    trial = Trial("t", variants={"threading": 2, "steps": 20}, base={"steps": 3})
    assert trial.tier == "lossy" and trial.changes() == {"steps": (3, 20), "workers": (0, 2)}
    # precision fp32 on a bf16 base changes the dtype: not a no-op, lossy
    trial = Trial("t", variants={"precision": "fp32"}, base={"dtype": "bf16"})
    assert trial.noop_families() == [] and trial.tier == "lossy"
    # the tier is judged against the baseline trial's settings when it has variants of its own
    trial = Trial(
        "t", variants={"precision": "fp16", "threading": 4}, baseline_variants={"precision": "fp16"}
    )
    assert trial.tier == "exact" and trial.changes() == {"workers": (0, 4)}
    # threads and batching together: the loosest of exact and float
    trial = Trial("t", variants={"threading": 2, "batch": 2})
    assert trial.tier == "float"


MODEL_VALUES = [
    ("whisper-precision", "int8"),
    ("pruning", "drop-motion"),
    ("quantization", "torchao-int8wo"),
    ("deepcache", "upstream-default"),
    ("compile", "default"),
]


def _did(pipeline: LipsyncPipeline) -> list[str]:
    """What the loaded pipeline shows was done to it, read off its modules (not its log), in ORDER's terms."""
    from torchao.utils import TorchAOBaseTensor

    done = []
    linear = next(m for m in pipeline.whisper.model.modules() if isinstance(m, torch.nn.Linear)).weight
    scale = linear.abs().amax(dim=1, keepdim=True) / 127
    if torch.allclose(linear / scale, torch.round(linear / scale), atol=1e-3):
        done.append("whisper_dtype")
    unet = pipeline.unet.unet if isinstance(pipeline.unet, DeepCacheUNet) else pipeline.unet
    if any(isinstance(m, Skipped) for m in unet.modules()):
        done.append("pruning")
    if any(
        isinstance(m, torch.nn.Linear) and isinstance(m.weight, TorchAOBaseTensor) for m in unet.modules()
    ):
        done.append("quantization")
    if isinstance(pipeline.unet, DeepCacheUNet):
        done.append("deepcache")
        if pipeline.unet._full != pipeline.unet.full_path:
            done.append("compile")
    elif getattr(pipeline.unet, "_compiled_call_impl", None) is not None:
        done.append("compile")
    return done


BASE_WITH_TRANSFORMS = {"whisper_dtype": "int8", "deepcache": "upstream-default"}
LOADED_CASES = [({}, dict([b, a])) for a, b in itertools.combinations(MODEL_VALUES, 2)] + [
    # settings in the base take effect like variants; a trial can also set one back to its default
    (BASE_WITH_TRANSFORMS, {}),
    (BASE_WITH_TRANSFORMS, {"compile": "default", "pruning": "drop-motion"}),
    (BASE_WITH_TRANSFORMS, {"whisper-precision": "fp32", "quantization": "torchao-int8wo"}),
]


def test_loaded_pipeline_does_what_the_settings_say_in_order():
    pytest.importorskip("torchao")
    for base, variants in LOADED_CASES:
        config = Trial("t", variants=variants, base={**COMMON, **base}).resolve()
        pipeline = load_pipeline(config)
        wanted = [f for f in ORDER if getattr(config, f) != getattr(RunConfig(), f)]
        assert _did(pipeline) == wanted, (base, variants)
        applied = [entry.split(":", 1)[1].split("=")[0] for entry in pipeline.applied]
        assert list(dict.fromkeys(applied)) == [FAMILY[f] for f in wanted], (base, variants)
