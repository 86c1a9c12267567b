"""bench/autotune_choices.py: the winner of each matmul problem from inductor's autotuning timings, as an H200
call returned them and as a hand-made file in the same format."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import autotune_choices  # noqa: E402  (bench/ is a folder of scripts, not a package)

CALL21 = Path(__file__).resolve().parents[1] / "bench/results/h200_unet_autotune_timings_512_call21.tar.xz"
# inductor's key: per input (device, dtype, size0, size1, stride0, stride1, offset); addmm's bias comes first
ADDMM_KEY = ("[('cuda', 'torch.float16', 64, 32, 0, 1, 0), ('cuda', 'torch.float16', 64, 16, 16, 1, 0), "
             "('cuda', 'torch.float16', 16, 32, 1, 16, 0)]")
MM_KEY = "[('cuda', 'torch.float16', 8, 24, 24, 1, 0), ('cuda', 'torch.float16', 24, 40, 1, 24, 0)]"


def _timing_file() -> dict:
    return {"system": {"device": "test"}, "cache": {
        "addmm": {ADDMM_KEY: {"highest": {"addmm-a": 0.004, "bias_addmm-b": 0.003, "triton_mm-c": 0.001}}},
        "mm": {MM_KEY: {"highest": {"mm-a": 0.002, "triton_mm-b": 0.005}}},
        "base mm time: (...)": 0.04,  # pad_mm's own entries: not choices
    }}


def test_each_problem_gets_its_shape_winner_and_fastest_cublas_kernel():
    found = autotune_choices.problems(_timing_file())
    assert [(p.op, p.m, p.k, p.n, p.choices, p.best, p.extern) for p in found] == [
        ("addmm", 64, 16, 32, 3, "triton_mm-c", "bias_addmm-b"),
        ("mm", 8, 24, 40, 2, "mm-a", "mm-a"),
    ]
    table = autotune_choices.markdown(found)
    assert "| addmm | 64 x 16 x 32 | 3 | Triton | 1.0 | 3.0 | 3.00 |" in table
    assert "| mm | 8 x 24 x 40 | 2 | cuBLAS | 2.0 | 2.0 | 1.00 |" in table
    assert table.endswith("2 timing keys; Triton won 1. One launch of each: 0.01 ms with cuBLAS, 0.00 ms with the "
                          "winners (40% less).\n")


def test_an_archive_a_cache_folder_and_a_file_read_alike(tmp_path, capsys):
    folder = tmp_path / "inductor"
    (folder / "cache").mkdir(parents=True)
    timing = folder / "cache" / "c33ff642"
    timing.write_text(json.dumps(_timing_file()))
    (folder / "ab").mkdir()
    (folder / "ab" / "x.best_config").write_text("{}")  # tuned configs travel in the archive too: not timings
    archive = tmp_path / "autotune_timings.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for path in (timing, folder / "ab" / "x.best_config"):
            tar.add(path, arcname=str(path.relative_to(folder)))
    outputs = []
    for source in (archive, folder, timing):
        assert autotune_choices.main([str(source)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2]
    assert "Triton won 1" in outputs[0]


def test_a_file_without_matmul_timings_is_an_error_not_an_empty_table(tmp_path, capsys):
    empty = tmp_path / "timings.json"
    empty.write_text(json.dumps({"cache": {"base mm time: (...)": 0.04}}))
    assert autotune_choices.main([str(empty)]) == 1
    assert "no matmul timings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        autotune_choices.main([str(tmp_path / "missing.tar.xz")])


def test_the_h200_matmul_autotuning_left_the_big_matmuls_to_cublas():
    # README's reading of call 21: 32 keys, Triton's templates won the 17 small ones, cuBLAS the big ones
    found = autotune_choices.read_problems(CALL21)
    assert len(found) == 32
    assert sum(p.triton_wins for p in found) == 17
    assert not any(p.triton_wins for p in found[:9])  # the nine slowest under cuBLAS, 116-366 µs each
    assert {(p.m, p.k, p.n) for p in found} >= {(131072, 320, 2560), (8192, 1280, 10240), (1600, 384, 320)}
