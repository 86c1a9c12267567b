#!/usr/bin/env bash
# A screenshot of a sweep in the MLflow UI, for README: a local `mlflow server` on the sweep's store, headless
# Chromium (Debian's `chromium` package: apt-get install -y chromium) on MLflow's run comparison of the sweep's
# trials (their params and metrics side by side; the trial runs come from the sweep's mlflow_runs.json).
#
#   bash reports/mlflow_screenshot.sh SWEEP_DIR OUT.png [WIDTHxHEIGHT]
#   bash reports/mlflow_screenshot.sh outputs/quickstart docs/mlflow_sweep.png
#
# Chromium runs without network access beyond the local server, in a fresh profile removed afterwards.
set -euo pipefail
sweep=$1 out=$2 size=${3:-1600x1000}
read -r store compare < <(python - "$sweep/mlflow_runs.json" <<'PY'
import json, sys, urllib.parse
runs = json.load(open(sys.argv[1]))
query = urllib.parse.urlencode({"runs": json.dumps(list(runs["runs"].values())),
                                "experiments": json.dumps([runs["experiment_id"]])})
print(runs["tracking_uri"], f"compare-runs?{query}")
PY
)
port=${MLFLOW_SCREENSHOT_PORT:-5077}
profile=$(mktemp -d)
mlflow server --backend-store-uri "$store" --host 127.0.0.1 --port "$port" >"$profile/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$profile"' EXIT
for attempt in $(seq 90); do  # the server takes a few seconds to start
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  if [ "$attempt" = 90 ] || ! kill -0 "$server" 2>/dev/null; then
    echo "mlflow server did not start:" >&2; cat "$profile/server.log" >&2; exit 1
  fi
  sleep 1
done
# The UI is a single-page app: give its scripts time to fetch and draw before the capture.
url="http://127.0.0.1:$port/#/$compare"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile/chrome" --hide-scrollbars \
  --virtual-time-budget=15000 --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" "$url"
echo "screenshot: $out"
