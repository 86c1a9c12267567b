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


def _random_fid_inception() -> torch.nn.Module:
    """torchvision's Inception3 with the FID file's 1008 classes and no aux head: the keys and shapes of
    pytorch-fid's weights (its FID blocks subclass torchvision's, with the same layers). PyTorch's default
    random layers, BatchNorm statistics taken from one pass over noise so that activations neither vanish nor
    explode, then random BatchNorm scales and shifts, so that every stored tensor shapes the features."""
    import torchvision

    torch.manual_seed(0)
    # init_weights=False: torchvision's truncated-normal init takes seconds and is no more random
    net = torchvision.models.inception_v3(
        weights=None, num_classes=1008, aux_logits=False, init_weights=False
    )
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # running statistics = this pass's
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, 128, 128) * 2 - 1)
        for norm in norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
    return net.eval()


def fid(args: dict) -> dict:
    """pytorch-fid's InceptionV3 (2048-d pool features) loading random weights from the file it looks for in
    TORCH_HOME (written here first), its get_activations over each folder's PNGs, and its
    calculate_frechet_distance of the statistics calculate_activation_statistics takes (np.mean, np.cov) of
    the leading `dims` features: with fewer images than features the full covariances are singular and the
    distance ill-posed (pytorch-fid stops at sqrtm's imaginary part)."""
    from pytorch_fid import fid_score, inception

    weights = Path(args["weights"])
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_random_fid_inception().state_dict(), weights)
    model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    features = [
        fid_score.get_activations(
            sorted(Path(f).glob("*.png")), model, args["batch"], 2048, "cpu", num_workers=0
        )
        for f in args["folders"]
    ]
    stats = [
        (np.mean(f[:, : args["dims"]], axis=0), np.cov(f[:, : args["dims"]], rowvar=False)) for f in features
    ]
    distance = fid_score.calculate_frechet_distance(*stats[0], *stats[1])
    return {"fid": float(distance), "features": [f.tolist() for f in features]}


class _RecordingCv2:
    """cv2 as syncnet_python's crop step sees it, but its video writer keeps the frames written (the crops) and
    leaves an empty file where the video would be."""

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        self.written: list[np.ndarray] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.cv2, name)

    def VideoWriter(self, path: str, *_args: object) -> SimpleNamespace:  # noqa: N802 (cv2's name)
        return SimpleNamespace(write=self.written.append, release=lambda: Path(path).touch())


def s3fd_crops(args: dict) -> dict:
    """syncnet_python's face path before SyncNet (syncnet_pipeline.SyncNetPipeline.inference, steps 4, 6 and 7):
    its S3FD from the weights file by its own loader, its detect_faces on every frame as inference calls it (the
    RGB frame, confidence 0.9, scale 0.25), its tracker (`_track`) and its cropping (`_crop`), whose video writer
    records the crops and whose ffmpeg calls (the audio slice and the muxing) do nothing. Frames are PNG files
    (inference decodes JPEGs of an AVI it made); scene detection is left out (one clip without cuts); the
    detections of the frames in `drop` are dropped before tracking, as if none was found there."""
    from syncnet_python import syncnet_pipeline as reference

    recorder = _RecordingCv2()
    reference.cv2 = recorder
    reference.subprocess = SimpleNamespace(run=lambda *a, **k: None, CalledProcessError=RuntimeError)
    runner = reference.SyncNetPipeline.__new__(reference.SyncNetPipeline)
    runner.cfg = reference.PipelineConfig(min_track=args["min_track"])
    runner.device = "cpu"
    s3fd = runner._load_s3fd(args["weights"])
    frames = sorted(str(p) for p in Path(args["frames"]).glob("*.png"))
    detections = []
    for i, path in enumerate(frames):
        rgb = recorder.cvtColor(recorder.imread(path), recorder.COLOR_BGR2RGB)
        boxes = s3fd.detect_faces(rgb, conf_th=0.9, scales=[runner.cfg.facedet_scale])
        detections.append([{"frame": i, "bbox": b[:-1].tolist(), "conf": float(b[-1])} for b in boxes])
    kept = [faces if i not in args["drop"] else [] for i, faces in enumerate(detections)]
    tracks = runner._track([list(faces) for faces in kept])
    crops = []
    for k, track in enumerate(tracks):
        recorder.written = []
        runner._crop(track, frames, "speech.wav", Path(args["out"]) / f"{k:05d}")
        crops.append(np.stack(recorder.written))
    np.savez(Path(args["out"]) / "crops.npz", *crops)
    return {
        "detections": [[[*face["bbox"], face["conf"]] for face in faces] for faces in detections],
        "tracks": [{"frames": t["frame"].tolist(), "boxes": t["bbox"].tolist()} for t in tracks],
    }


TASKS = {"syncnet": syncnet, "lpips": lpips, "fid": fid, "s3fd_crops": s3fd_crops}

if __name__ == "__main__":
    task, spec, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
    out.write_text(json.dumps(TASKS[task](spec)))
