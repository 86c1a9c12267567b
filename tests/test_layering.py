"""The import layering of harness/, variants/, metrics/ and reports/ (tools/import_graph.py, read from the source):
no circle between files, no import of a higher layer, no report or plot module in a process that runs a trial."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import import_graph  # noqa: E402  (tools/ is a folder of scripts, not a package)


def test_the_tree_keeps_its_layers():
    assert import_graph.problems() == []


def test_circles_upward_imports_and_reports_in_trials_are_found(tmp_path):
    tree = {
        "harness/__init__.py": "",
        "harness/config.py": "def load():\n    from variants import VARIANTS\n",  # upward, inside a function
        "harness/pipeline/__init__.py": "",
        "harness/pipeline/lipsync.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from harness.runner import run\n",  # upward, for a type only
        "harness/runner.py": "from harness.config import load\nfrom reports import plots\n",
        "harness/launcher.py": "import harness.runner\n",
        "variants/__init__.py": 'VARIANTS = {"steps": "variants.steps:Steps"}\n',  # imported by name
        "variants/steps.py": "from harness.config import load\n",
        "reports/__init__.py": "",
        "reports/plots.py": "def draw():\n    import matplotlib\n",
    }
    for name, text in tree.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    assert import_graph.problems(tmp_path) == [
        "import cycle: harness.config <-> variants <-> variants.steps",
        "upward import: harness.config (layer 1) imports variants (layer 5)",
        "upward import: harness.pipeline.lipsync (layer 3) imports harness.runner (layer 9)",
        "trial processes import matplotlib: reports.plots (through harness.launcher or harness.ray_executor)",
        "trial processes import reports.plots: reports.plots (through harness.launcher or harness.ray_executor)",
    ]
