#!/usr/bin/env bash
# One device call (see README "Measured results"): install the wheels carried in .whl/ (and site archives,
# *.zip, unpacked as they are), say which runtime packages import, then run the steps named as arguments:
#   core         bench/core_speed.py at 512, fp16, eager and torch.compile (default mode)
#   speed:PART[@S]  experiments/speed/PART.yaml as shipped (5 timed repeats in rounds beside the baseline; at most
#                S seconds, default 580); its results.csv, speed_ratios.json, rounds.json and report/ land in
#                $OUT/speed-PART
#   realtime:R:CONFIGS[@S]  bench/realtime.py on the whole of demo1 at resolution R (configurations,
#                comma-separated; at most S seconds, default 520)
#   unet:R       bench/unet_options.py at resolution R (one guided U-Net call per kernel/layout/quantization)
#   detect       bench/detect_speed.py on demo1's first 240 frames: in-process and in 1, 2, 4, 8 worker processes
# Everything lands in $OUT; each step has its own time limit so a slow one cannot starve the rest.
# Prepare here (both folders are gitignored and travel as `carry`): .whl/ with the wheels the GPU image lacks
# (diffusers, protobuf 4.25, torchao, optimum-quanto; mediapipe 0.10.14 unpacked, its pose/hand/iris/holistic/
# selfie/objectron *.tflite files deleted (keep every .py: mediapipe imports them all) and zipped as a site .zip;
# PyAV unpacked as a site .tar.xz: under 50 MB together), and .gpudata/ with copies of ../shared's demo1 files.
set -u
OUT=${OUT:-/tmp/gpu_out}
SITE=/tmp/site
mkdir -p "$OUT" "$SITE"
# .whl/, or bench/scaleout.sh's smaller .whl_min/ and .whl_ray/: whichever were carried
for dir in .whl .whl_min .whl_ray; do
  [ -d "$dir" ] || continue
  ls "$dir"/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$dir"/*.whl
  for archive in "$dir"/*.zip; do [ -e "$archive" ] && python3 -m zipfile -e "$archive" "$SITE"; done
  for archive in "$dir"/*.tar.xz; do [ -e "$archive" ] && tar xJf "$archive" -C "$SITE"; done
done
export PYTHONPATH="$PWD:$SITE" PYTHONUNBUFFERED=1
python3 - <<'PY' 2>&1 | tee "$OUT/probe.txt"
import importlib
for name in ("torch", "diffusers", "transformers", "av", "cv2", "mediapipe", "matplotlib", "pandas", "pyarrow",
             "yaml", "tqdm", "psutil", "scipy", "skimage", "mlflow", "onnxruntime", "insightface", "torchao",
             "bitsandbytes", "triton", "ray"):
    try:
        module = importlib.import_module(name)
        print(f"{name:14s} {getattr(module, '__version__', 'ok')}")
    except Exception as exc:
        print(f"{name:14s} MISSING ({type(exc).__name__}: {str(exc)[:80]})")
PY
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$OUT/probe.txt"
for step in "$@"; do
  case "$step" in
    core)
      timeout 220 python3 bench/core_speed.py --resolutions 512 --dtypes fp16 --compile default \
        --out "$OUT" 2>&1 | tee "$OUT/core.log" | grep -v '^{' ;;
    speed:*)
      part=${step#speed:}
      limit=580
      [[ $part == *@* ]] && limit=${part##*@} && part=${part%@*}
      timeout "$limit" python3 -m harness.cli sweep "experiments/speed/$part.yaml" --no-mlflow \
        --out-dir "/tmp/speed-$part" > "$OUT/speed-$part.log" 2>&1
      tail -16 "$OUT/speed-$part.log"
      mkdir -p "$OUT/speed-$part"
      cp -r /tmp/speed-"$part"/{results.csv,speed_ratios.json,rounds.json,sweep.json,report} "$OUT/speed-$part/" ;;
    realtime:*)
      spec=${step#realtime:}
      limit=520
      [[ $spec == *@* ]] && limit=${spec##*@} && spec=${spec%@*}
      timeout "$limit" python3 bench/realtime.py --video .gpudata/demo1_video.mp4 --audio .gpudata/demo1_audio.wav \
        --resolution "${spec%%:*}" --configs "${spec#*:}" --out "$OUT" 2>&1 | tee "$OUT/realtime_${spec%%:*}.log" \
        | grep -E '^(\||\{|[A-Z].*(Error|rror:))' | cut -c1-400 ;;
    unet:*)
      timeout "${UNET_TIMEOUT:-300}" python3 bench/unet_options.py --resolution "${step#unet:}" ${UNET_OPTIONS:+--options "$UNET_OPTIONS"} --out "$OUT" 2>&1 \
        | tee "$OUT/unet_${step#unet:}.log" | grep -E '^(\||\{|[A-Z].*(Error|rror:))' | cut -c1-300 ;;
    detect)
      timeout 200 python3 bench/detect_speed.py --video .gpudata/demo1_video.mp4 --frames 240 --processes 0,1,2,4,8 \
        --out "$OUT" 2>&1 | tee "$OUT/detect.log" | grep -E '^(\||\{|[A-Z].*(Error|rror:))' ;;
    *) echo "unknown step $step" ;;
  esac
done
