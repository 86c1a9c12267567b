#!/usr/bin/env bash
# One device call (see README "Measured results"): install the wheels carried in .whl/ (and site archives,
# *.zip, unpacked as they are), say which runtime packages import, then run the steps named as arguments:
#   core         bench/core_speed.py at 512, fp16, eager and torch.compile (default mode)
#   speed:PART[@S]  experiments/speed/PART.yaml as shipped (5 timed repeats in rounds beside the baseline; at most
#                S seconds, default 580); the sweep folder (results.csv, speed_ratios.json, rounds.json,
#                report/, the trials' JSON; no videos) lands in $OUT/speed-PART_sweep.tgz, its fidelity table
#                in $OUT/speed-PART.md
#   speed-demo1[@S]  compile.yaml's baseline and lossless stack on the whole of demo1, 5 interleaved repeats; longer
#                than one call: run the step again on the same warm machine and the sweep resumes (default S 530)
#   realtime:R:CONFIGS[@S]  bench/realtime.py on the whole of demo1 at resolution R (configurations,
#                comma-separated; at most S seconds, default 520)
#   unet:R       bench/unet_options.py at resolution R (one guided U-Net call per kernel/layout/quantization)
#   roofline[:R] bench/unet_roofline.py at R (default 512): one guided call eager and compiled (ROOFLINE_CONFIGS,
#                default eager,compile), time by op class against the H200's peaks (about 3.5 min on a cold machine)
#   levers:R:NAMES[@S]  bench/unet_levers.py at R: the levers NAMES (comma-separated; eager and compile, when named, first)
#                each in its own process against compile:default, S seconds in all (default 480); LEVERS_ROOFLINE
#                (e.g. eager,compile) also profiles those by op class; LEVERS_EXTRA='name=key:value,...' adds a
#                lever; LEVERS_ARGS passes more options (--save-cache $OUT/cache, --load-cache DIR, --compile-only)
#   ahead:R:NAMES[@S]  the levers NAMES' first calls only (--compile-only --save-cache), side by side, each in a
#                process of its own with its own work, cache and output folders, all stopped at S seconds (default
#                530): compiles are mostly one CPU core's tracing and lowering, so several share a call's 16 cores.
#                Each lever's folder (row, log, <lever>.megacache.xz if its first call ended, autotune timings) lands
#                in $OUT/ahead-NAME.tar; AHEAD_THREADS (default 4) caps each one's kernel-compile workers.
#                Autotuning timed beside other processes may choose worse: a lever measured later, alone, pays it.
#   detect       bench/detect_speed.py on demo1's first 240 frames: in-process and in 1, 2, 4, 8 worker processes
#   fidelity[:NAMES][@S]  experiments/fidelity.yaml inline: every family value's tier, gate and depths (README
#                "Fidelity tiers"), or the trials NAMES; at most S seconds, default 540
#   exact-demo1  the same file's baseline and pipelined trials on the whole of demo1 (serial vs pipelined, exact)
# Everything lands in $OUT; each step has its own time limit so a slow one cannot starve the rest.
# Prepare here with `bash bench/prepare_carry.sh` (the folders are gitignored and travel as `carry`; a new checkout
# has none): .whl/ with the wheels the GPU image lacks (diffusers, protobuf 4.25, torchao, optimum-quanto; mediapipe
# 0.10.14 and PyAV unpacked as site archives: under 50 MB together) and .gpudata/ with copies of ../shared's demo1
# files. The U-Net benches need only diffusers and torchao: .whl_unet/ with those two wheels (10 MB) leaves room in a
# call's 64 MB for carried compile caches.
set -u
OUT=${OUT:-/tmp/gpu_out}
# demo1, carried in .gpudata/: the clip of the whole-video steps, and the same as a sweep's only input
VIDEO=.gpudata/demo1_video.mp4 AUDIO=.gpudata/demo1_audio.wav
DEMO1_INPUT="inputs=[{name: demo1, video: $VIDEO, audio: $AUDIO}]"
SITE=/tmp/site
mkdir -p "$OUT" "$SITE"
# .whl/, or bench/scaleout.sh's smaller .whl_min/ and .whl_ray/, or .whl_unet/: whichever were carried
for dir in .whl .whl_min .whl_ray .whl_unet; do
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
# A sweep's table and files back to $OUT: its fidelity summary, and its JSON, CSV and report, without videos
# and recordings (fetch them with the call; $OUT is emptied by the next).
bundle_sweep() {
  python3 bench/summarise_trials.py "$1" --fidelity | tee "$OUT/$2.md"
  tar czf "$OUT/$2_sweep.tgz" -C "$1" --exclude='*.mp4' --exclude='*.generated' --exclude='*.prof' .
}
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
      tail -3 "$OUT/speed-$part.log"
      bundle_sweep "/tmp/speed-$part" "speed-$part" ;;
    speed-demo1*)
      # compile.yaml's baseline and lossless stack on the whole of demo1 (250 frames), 5 interleaved repeats,
      # warm-up 0 (the cold run serves): about 15 minutes, longer than a call. The call stops it at its limit;
      # the same step again on the same warm machine resumes it (harness/partial_repeats.py), so two calls.
      limit=530  # + its 30 s grace to end, install and bundle: within a call's 600 s
      [[ $step == *@* ]] && limit=${step##*@}
      timeout -k 30 "$limit" python3 -m harness.cli sweep experiments/speed/compile.yaml --no-mlflow \
        --only baseline,lossless-stack --set warmup=0 --set base.max_seconds=0 \
        --set "$DEMO1_INPUT" \
        --out-dir /tmp/speed-demo1 >> "$OUT/speed-demo1.log" 2>&1
      tail -3 "$OUT/speed-demo1.log"
      bundle_sweep /tmp/speed-demo1 speed-demo1 ;;
    realtime:*)
      spec=${step#realtime:}
      limit=520
      [[ $spec == *@* ]] && limit=${spec##*@} && spec=${spec%@*}
      timeout "$limit" python3 bench/realtime.py --video "$VIDEO" --audio "$AUDIO" \
        --resolution "${spec%%:*}" --configs "${spec#*:}" --out "$OUT" 2>&1 | tee "$OUT/realtime_${spec%%:*}.log" \
        | grep -E '^(\||\{|[A-Z].*(Error|rror:))' | cut -c1-400 ;;
    unet:*)
      timeout "${UNET_TIMEOUT:-300}" python3 bench/unet_options.py --resolution "${step#unet:}" ${UNET_OPTIONS:+--options "$UNET_OPTIONS"} --out "$OUT" 2>&1 \
        | tee "$OUT/unet_${step#unet:}.log" | grep -E '^(\||\{|[A-Z].*(Error|rror:))' | cut -c1-300 ;;
    roofline*)
      res=${step#roofline}
      res=${res#:}
      timeout 330 python3 bench/unet_roofline.py --resolution "${res:-512}" --configs "${ROOFLINE_CONFIGS:-eager,compile}" \
        --out "$OUT" 2>&1 | tee "$OUT/roofline.log" | grep -E '^(\||\{|[A-Z].*(Error|rror:))' | cut -c1-300 ;;
    levers:*)
      spec=${step#levers:}
      budget=480  # with the install, the probe and the table, the command stays inside a run's 600 s
      [[ $spec == *@* ]] && budget=${spec##*@} && spec=${spec%@*}
      # shellcheck disable=SC2086  # LEVERS_ARGS is a list of options
      timeout $((budget + 45)) python3 bench/unet_levers.py --resolution "${spec%%:*}" --levers "${spec#*:}" \
        --budget "$budget" --roofline "${LEVERS_ROOFLINE:-}" ${LEVERS_EXTRA:+--lever "$LEVERS_EXTRA"} ${LEVERS_ARGS:-} \
        --out "$OUT" 2>&1 | tee "$OUT/levers.log" | grep -E '^(\||\{|note:|[A-Z].*(Error|rror:))' | cut -c1-400 ;;
    ahead:*)
      spec=${step#ahead:}
      limit=530
      [[ $spec == *@* ]] && limit=${spec##*@} && spec=${spec%@*}
      res=${spec%%:*}
      IFS=, read -ra names <<< "${spec#*:}"
      for lever in "${names[@]}"; do
        dir=/tmp/ahead/$lever
        mkdir -p "$dir/out"
        # shellcheck disable=SC2086  # LEVERS_ARGS is a list of options
        TORCHINDUCTOR_COMPILE_THREADS=${AHEAD_THREADS:-4} timeout $((limit + 40)) python3 bench/unet_levers.py \
          --resolution "$res" --levers "$lever" --compile-only --save-cache "$lever" --timeout "$limit" \
          --budget $((limit + 30)) --work "$dir/work" --cache-dir "$dir/inductor" ${LEVERS_ARGS:-} \
          --out "$dir/out" > "$dir/out/levers.log" 2>&1 &
      done
      wait
      for lever in "${names[@]}"; do
        grep "^| $lever " "/tmp/ahead/$lever/out/levers.log" | cut -c1-400
        tar cf "$OUT/ahead-$lever.tar" -C "/tmp/ahead/$lever/out" .
      done ;;
    detect)
      timeout 200 python3 bench/detect_speed.py --video "$VIDEO" --frames 240 --processes 0,1,2,4,8 \
        --out "$OUT" 2>&1 | tee "$OUT/detect.log" | grep -E '^(\||\{|[A-Z].*(Error|rror:))' ;;
    fidelity*)
      spec=${step#fidelity}
      limit=540
      [[ $spec == *@* ]] && limit=${spec##*@} && spec=${spec%@*}
      only=${spec#:}
      timeout "$limit" python3 -m harness.cli sweep experiments/fidelity.yaml --inline --no-mlflow \
        ${only:+--only "$only"} --out-dir /tmp/fidelity > "$OUT/fidelity.log" 2>&1
      tail -3 "$OUT/fidelity.log"
      bundle_sweep /tmp/fidelity fidelity ;;
    exact-demo1)
      timeout 400 python3 -m harness.cli sweep experiments/fidelity.yaml --inline --no-mlflow --only baseline,pipelined \
        --out-dir /tmp/exact_demo1 --set score=false --set base.max_seconds=0 \
        --set "$DEMO1_INPUT" \
        > "$OUT/exact_demo1.log" 2>&1
      tail -3 "$OUT/exact_demo1.log"
      bundle_sweep /tmp/exact_demo1 exact_demo1 ;;
    *) echo "unknown step $step" ;;
  esac
done
