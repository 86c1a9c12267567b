from pathlib import Path

import pytest

from harness.cli import main
from variants import VARIANTS

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


@pytest.mark.parametrize("command", [[], ["run"], ["sweep"], ["score"], ["download"], ["variants"]])
def test_help_explains_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: harness" in capsys.readouterr().out


def test_run_help_names_each_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--video",
        "--audio",
        "--out",
        "--weights",
        "--detector",
        "--resolution",
        "--steps",
        "--guidance",
        "--seed",
        "--device",
        "--dtype",
        "--no-face",
        "--variant",
        "--crf",
    ):
        assert option in text


def test_variants_lists_every_family(capsys):
    assert main(["variants"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in VARIANTS.names())


def test_sweep_dry_run_lists_trials_without_running(tmp_path, capsys):
    assert main(["sweep", str(QUICKSTART), "--dry-run", "--out-dir", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "baseline" in text and "threads2" in text and "(exact tier)" in text
    assert not (tmp_path / "o").exists()


def test_bad_sweep_file_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("name: x\ngrid:\n  stpes: [2]\n")
    assert main(["sweep", str(tmp_path / "s.yaml"), "--dry-run"]) == 2
    assert "s.yaml:3: unknown variant family 'stpes'; did you mean 'steps'" in capsys.readouterr().err


def test_score_prints_json_scores_and_says_why_others_are_missing(tmp_path, capsys):
    import json

    from harness.pipeline.demo_clip import ensure_demo_clip

    video, audio = ensure_demo_clip()
    args = ["score", str(video), "--audio", str(audio), "--reference", str(video), "--input", str(video)]
    assert main([*args, "--resolution", "256", "--json"]) == 0
    captured = capsys.readouterr()
    scores = json.loads(captured.out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert scores["psnr_db"] == 100.0  # identical frames: capped, not Infinity
    assert scores["ssim"] == pytest.approx(1.0) and "sync_av_offset_frames" in scores
    assert "lse_c: not computed" in captured.err and "syncnet" in captured.err.lower()
    assert scores["psnr_outside_mouth_db"] == 100.0 and scores["mouth_sharpness_ratio"] == pytest.approx(1.0)


def test_run_takes_settings_from_a_config_file_through_the_trial_path(tmp_path, capsys):
    """whisper_dtype: int8 in a --config file used to run fp32 without a word: the rounding lived only in the
    variant. Now the setting owns its transform, and `harness run` records it like any sweep trial."""
    import json

    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {"weights": "tiny", "device": "cpu", "steps": 1, "max_seconds": 0.64, "whisper_dtype": "int8"}
        )
    )
    assert (
        main(["run", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--variant", "deepcache=2"])
        == 0
    )
    assert (
        "transforms applied, in order: whisper:whisper-precision=int8, unet:deepcache"
        in capsys.readouterr().out
    )
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["transforms"][0] == "whisper:whisper-precision=int8"
    assert result["params"] == {
        "variant.deepcache": "interval=2,branch=0"
    }  # the config is in config.json only
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["whisper_dtype"] == "int8" and saved["deepcache"] == "interval=2,branch=0"
    assert (tmp_path / "run" / "output.mp4").exists()


def test_run_rejects_a_bad_setting_before_loading_anything(tmp_path, capsys):
    assert main(["run", "--detector", "retinaface", "--run-dir", str(tmp_path / "run")]) == 2
    assert "detector must be one of mediapipe, buffalo_l, buffalo_s" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_output_cut_short_by_its_reader_is_no_traceback():
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "variants"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the first line, like `| head -0`
    assert proc.wait(timeout=60) in (0, 1)
    assert "Traceback" not in proc.stderr.read().decode()
