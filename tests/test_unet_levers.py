"""bench/unet_levers.py's table: a lever's figures that say it is broken, or that it measured compile's graph,
are named under the table, and a note written into the JSON afterwards is shown instead."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import unet_levers  # noqa: E402  (bench/ is a folder of scripts, not a package)

META = {"device": "NVIDIA H200", "resolution": 512, "frames": 16, "weights": "synthetic"}


def _row(lever: str, ms: float, call: float, latent: float, **extra) -> dict:
    return {"lever": lever, "settings": {"compile": "default"}, "tier": "float", "ms_per_segment": ms,
            "first_call_s": 100.0, "call_snr_db_vs_compile": call, "latent_snr_db_vs_compile": latent,
            "face_psnr_db_vs_compile": latent, **extra}


def test_the_table_names_broken_rows_and_rows_that_measured_compiles_graph():
    rows = [
        {"lever": "compile", "settings": {"compile": "default"}, "tier": "reference", "ms_per_segment": 113.4,
         "first_call_s": 123.0},
        _row("temporal-packed", 101.0, 55.8, 53.6),
        _row("fp8-row", 126.1, 19.9, math.nan),
        _row("flash", 111.5, math.inf, math.inf),
        _row("cudnn", 111.9, math.inf, math.inf, note="torch's own choice here"),
        _row("temporal-packed-flex", 101.7, 55.8, 53.5, timed_graphs_compiled=0, denoise_graphs_compiled=1),
    ]
    _heading, table, notes = unet_levers.markdown(rows, META).strip().split("\n\n")
    assert any(line.startswith("| temporal-packed |") and "| 1.12x |" in line for line in table.splitlines())
    notes = notes.splitlines()
    assert notes == [
        "fp8-row: BROKEN: NaN in its output.",
        "flash: its output is compile's bit for bit: it changed nothing in the compiled call here.",
        "cudnn: torch's own choice here.",
        "temporal-packed-flex: recompiled: its denoise built 1 graph(s) after the first call, so those times "
        "include compiling.",
    ]


def test_inductor_options_this_torch_lacks_are_left_out_and_named_in_the_row_and_table():
    import torch._inductor.config as inductor

    lever = {"name": "probe", "settings": {"compile": "default"},
             "inductor": {"epilogue_fusion": not inductor.epilogue_fusion, "no_such_option": 1}}
    before = inductor.epilogue_fusion
    with unet_levers.inductor_settings(lever) as absent:
        assert inductor.epilogue_fusion is not before
    assert inductor.epilogue_fusion is before
    assert absent == ["no_such_option"]
    row = {"lever": "probe", "settings": lever["settings"], "tier": "float", "inductor": lever["inductor"],
           "inductor_absent": absent, "error": "stopped at its time limit"}
    assert "(not in this torch, left out: no_such_option)" in unet_levers.markdown([row], META)


def _run_failing_lever(out: Path, cache: Path, *extra: str) -> dict:
    """The bench with one lever that fails at loading (an unknown compile mode): its JSON."""
    done = subprocess.run(
        [sys.executable, str(Path(unet_levers.__file__)), "--tiny", "--device", "cpu", "--levers", "",
         "--lever", "probe=compile:no-such-mode,inductor.no_such_option:1", "--budget", "200",
         "--work", str(out / "work"), "--out", str(out), "--cache-dir", str(cache), *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "unet_levers_256.json").read_text())


def test_a_lever_stopped_at_its_time_limit_quotes_what_its_log_said_last(tmp_path, stand_in_python):
    """Coordinate descent and autotuning were stopped in their first calls on the H200 again and again with
    nothing to say where the time went; the row now keeps the log's last lines (a stand-in lever process that
    prints and hangs, killed at a 2 s limit)."""
    stand_in_python("echo 'tuning kernel 7 of 161'\nexec sleep 60\n")
    args = argparse.Namespace(work=str(tmp_path), resolution=256, device="cpu", frames=4, steps=2, repeats=2,
                              cache_dir="", roofline="", save_cache="", cache_out="", load_cache="", tiny=True,
                              compile_only=True)
    row = unet_levers.run_child(unet_levers.find_lever("coord-descent-1dir"), args, limit=2)
    assert row["error"] == "stopped at its time limit, 2 s (still in its first call: compiling)"
    assert row["error_context"] == "tuning kernel 7 of 161"
    assert row["wall_s"] < 30  # the process group was killed, not waited for


def test_a_failed_levers_row_names_the_options_left_out_and_its_autotune_timings_come_back(tmp_path):
    """The row is saved as soon as the options are set: autotune-mm-regional was stopped in its first call on the
    H200 (2026-12-03), and its row could not say whether the GPU's torch had its timing options. Whatever stopped
    the lever, the parent packs the timings its cache folder holds into the call's output, and a later call's
    --load-cache puts them into its own, empty cache folder (one bench process each: they are slow to start)."""
    first, second = tmp_path / "first", tmp_path / "second"
    problem = "[('cuda', 'torch.float16', 32, 64, 64, 1, 0), ('cuda', 'torch.float16', 64, 16, 1, 64, 0)]"
    timing = {"system": {}, "cache": {"mm": {problem: {"highest": {"mm-a": 0.03, "triton_mm-b": 0.01}}}}}
    timings = {"cache/0a1b": json.dumps(timing), "ab/cabc.best_config": '{"XBLOCK": 64}',
               "cd/cdef.best_config": '{"XBLOCK": 128, "found_by_coordesc": true}'}
    for name, text in timings.items():
        (first / "cache" / name).parent.mkdir(parents=True, exist_ok=True)
        (first / "cache" / name).write_text(text)
    result = _run_failing_lever(first, first / "cache")
    (row,) = result["rows"]
    assert row["inductor_absent"] == ["no_such_option"]
    assert row["error"].startswith("exit 1") and "no-such-mode" in row["error"] + row.get("error_context", "")
    assert "not in this torch, left out: no_such_option" in (first / "unet_levers_256.md").read_text()
    meta = result["meta"]
    assert meta["autotune_files_saved"] == 3 and meta["autotune_problems"] == 1
    assert meta["coordinate_descent_configs"] == 1  # and the table says so
    assert "found by coordinate descent in the cache folder (carried ones included): 1." in (
        first / "unet_levers_256.md").read_text()
    # and which kernel won, beside them
    assert "| mm | 32 x 64 x 16 | 2 | Triton | 10.0 | 30.0 | 3.00 |" in (first / "autotune_choices.md").read_text()
    meta = _run_failing_lever(second, second / "cache", "--load-cache", str(first))["meta"]
    assert meta["autotune_files_loaded"] == 3 and meta["autotune_files_saved"] == 3
    assert {name: (second / "cache" / name).read_text() for name in timings} == timings


def test_two_calls_timing_files_of_one_name_are_merged_problem_by_problem(tmp_path):
    """Inductor keeps one timing file per device and torch. Call 18 carried the merge of two calls' files, in
    which coordinate descent's small one had replaced autotuning's (all 20 matmul problems), and timed them all
    again; loading now adds the carried problems to the folder's file, its own timings kept where both have one."""
    def folder(name: str, timings: dict, config: str) -> Path:
        root = tmp_path / name
        (root / "cache").mkdir(parents=True)
        (root / "cache" / "c33f").write_text(json.dumps({"system": {"device": "H200"}, "cache": timings}))
        (root / "ab").mkdir()
        (root / "ab" / "k.best_config").write_text(config)
        return root

    autotuned = folder("autotuned", {"mm": {"1x2x3": {"triton_a": 0.5, "aten": 0.6}},
                                     "addmm": {"4x5x6": {"aten": 0.2}}}, '{"XBLOCK": 64}')
    tuned = folder("tuned", {"mm": {"1x2x3": {"triton_a": 0.4}, "7x8x9": {"aten": 0.3}},
                             "base mm time: 2x320": 0.02}, '{"XBLOCK": 8}')
    out = tmp_path / "out"
    assert unet_levers.save_autotune_timings(autotuned, out) == 2
    assert unet_levers.load_autotune_timings(out, tuned) == 1  # the timing file merged; the config kept
    assert json.loads((tuned / "cache" / "c33f").read_text()) == {
        "system": {"device": "H200"},
        "cache": {"mm": {"1x2x3": {"triton_a": 0.4, "aten": 0.6}, "7x8x9": {"aten": 0.3}},
                  "addmm": {"4x5x6": {"aten": 0.2}}, "base mm time: 2x320": 0.02},
    }
    assert (tuned / "ab" / "k.best_config").read_text() == '{"XBLOCK": 8}'


