#!/usr/bin/env bash
# Issue 13's measurement on 2 GPUs of one host (nvidia-h200-x2), one device call of about 8 minutes:
#   1. experiments/speed/eager.yaml, 4 fast trials on a 1.28 s clip, through Ray (harness sweep --executor ray) on
#      2 GPUs and on 1: trials per hour, from the sweep's wall time and from its trials' own span;
#   2. one video (the whole of demo1, 240 frames, 1080x1920) at 512 with synthetic weights and pipelined stages, torchrun on 2 GPUs
#      and one process on 1: frames/s of the run and whether the two outputs are identical, frame for frame.
# Everything lands in $OUT (logs, scaleout.md). NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
#
# Carry (gitignored, 64 MiB at most together), prepared here:
#   .whl_min/  diffusers and protobuf wheels, av_site.tar.xz and mediapipe_site.tar.xz from .whl/ (see
#              bench/gpu_session.sh; mediapipe repacked as .tar.xz, which is 11 MB against the .zip's 15)
#   .whl_ray/  ray_site.tar.xz: ray 2.60 for cp312 manylinux x86_64 with the packages the GPU image lacks (msgpack,
#              jsonschema, jsonschema-specifications, referencing, rpds-py, attrs, click), unpacked from their
#              wheels (pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
#              --platform manylinux2014_x86_64 ...), the executable bits of ray's wheel restored, without ray's
#              jars/, dashboard/client/, rllib/, serve/, llm/, tune/, train/, data/ and tests/, .so files stripped
#              (strip --strip-unneeded), packed with XZ_OPT=-9e tar cJf. A plain task cluster needs none of those:
#              checked with ray.init(num_cpus=2) and ray.remote tasks under Python 3.12 with only this on the path
#              besides yaml, requests, packaging, filelock, protobuf and typing_extensions (the image has them).
#   .gpudata/  demo1_video.mp4 and demo1_audio.wav from ../shared (as bench/gpu_session.sh)
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
bash bench/gpu_session.sh  # installs the carried wheels into /tmp/site and says what imports
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
TRIALS=baseline,no-guidance,deepcache,bf16

# PARTS=video (or sweep) runs one part only; the table then reports the other as failed.
PARTS=${PARTS:-sweep,video}
for gpus in 2 1; do
  [[ $PARTS == *sweep* ]] || break
  started=$(date +%s.%N)
  CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1))) timeout $((gpus == 2 ? 150 : 240)) \
    python3 -m harness.cli sweep experiments/speed/eager.yaml --executor ray --no-mlflow --out-dir "/tmp/ray$gpus" \
    --only "$TRIALS" --set repeats=1 --set warmup=0 --set profile=false --set base.max_seconds=1.28 \
    > "$OUT/ray_sweep_${gpus}gpu.log" 2>&1
  echo "$started $(date +%s.%N)" > "/tmp/ray$gpus.wall"
  tail -8 "$OUT/ray_sweep_${gpus}gpu.log"
done

# Pipelined stages on both sides: each rank reads, detects and aligns every frame, which then overlaps its GPU work.
COMMON=(--weights synthetic --resolution 512 --dtype fp16 --device cuda --video .gpudata/demo1_video.mp4
  --audio .gpudata/demo1_audio.wav --execution pipelined)
[[ $PARTS == *video* ]] && timeout 150 torchrun --standalone --nproc-per-node 2 -m harness.cli run "${COMMON[@]}" --run-dir /tmp/video2 \
  > "$OUT/video_2gpu.log" 2>&1
[[ $PARTS == *video* ]] && CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m harness.cli run "${COMMON[@]}" --run-dir /tmp/video1 \
  > "$OUT/video_1gpu.log" 2>&1
grep -E "frames/s|error" "$OUT/video_2gpu.log" "$OUT/video_1gpu.log"
for run in video2 video2/rank1 video1; do  # stage times per rank, for where the time went
  [ -f "/tmp/$run/result.json" ] && cp "/tmp/$run/result.json" "$OUT/result_${run//\//_}.json"
done

python3 - <<'PY' 2>&1 | tee "$OUT/scaleout.md"
import json
from pathlib import Path

import numpy as np

from harness.pipeline.media import iter_frames


def sweep(gpus):
    start, end = map(float, Path(f"/tmp/ray{gpus}.wall").read_text().split())
    results = [json.loads(p.read_text()) for p in Path(f"/tmp/ray{gpus}/trials").glob("*/result.json")]
    ok = [r for r in results if r["status"] == "ok"]
    ends = [p.stat().st_mtime for p in Path(f"/tmp/ray{gpus}/trials").glob("*/result.json")]
    span = max(ends) - min(e - r["wall_s"] for e, r in zip(ends, results)) if results else float("nan")
    return len(ok), len(results), 3600 * len(ok) / (end - start), 3600 * len(ok) / span


def video(gpus):
    result = json.loads(Path(f"/tmp/video{gpus}/result.json").read_text())
    return result["metrics"]["fps"], result["metrics"]["frames"]


print("| measurement | 2 GPUs | 1 GPU | ratio |\n| --- | ---: | ---: | ---: |")
try:
    two, one = sweep(2), sweep(1)
    print(f"| speed sweep, trials ok / run | {two[0]} / {two[1]} | {one[0]} / {one[1]} | |")
    print(f"| trials/hour, sweep wall time (Ray start to report) | {two[2]:.0f} | {one[2]:.0f} | {two[2] / one[2]:.2f} |")
    print(f"| trials/hour, first trial start to last trial end | {two[3]:.0f} | {one[3]:.0f} | {two[3] / one[3]:.2f} |")
except Exception as exc:
    print(f"| speed sweep | failed: {exc} | | |")
try:
    (fps2, frames2), (fps1, frames1) = video(2), video(1)
    a = np.stack(list(iter_frames("/tmp/video2/output.mp4")))
    b = np.stack(list(iter_frames("/tmp/video1/output.mp4")))
    same = a.shape == b.shape and np.array_equal(a, b)
    diff = int(np.abs(a.astype(int) - b).max()) if a.shape == b.shape else "shapes differ"
    print(f"| one video at 512, pipelined, frames/s ({frames2:.0f} frames) | {fps2:.2f} | {fps1:.2f} | {fps2 / fps1:.2f} |")
    print(f"| outputs identical, frame for frame | {same} (max difference {diff}) | | |")
except Exception as exc:
    print(f"| one video | failed: {exc} | | |")
PY
