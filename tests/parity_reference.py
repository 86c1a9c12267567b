"""Runs a reference package's own scoring code, in a child process: `python parity_reference.py TASK IN.json OUT.json`.

The reference packages (tests/parity-requirements.txt) live in a folder of their own, put on this process's
path by `tests/parity.py`, never in the project's environment: they import torchvision, whose PyPI build
cannot load its compiled ops beside the CPU torch, and diffusers imports torchvision whenever it finds it.
Nothing here calls those ops (non-maximum suppression), so their schemas are declared before the import,
which is all torchvision's import needs. Writes the reference's results to OUT.json (the packages print
progress on stdout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
for _name in ("nms", "qnms"):
    TORCHVISION_OPS.define(f"{_name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def syncnet(args: dict) -> dict:
    """joonson/syncnet_python's SyncNetInstance.evaluate on each folder of jpg frames and audio.wav."""
    from syncnet_python.SyncNetInstance import SyncNetInstance
    from syncnet_python.SyncNetModel import S

    instance = SyncNetInstance(S(), device="cpu")
    instance.loadParameters(args["weights"])
    results = []
    for folder in args["folders"]:
        opt = SimpleNamespace(tmp_dir=folder, batch_size=20, vshift=15)
        offset, conf, dist = instance.evaluate(opt)
        results.append({"offset": offset, "conf": conf, "dist": dist})
    return {"tracks": results}


def lpips(args: dict) -> dict:
    """The lpips package's LPIPS-alex: AlexNet from torchvision's cache (TORCH_HOME), heads from a file."""
    import lpips as reference

    net = reference.LPIPS(net="alex", model_path=args["heads"], verbose=False)
    x, y = (torch.from_numpy(np.load(args[k])) for k in ("x", "y"))
    with torch.no_grad():
        return {"distances": net(x, y).flatten().tolist()}


TASKS = {"syncnet": syncnet, "lpips": lpips}

if __name__ == "__main__":
    task, spec, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
    out.write_text(json.dumps(TASKS[task](spec)))
