#!/usr/bin/env bash
# Build, on this machine (package registries reachable), the gitignored folders that bench/gpu_session.sh's device
# calls carry: the GPU image has Python 3.12 and no network, and lacks diffusers, torchao, optimum-quanto, PyAV and
# mediapipe. A new checkout starts without them; this rebuilds them in about two minutes.
#   .whl_unet/  the diffusers and torchao wheels (10 MB): all the U-Net benches (levers, roofline, unet) need
#   .whl/       those, protobuf 4.25 and optimum-quanto wheels, PyAV unpacked as av_site.tar.xz and mediapipe 0.10.14
#               unpacked without its unused models as mediapipe_site.zip (48 MB): the sweeps and bench/realtime.py
#   .gpudata/   demo1's video and audio from ../shared
# Carry .whl_unet alone for U-Net calls, or .whl with .gpudata for end-to-end ones (64 MB at most a call).
#   bash bench/prepare_carry.sh [unet|full]      (default: full, which builds all three)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-full}
case "$what" in unet | full) ;; *) echo "usage: $0 [unet|full]" >&2; exit 2 ;; esac
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
download() {  # folder, requirements...: wheels for the GPU image's Python, without their dependencies
  local folder=$1
  shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$folder" "$@"
}
unet=(diffusers==0.42.1 torchao==0.18.0)  # the versions the H200 measurements in README ran with
rm -rf .whl_unet && mkdir .whl_unet
download .whl_unet "${unet[@]}"
if [ "$what" = full ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  rm -rf .whl && mkdir .whl
  cp .whl_unet/*.whl .whl/
  download .whl "protobuf>=4.25,<5" optimum-quanto==0.2.7
  download "$work" mediapipe==0.10.14 av==19.0.2
  mkdir "$work/av" "$work/mediapipe"
  python3 -m zipfile -e "$work"/av-*.whl "$work/av"
  tar cJf .whl/av_site.tar.xz -C "$work/av" .
  python3 -m zipfile -e "$work"/mediapipe-*.whl "$work/mediapipe"
  # face detection and face mesh are what the harness runs; the other solutions' models only take room (every
  # .py stays: mediapipe imports them all)
  find "$work/mediapipe" -name '*.tflite' | grep -E 'pose|hand|iris|holistic|selfie|objectron|palm' | xargs rm -f
  (cd "$work/mediapipe" && python3 -m zipfile -c "$OLDPWD/.whl/mediapipe_site.zip" ./*)
  rm -rf .gpudata && mkdir .gpudata
  cp ../shared/data/latentsync-demo/demo1_video.mp4 ../shared/data/latentsync-demo/demo1_audio.wav .gpudata/
fi
if [ "$what" = full ]; then du -sh .whl_unet .whl .gpudata; else du -sh .whl_unet; fi
