"""Print a Markdown table of a sweep folder's trials from their result.json files alone (no pandas, so it
runs on a bare GPU machine): stage medians, fps, cold total, peak device memory; with --fidelity, each trial's
tier, gate and depths against the baseline instead.

    python bench/summarise_trials.py outputs/speed
    python bench/summarise_trials.py outputs/fidelity --fidelity
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


FIDELITY = (
    "latent_snr_db",
    "latent_floor_db",
    "face_psnr_db",
    "face_floor_db",
    "face_ssim",
    "psnr_db",
    "float_noise_latent_snr_db",
    "float_noise_face_psnr_db",
    "cold_total_s",
)
TAGS = ("tier", "fidelity_gate")


def main(sweep_dir: str, columns: tuple[str, ...] = COLUMNS, tags: tuple[str, ...] = ()) -> None:
    print("| trial | status | " + " | ".join((*tags, *columns)) + " |")
    print("| --- | --- |" + " --- |" * len(tags) + " ---: |" * len(columns))
    for path in sorted(Path(sweep_dir).glob("trials/*/result.json")):
        result = json.loads(path.read_text())
        metrics = result.get("metrics", {})
        cells = [str(result.get("tags", {}).get(t, "")) for t in tags]
        cells += [f"{metrics[c]:.2f}" if isinstance(metrics.get(c), (int, float)) else "" for c in columns]
        status = result.get("status", "?")
        if status != "ok":
            status += ": " + str(result.get("error") or result.get("reason") or "")[:120].replace("\n", " ")
        print(f"| {result.get('trial', path.parent.name)} | {status} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    fidelity = "--fidelity" in sys.argv
    folders = [a for a in sys.argv[1:] if a != "--fidelity"]
    main(folders[0] if folders else "outputs/speed", *((FIDELITY, TAGS) if fidelity else ()))
