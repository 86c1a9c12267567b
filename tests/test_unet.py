import math

import pytest
import torch
from safetensors.torch import save_file

from harness.models import load_unet
from harness.models.checkpoint import CheckpointError
from harness.models.unet import LatentSyncUNet
from harness.models.unet_config import UNetConfig, UNetConfigError
from harness.models.unet_layers import group_norm_over_frames

# The bound. The fixture's `expected` was computed with the exact sinusoidal `pe`; its checkpoint carries
# `pe` rounded to float16, which alone would cost 1.25e-4. The loader restores the exact encoding (~2e-6 left).
PARITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def parity(shared_dir):
    folder = shared_dir / "fixtures" / "parity"
    io = torch.load(folder / "tiny_unet_io.pt", weights_only=True)
    return folder, io


@pytest.fixture(scope="module")
def tiny_state(parity):
    folder, _ = parity
    return torch.load(folder / "tiny_unet.pt", weights_only=True)["state_dict"]


def _relative_error(out, expected):
    return ((out - expected).abs().max() / expected.abs().max()).item()


def test_matches_the_reference_output_on_the_tiny_fixture(parity):
    folder, io = parity
    unet = load_unet(folder / "tiny_unet.pt", config=folder / "tiny_unet_config.json").eval()
    assert unet.dtype == torch.float32  # the fixture's float16 values are cast on load
    with torch.no_grad():
        out = unet(io["sample"], io["timestep"], io["encoder_hidden_states"])
    assert out.shape == io["expected"].shape == (2, 4, 16, 8, 8)
    assert _relative_error(out, io["expected"]) <= PARITY_TOLERANCE


def test_a_changed_position_encoding_is_kept(parity, tmp_path):
    folder, io = parity
    ckpt = torch.load(folder / "tiny_unet.pt", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("pos_encoder.pe"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] * 2
    torch.save(ckpt, tmp_path / "changed.pt")
    unet = load_unet(tmp_path / "changed.pt", config=folder / "tiny_unet_config.json")
    assert torch.equal(unet.state_dict()[key], ckpt["state_dict"][key].float())


def test_timestep_as_int_float_and_tensor_agree(parity):
    folder, io = parity
    unet = load_unet(folder / "tiny_unet.pt", config="tiny").eval()
    sample, audio = io["sample"][:1, :, :4], io["encoder_hidden_states"][:4]
    with torch.no_grad():
        outs = [unet(sample, t, audio) for t in (261, 261.0, torch.tensor(261), torch.tensor([261]))]
        other = unet(sample, 500, audio)
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])
    assert not torch.allclose(other, outs[0])


def test_full_size_state_dict_equals_the_reference_manifest(shared_dir):
    rows = (shared_dir / "reference" / "latentsync" / "unet_state_dict_manifest.tsv").read_text().splitlines()
    manifest = {}
    for row in rows:
        name, shape, _ = row.split("\t")
        manifest[name] = tuple(int(n) for n in shape.split("x"))
    with torch.device("meta"):
        unet = LatentSyncUNet(UNetConfig.named("latentsync"))
    ours = {name: tuple(t.shape) for name, t in unet.state_dict().items()}
    assert sorted(set(manifest) - set(ours)) == []
    assert sorted(set(ours) - set(manifest)) == []
    assert {n: s for n, s in ours.items() if manifest[n] != s} == {}
    assert len(ours) == 1246
    assert sum(t.numel() for t in unet.state_dict().values()) == 1_267_944_644


def test_carried_configs_equal_the_reference_files(shared_dir):
    import json

    reference = shared_dir / "reference" / "latentsync" / "unet_config.json"
    tiny = shared_dir / "fixtures" / "parity" / "tiny_unet_config.json"
    assert UNetConfig.named("latentsync") == UNetConfig.from_dict(json.loads(reference.read_text()))
    assert UNetConfig.named("tiny") == UNetConfig.from_json(tiny)


def test_config_names_unknown_keys_and_unsupported_values():
    with pytest.raises(UNetConfigError, match="use_linear_projektion"):
        UNetConfig.from_dict({"use_linear_projektion": True})
    with pytest.raises(UNetConfigError, match="temporal_dropout"):
        UNetConfig.from_dict({"motion_module_kwargs": {"temporal_dropout": 0.1}})
    with pytest.raises(UNetConfigError, match="act_fn"):
        UNetConfig.from_dict({"act_fn": "gelu"})
    with pytest.raises(UNetConfigError, match="Temporal_Cross"):
        UNetConfig.from_dict({"motion_module_kwargs": {"attention_block_types": ["Temporal_Cross"]}})


