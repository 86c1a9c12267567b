#!/usr/bin/env bash
# A screenshot of a sweep in the MLflow UI, for README: a local `mlflow server` on the sweep's store, headless
# Chromium (Debian's `chromium` package: apt-get install -y chromium) on the experiment's runs table.
#
#   bash reports/mlflow_screenshot.sh STORE_URI EXPERIMENT_ID OUT.png [WIDTHxHEIGHT]
#   bash reports/mlflow_screenshot.sh sqlite:////tmp/qs/mlflow.db 1 docs/mlflow_sweep.png
#
# Chromium runs without network access beyond the local server, in a fresh profile removed afterwards.
set -euo pipefail
store=$1 experiment=$2 out=$3 size=${4:-1600x900}
port=${MLFLOW_SCREENSHOT_PORT:-5077}
profile=$(mktemp -d)
mlflow server --backend-store-uri "$store" --host 127.0.0.1 --port "$port" >"$profile/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$profile"' EXIT
for _ in $(seq 60); do  # the server takes a few seconds to start
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 1
done
# The runs table of the experiment, parent and child runs expanded; the UI is a single-page app, so give its
# scripts time to fetch and draw before the capture.
url="http://127.0.0.1:$port/#/experiments/$experiment?viewStateShareKey=&compareRunsMode=TABLE"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile/chrome" --hide-scrollbars \
  --virtual-time-budget=15000 --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" "$url"
echo "screenshot: $out"