def test_an_explicit_timeout_outranks_a_levers_own_limit():
    """README's command for a machine without a call limit (autotuning for an hour) must get its hour."""
    autotune = unet_levers.find_lever("autotune-mm-regional")
    assert unet_levers.lever_timeout(autotune, None) == autotune["timeout"] == 570
    assert unet_levers.lever_timeout(autotune, 3600.0) == 3600.0
    assert unet_levers.lever_timeout(unet_levers.find_lever("fuse-qkv"), None) == unet_levers.DEFAULT_TIMEOUT_S



AUTOTUNE_SCRIPT = """
import torch
import torch._inductor.config as inductor
inductor.max_autotune_gemm_backends = "CPP,ATEN"  # CPU autotuning: inductor's C++ GEMM templates against ATen
inductor.freezing = True  # which those templates need
linear = torch.nn.Linear(64, 64).eval()
with torch.no_grad():
    torch.compile(linear, mode="max-autotune-no-cudagraphs")(torch.randn(128, 64))
"""


def test_autotune_timings_carried_into_an_empty_cache_folder_spare_the_next_process_its_benchmarking(tmp_path):
    """What lets autotuning go on across device calls, each on a fresh machine: the timings the first process
    wrote (here a CPU autotune of one linear layer) are packed, unpacked into another, empty cache folder, and the
    process there benchmarks nothing."""
    import os

    def compile_in(folder: Path) -> str:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(folder)}
        done = subprocess.run([sys.executable, "-c", AUTOTUNE_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    out.mkdir()
    assert "AUTOTUNE benchmarking" in compile_in(first)
    assert unet_levers.save_autotune_timings(first, out) >= 1
    assert unet_levers.load_autotune_timings(out, second) >= 1
    assert "AUTOTUNE benchmarking" not in compile_in(second)
    assert unet_levers.load_autotune_timings(out, second) == 0  # the folder's own files are kept
    assert unet_levers.save_autotune_timings(tmp_path / "empty", out) == 0
