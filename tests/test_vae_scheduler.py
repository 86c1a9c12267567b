import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from harness.models import load_scheduler, load_vae
from harness.models.checkpoint import CheckpointError
from harness.models.vae import SCALING_FACTOR, vae_config


@pytest.fixture(scope="module")
def tiny_vae():
    return load_vae("tiny").eval()


def test_tiny_vae_keeps_8x_downsampling_and_4_latent_channels(tiny_vae):
    assert tiny_vae.config.scaling_factor == SCALING_FACTOR == 0.18215
    assert not tiny_vae.config.shift_factor  # no shift
    images = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        posterior = tiny_vae.encode(images).latent_dist
        a = posterior.sample(generator=torch.Generator().manual_seed(0))
        b = posterior.sample(generator=torch.Generator().manual_seed(1))
        decoded = tiny_vae.decode(a).sample
    assert a.shape == (2, 4, 8, 6)
    assert not torch.equal(a, b)  # encoding samples the latent distribution
    assert decoded.shape == images.shape and torch.isfinite(decoded).all()


def test_carried_config_is_sd_vae_ft_mse():
    config = vae_config()
    assert config["block_out_channels"] == [128, 256, 512, 512]
    assert (config["layers_per_block"], config["latent_channels"], config["norm_num_groups"]) == (2, 4, 32)
    assert config["scaling_factor"] == 0.18215


def test_diffusers_folder_with_old_attention_names_loads(tmp_path, tiny_vae):
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old_names = {}
    for key, value in tiny_vae.state_dict().items():
        for new, old in renames.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        old_names[key] = value.contiguous()
    assert any(".attentions.0.query." in key for key in old_names)
    save_file(old_names, tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(vae_config("tiny")))
    loaded = load_vae(tmp_path)
    for name, value in tiny_vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_vae_problems_name_the_file_and_where_to_get_it(tmp_path, tiny_vae):
    with pytest.raises(CheckpointError, match="stabilityai/sd-vae-ft-mse"):
        load_vae(tmp_path)  # a folder without weights
    state = tiny_vae.state_dict()
    del state["decoder.conv_out.bias"]
    path = tmp_path / "vae.pt"
    torch.save(state, path)
    (tmp_path / "config.json").write_text(json.dumps(vae_config("tiny")))
    with pytest.raises(CheckpointError, match="does not match") as info:
        load_vae(path)  # a single file uses the carried full-size config
    assert str(path) in str(info.value)
    folder = tmp_path / "folder"
    folder.mkdir()
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(vae_config("tiny")))
    with pytest.raises(CheckpointError, match="missing: decoder.conv_out.bias"):
        load_vae(folder)
    (folder / "config.json").write_text(json.dumps(dict(vae_config("tiny"), scaling_factor=0.13025)))
    with pytest.raises(CheckpointError, match="scaling_factor"):
        load_vae(folder)


def test_taesd_behaves_like_the_kl_vae_in_unscaled_latents(tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).eval()
    taesd.save_pretrained(tmp_path)
    vae = load_vae("unused", kind="taesd", taesd=tmp_path).eval()
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(latents * SCALING_FACTOR, taesd.encode(images).latents)
        torch.testing.assert_close(vae.decode(latents).sample, taesd.decode(latents * SCALING_FACTOR).sample)
    assert latents.shape == (1, 4, 4, 4)
    with pytest.raises(CheckpointError, match="madebyollin/taesd"):
        load_vae("unused", kind="taesd", taesd=tmp_path / "missing")


def test_ddim_timesteps_equal_the_reference():
    scheduler = load_scheduler("ddim")
    scheduler.set_timesteps(20)
    assert scheduler.timesteps.tolist() == list(range(951, 0, -50))
    assert type(scheduler).__name__ == "DDIMScheduler"
    config = scheduler.config
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (config.clip_sample, config.set_alpha_to_one, config.steps_offset) == (False, False, 1)
    # eta 0 step from pure noise prediction: x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps
    sample, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    alphas = scheduler.alphas_cumprod
    x0 = (sample - (1 - alphas[951]).sqrt() * eps) / alphas[951].sqrt()
    expected = alphas[901].sqrt() * x0 + (1 - alphas[901]).sqrt() * eps
    torch.testing.assert_close(scheduler.step(eps, 951, sample).prev_sample, expected)


