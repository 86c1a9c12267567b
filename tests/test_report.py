"""Report pieces on hand-made sweep folders (no pipeline runs): labels that never overlap, the Pareto front,
`harness compare` flagging a regression beyond the noise and not one within it, `harness report` by name."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.text import Text

from harness.cli import main
from harness.noise import write_speed_ratios
from harness.results import TIMED_RUNS_FILE, TrialResult, write_json_atomic
from harness.stages import STAGES
from reports.compare import REGRESSION, WITHIN_NOISE, compare
from reports.labels import place_labels
from reports.pareto import pareto_front
from reports.plots import new_figure, sweep_plots


def _sweep(
    folder: Path,
    totals: dict[str, list[float]],
    steps: dict[str, int] | None = None,
    device_name: str = "AMD EPYC",
) -> Path:
    """A finished sweep whose trials' timed repeats took `totals` seconds for 10 frames each."""
    for name, seconds in totals.items():
        trial = folder / "trials" / f"{name}-0000"
        runs = [{"total_s": s, "denoise_s": s / 2} for s in seconds]
        write_json_atomic(trial / TIMED_RUNS_FILE, {"cold": runs[0], "runs": runs})
        # inputs are compared by file name: another checkout's path to the same clip is the same input
        config = {
            "video": f"/{folder.name}/v.mp4",
            "audio": "a.wav",
            "resolution": 256,
            "steps": (steps or {}).get(name, 3),
        }
        write_json_atomic(trial / "config.json", config)
        fps = 10 / float(np.median(seconds))
        metrics = {"frames": 10.0, "fps": fps, "rtf": fps / 25, "total_s": float(np.median(seconds))}
        tags = {"env.device_type": "cpu", "env.device_name": device_name}
        TrialResult(trial=name, status="ok", metrics=metrics, tags=tags).write(trial)
    write_json_atomic(folder / "sweep.json", {"name": folder.name, "baseline": "baseline"})
    write_speed_ratios(folder, "baseline")
    return folder