def test_resnet_group_norm_statistics_span_all_frames():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8)
    video = torch.randn(2, 8, 3, 5, 5)  # (b, c, f, h, w)
    video[:, :, 0] *= 10  # frames on very different scales: per-frame statistics would differ visibly
    frames_as_batch = video.transpose(1, 2).reshape(6, 8, 5, 5)
    out = group_norm_over_frames(norm, frames_as_batch, frames=3)
    expected = norm(video).transpose(1, 2).reshape(6, 8, 5, 5)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, norm(frames_as_batch))


def test_strict_loading_lists_every_renamed_missing_and_misshaped_key(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["conv_in.weights"] = state.pop("conv_in.weight")  # renamed
    del state["mid_block.resnets.1.conv2.bias"]  # missing
    state["conv_out.bias"] = torch.zeros(5)  # wrong shape
    path = tmp_path / "broken_unet.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_unet(path, config="tiny")
    message = str(info.value)
    assert str(path) in message
    for expected in (
        "missing: conv_in.weight",
        "unexpected: conv_in.weights",
        "missing: mid_block.resnets.1.conv2.bias",
        "wrong shape: conv_out.bias is (5,), the model has (4,)",
    ):
        assert expected in message
    assert "4 problems" in message


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "latentsync_unet.pt"
    path.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        load_unet(path, config="tiny")
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="ByteDance/LatentSync-1.6"):
        load_unet(tmp_path / "nowhere.pt", config="tiny")
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        load_unet(path, config="tiny")


def test_legacy_format_loads_and_a_truncated_file_says_so(tmp_path, tiny_state):
    """A checkpoint in torch.save's pre-1.6 format loads (read whole, not memory-mapped); a cut-off zip-format
    file is named as truncated, with no advice to re-save it."""
    legacy = tmp_path / "legacy.pt"
    torch.save(tiny_state, legacy, _use_new_zipfile_serialization=False)
    assert load_unet(legacy, config="tiny") is not None
    whole = tmp_path / "whole.pt"
    torch.save(tiny_state, whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt zip-format") as info:
        load_unet(cut, config="tiny")
    assert str(cut) in str(info.value) and "mmap" not in str(info.value)


def test_bare_state_dict_safetensors_and_folder_load_the_same_weights(tmp_path, tiny_state, parity):
    _, io = parity
    torch.save(tiny_state, tmp_path / "latentsync_unet.pt")  # bare state dict, in a folder
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, tmp_path / "unet.safetensors")
    sample, audio = io["sample"][:1, :, :2], io["encoder_hidden_states"][:2]
    with torch.no_grad():
        from_folder = load_unet(tmp_path, config="tiny")(sample, 10, audio)
        from_safetensors = load_unet(tmp_path / "unet.safetensors", config="tiny")(sample, 10, audio)
    torch.testing.assert_close(from_folder, from_safetensors)


def test_random_weights_fill_what_the_reference_zero_initialises_and_stay_finite():
    unet = load_unet("tiny").eval()
    zero_initialised = [
        "conv_in.weight",
        "conv_in.bias",
        "conv_out.weight",
        "conv_out.bias",
        "down_blocks.0.motion_modules.0.temporal_transformer.proj_out.weight",
        "up_blocks.3.motion_modules.1.temporal_transformer.proj_out.bias",  # the small config: 1 layer + 1
    ]
    state = unet.state_dict()
    for name in zero_initialised:
        assert state[name].abs().min() > 0, name
    again = load_unet("tiny").state_dict()
    assert all(torch.equal(state[name], again[name]) for name in state)  # seeded
    torch.manual_seed(0)
    sample = torch.randn(1, 13, 4, 8, 8)
    with torch.no_grad():
        out = unet(sample, 951, torch.randn(4, 50, 384))
    assert out.shape == (1, 4, 4, 8, 8)
    assert torch.isfinite(out).all() and out.std() > 0


def test_position_encoding_buffer_is_the_sinusoidal_table():
    pe = load_unet("tiny").state_dict()[
        "down_blocks.2.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    ]
    assert pe.shape == (1, 24, 64)
    position, channel = 5, 6
    div = math.exp(channel * -math.log(10000.0) / 64)
    assert pe[0, position, channel].item() == pytest.approx(math.sin(position * div), abs=1e-6)
    assert pe[0, position, channel + 1].item() == pytest.approx(math.cos(position * div), abs=1e-6)


def test_bad_input_shapes_name_what_was_expected():
    unet = load_unet("tiny")
    with pytest.raises(ValueError, match=r"\(batch, 13, frames, height, width\)"):
        unet(torch.zeros(1, 9, 2, 8, 8), 1, torch.zeros(2, 50, 384))
    with pytest.raises(ValueError, match=r"batch\*frames=2, tokens, 384"):
        unet(torch.zeros(1, 13, 2, 8, 8), 1, torch.zeros(1, 50, 384))
    with pytest.raises(ValueError, match="at most 24 frames"):
        unet(torch.zeros(1, 13, 25, 8, 8), 1, torch.zeros(25, 50, 384))
