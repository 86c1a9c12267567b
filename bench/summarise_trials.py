"""Print a Markdown table of a sweep folder's trials from their result.json files alone (no pandas, so it
runs on a bare GPU machine): stage medians, fps, cold total, peak device memory.

    python bench/summarise_trials.py outputs/speed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (
    "fps",
    "total_s",
    "total_s_iqr",
    "cold_total_s",
    "load_s",
    "detect_s",
    "encode_s",
    "denoise_s",
    "decode_s",
    "restore_s",
    "write_s",
    "peak_vram_mb",
)


def main(sweep_dir: str) -> None:
    print("| trial | status | " + " | ".join(COLUMNS) + " |")
    print("| --- | --- |" + " ---: |" * len(COLUMNS))
    for path in sorted(Path(sweep_dir).glob("trials/*/result.json")):
        result = json.loads(path.read_text())
        metrics = result.get("metrics", {})
        cells = [f"{metrics[c]:.2f}" if isinstance(metrics.get(c), (int, float)) else "" for c in COLUMNS]
        status = result.get("status", "?")
        if status != "ok":
            status += ": " + str(result.get("error") or result.get("reason") or "")[:120].replace("\n", " ")
        print(f"| {result.get('trial', path.parent.name)} | {status} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/speed")