def test_dpm_solver_uses_the_same_noise_schedule():
    ddim, dpm = load_scheduler("ddim"), load_scheduler("dpm++")
    assert type(dpm).__name__ == "DPMSolverMultistepScheduler"
    assert dpm.config.algorithm_type == "dpmsolver++"
    torch.testing.assert_close(dpm.alphas_cumprod, ddim.alphas_cumprod)
    with pytest.raises(ValueError, match="ddim, dpm\\+\\+"):
        load_scheduler("euler")


def _to_ldm_names(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """The original CompVis/LDM layout of a diffusers AutoencoderKL state dict (as single-file VAEs ship)."""
    out = {}
    for key, value in state.items():
        key = key.replace("mid_block.resnets.0.", "mid.block_1.").replace(
            "mid_block.resnets.1.", "mid.block_2."
        )
        key = key.replace("mid_block.attentions.0.", "mid.attn_1.").replace(
            "attn_1.group_norm.", "attn_1.norm."
        )
        for new, old in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            if f"attn_1.{new}." in key:
                key = key.replace(f"attn_1.{new}.", f"attn_1.{old}.")
                value = value[:, :, None, None] if value.ndim == 2 else value  # LDM used 1x1 convs
        for i in range(levels):
            key = key.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            key = key.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            key = key.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block.")
            key = key.replace(
                f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample."
            )
        key = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out[f"first_stage_model.{key}"] = value.contiguous()
    return out


def test_single_file_in_the_original_ldm_layout_loads(tmp_path, tiny_vae, monkeypatch):
    import harness.models.vae as vae_module

    ldm = _to_ldm_names(tiny_vae.state_dict(), levels=4)
    assert "first_stage_model.encoder.down.0.block.0.norm1.weight" in ldm
    save_file(ldm, tmp_path / "vae-ldm.safetensors")
    monkeypatch.setattr(vae_module, "vae_config", lambda name="tiny": vae_config("tiny"))
    loaded = load_vae(tmp_path / "vae-ldm.safetensors")
    for name, value in tiny_vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


LEAN_LOAD = """
import sys, torch
from harness.models.lean_diffusers import skip_unused_diffusers_integrations
skip_unused_diffusers_integrations()
from harness.models import load_scheduler, load_vae
torch.save(load_vae(sys.argv[1]).state_dict(), sys.argv[2])
load_scheduler("dpm++")
print(sorted(m for m in ("bitsandbytes", "torchao", "transformers.modeling_utils") if m in sys.modules))
"""


def test_a_trial_process_loads_a_real_layout_vae_without_diffusers_unused_integrations(tmp_path, tiny_vae):
    """As in a trial process (harness.launcher): diffusers sees bitsandbytes, torchao and transformers as absent,
    and a VAE folder with original LDM names still loads through diffusers' single-file conversion."""
    folder = tmp_path / "vae"
    folder.mkdir()
    save_file(_to_ldm_names(tiny_vae.state_dict(), levels=4), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(vae_config("tiny")))
    done = subprocess.run(
        [sys.executable, "-c", LEAN_LOAD, str(folder), str(tmp_path / "loaded.pt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # none of them imported
    loaded = torch.load(tmp_path / "loaded.pt")
    for name, value in tiny_vae.state_dict().items():
        assert torch.equal(loaded[name], value), name


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_making_a_scheduler_after_loading_registers_no_pytree_node(scheduler):
    """A compiled U-Net that walks pytrees (flex_attention's, temporal-attention=packed-flex) guards on the size of
    pytree's registry, to which every diffusers output class adds itself as it is defined. A sampler first built
    at the first denoise, after the bench's first compiled call, recompiled the U-Net (19 s on the H200). In a
    fresh process, since this one may have built samplers already."""
    script = f"""
import torch.utils._pytree as pytree
from harness.config import RunConfig
from harness.pipeline.lipsync import LipsyncPipeline
pipeline = LipsyncPipeline.load_models(RunConfig(weights="tiny", device="cpu", scheduler="{scheduler}"))
before = len(pytree.SUPPORTED_NODES)
print(type(pipeline.make_scheduler()).__name__, before, len(pytree.SUPPORTED_NODES))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    name, before, after = done.stdout.strip().splitlines()[-1].split()  # the script's line: the last one
    assert name == {"ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler"}[scheduler]
    assert int(before) > 0 and before == after