def test_labels_do_not_overlap_with_twenty_clustered_trials(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xs, ys = list(rng.normal(2.0, 0.05, 20)), list(rng.normal(40.0, 0.5, 20))
    names = [f"steps={i % 5},guidance={1 + i // 5}" for i in range(20)]
    figure = new_figure(6.5, 5.5)
    ax = figure.add_subplot()
    ax.scatter(xs, ys)
    ax.margins(0.25)
    labels = place_labels(ax, xs, ys, names)
    renderer = figure.canvas.get_renderer()
    for label in labels:
        label.update_positions(renderer)
    boxes = [Text.get_window_extent(label, renderer) for label in labels]  # the text, not its leader line
    overlapping = [(i, j) for i in range(20) for j in range(i + 1, 20) if boxes[i].overlaps(boxes[j])]
    assert overlapping == []

    table = pd.DataFrame({"trial": names, "status": "ok", "fps": xs, "psnr_db": ys, "speedup_x": 1.0})
    paths = sweep_plots(table, tmp_path, STAGES, baseline=names[0])
    assert {p.name for p in paths} >= {"fps.png", "speed_vs_quality.png", "speed_ratios.png"}
    assert all(cv2.imread(str(p)) is not None for p in paths)


def test_pareto_front_keeps_the_trials_nothing_beats() -> None:
    speed, psnr = [1.0, 2.0, 3.0, 2.5, float("nan")], [50.0, 45.0, 30.0, 20.0, 60.0]
    assert pareto_front(speed, psnr) == [True, True, True, False, False]
    assert pareto_front([1.0, 2.0], [9.0, 5.0], higher_is_better=False) == [False, True]


def test_compare_flags_a_regression_beyond_the_noise_only(tmp_path: Path, capsys) -> None:
    a = _sweep(tmp_path / "a", {"baseline": [1.0, 1.01, 0.99, 1.0, 1.02], "noisy": [1.0, 1.5, 0.8, 1.2, 0.9]})
    b = _sweep(
        tmp_path / "b", {"baseline": [1.3, 1.31, 1.29, 1.3, 1.32], "noisy": [1.4, 0.9, 1.1, 1.3, 0.85]}
    )
    table = compare(a, b).table
    assert table.loc["baseline", "verdict"] == REGRESSION and table.loc["baseline", "ratio_x_high"] < 0.8
    assert table.loc["noisy", "verdict"] == WITHIN_NOISE
    assert main(["compare", str(a), str(b)]) == 1  # a regression fails the command, for CI
    assert "**regression**" in capsys.readouterr().out
    assert main(["compare", str(a), str(a)]) == 0


def test_compare_lists_what_it_could_not_compare_and_exits_2_when_nothing_was(tmp_path: Path, capsys) -> None:
    five = [1.0, 1.01, 0.99, 1.0, 1.02]
    a = _sweep(tmp_path / "a", {"baseline": five, "few": [1.0], "gone": five, "steps": five})
    b = _sweep(tmp_path / "b", {"few": five, "new": five, "steps": five}, steps={"steps": 5})
    comparison = compare(a, b)
    assert comparison.table.empty
    assert comparison.not_compared == {
        "baseline": "finished in A only",
        "few": "too few repeats: A 1, B 5 (5 needed on each side)",
        "gone": "finished in A only",
        "new": "finished in B only",
        "steps": "different settings (steps: 3 vs 5)",
    }
    assert main(["compare", str(a), str(b)]) == 2
    out = capsys.readouterr().out
    assert "No trial could be compared" in out and "- `few`: too few repeats: A 1, B 5" in out

    c = _sweep(tmp_path / "c", {"baseline": five, "few": five}, device_name="NVIDIA H200")
    assert (
        compare(a, c)
        .not_compared["baseline"]
        .startswith("different device: A cpu / AMD EPYC, B cpu / NVIDIA")
    )
    d = _sweep(tmp_path / "d", {"baseline": [1.0, 1.02, 0.98, 1.01, 1.0], "few": five})
    assert main(["compare", str(a), str(d)]) == 0  # the baseline compared, within the noise; `few` listed
    assert "- `few`: too few repeats" in capsys.readouterr().out


def test_report_command_by_sweep_name_without_mlflow(tmp_path: Path, monkeypatch) -> None:
    _sweep(
        tmp_path / "outputs" / "mine",
        {"baseline": [1.0, 1.01, 0.99, 1.0, 1.0], "fast": [0.5, 0.51, 0.49, 0.5, 0.5]},
    )
    monkeypatch.chdir(tmp_path)
    assert main(["report", "mine", "--out", "rep"]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| fast | 20.00 |" in text and "faster" in text and "Not logged to MLflow" in text
    assert "No frame strip" in text and "No cProfile pass" in text  # absent pieces are said, not faked
    ratios = json.loads((tmp_path / "outputs" / "mine" / "speed_ratios.json").read_text())
    assert ratios["fast"]["speedup_x"] == 2.0


def test_the_report_names_every_kind_of_no_verdict_and_warns_of_trials_on_different_gpus(
    tmp_path: Path,
) -> None:
    from reports.build import write_report

    folder = _sweep(tmp_path / "s", {"baseline": [1.0, 1.01, 0.99, 1.0, 1.0], "once": [0.5]})
    info = json.loads((folder / "sweep.json").read_text())
    text = write_report(folder).read_text()
    once = next(line for line in text.splitlines() if line.startswith("| once |"))
    assert "too few repeats" in once
    assert "Trials ran side by side" not in text
    write_json_atomic(folder / "sweep.json", {**info, "executor": "ray"})
    assert "**Trials ran side by side** (`--executor ray`)" in write_report(folder).read_text()


def test_making_a_report_imports_no_torch():
    """A report reads JSON and CSV: on a laptop without the GPU stack, and without torch's seconds of start-up."""
    import subprocess
    import sys

    modules = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "reports").glob("*.py"))
    code = "import sys\n" + "".join(f"import reports.{m}\n" for m in modules) + "print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
