"""Face detection throughput on a clip's frames: in the run's process, and in N worker processes
(`detect_processes`), with the faces checked equal. Prints a table and writes $OUT/detect_speed.json.

    python bench/detect_speed.py --video demo1_video.mp4 --frames 120 --processes 0,1,2,4,8
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from harness.pipeline.detect_processes import DetectorProcesses
from harness.pipeline.faces import load_detector
from harness.pipeline.media import iter_frames


def points(faces: list[Any]) -> np.ndarray:
    return np.stack([f.points3 if f is not None else np.full((3, 2), np.nan) for f in faces])


def detect_here(detector: Any, batch: list[np.ndarray]) -> list[Any]:
    return [detector.detect(frame) for frame in batch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--processes", default="0,1,2,4")
    parser.add_argument("--detector", default="mediapipe")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = parser.parse_args()
    frames = list(islice(iter_frames(args.video), args.frames))
    make = functools.partial(load_detector, args.detector)
    rows: list[dict[str, Any]] = []
    reference = None
    for processes in (int(n) for n in args.processes.split(",")):
        if processes == 0:
            detect = functools.partial(detect_here, make())
            workers = None
        else:
            workers = DetectorProcesses(make, processes)
            detect = workers.detect
        detect(frames[: max(processes, 1)])  # start-up: load the detector(s)
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            faces = detect(frames)
            times.append(time.perf_counter() - began)
        if workers is not None:
            workers.close()
        found = points(faces)
        reference = found if reference is None else reference
        row = {
            "processes": processes,
            "fps": len(frames) / statistics.median(times),
            "fps_runs": [len(frames) / t for t in times],
            "same_points": bool(np.array_equal(found, reference, equal_nan=True)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"video": args.video, "frames": len(frames), "shape": list(frames[0].shape), "cpus": os.cpu_count()}
    (out / "detect_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{args.detector}, {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]}, {os.cpu_count()} CPUs")
    print("| processes | frames/s (runs) | x in-process | same points |\n| ---: | ---: | ---: | --- |")
    for r in rows:
        spread = ", ".join(f"{v:.1f}" for v in r["fps_runs"])
        print(f"| {r['processes']} | {r['fps']:.1f} ({spread}) | {r['fps'] / rows[0]['fps']:.2f} | {r['same_points']} |")


if __name__ == "__main__":
    main()
