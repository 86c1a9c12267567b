"""Which kernel won each matmul problem in an autotuning call, from the timings inductor wrote (no GPU needed).

max-autotune (or `max_autotune_gemm`) times every choice of every matmul problem, cuBLAS (`mm`, `addmm`,
`bias_addmm`: extern kernels) and Triton's templates (`triton_mm`, one per config), and keeps the times in one JSON
file per device and torch (`cache/<hash>` in its cache folder). bench/unet_levers.py returns that folder's files
as autotune_timings.tar.xz after every lever; this reads such an archive (or a cache folder, or the JSON file) and
prints, per timing key (a problem by shape, bias and layout), the fastest Triton config against the fastest
cuBLAS kernel, timed alone, and the sum of one launch of each key with cuBLAS only and with the winners: the most
that Triton's matmul templates can buy over cuBLAS, before the whole call measures it.

    python bench/autotune_choices.py bench/results/h200_unet_autotune_timings_512_call21.tar.xz
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMINGS_FOLDER = "cache"  # inductor's timing files, one per device and torch, inside its cache folder
TRITON_PREFIX = "triton_"  # inductor's template choices; the rest are extern kernels (cuBLAS here)
# The 2-D matmuls whose keys this reads; the file also holds pad_mm's padding checks (floats and booleans, under
# keys of their own), which are not choices.
MATMUL_OPS = ("mm", "addmm")


@dataclass(frozen=True)
class Problem:
    op: str  # mm or addmm
    m: int
    k: int
    n: int
    choices: int
    best: str  # the fastest choice's name
    best_ms: float
    extern: str  # the fastest extern (cuBLAS) choice
    extern_ms: float

    @property
    def triton_wins(self) -> bool:
        return self.best.startswith(TRITON_PREFIX)


def timing_paths(cache_dir: Path) -> list[Path]:
    """The timing files in an inductor cache folder."""
    return sorted(f for f in cache_dir.glob(f"{TIMINGS_FOLDER}/*") if f.is_file())


def config_paths(cache_dir: Path) -> list[Path]:
    """The Triton configs inductor chose, one `*.best_config` per tuned kernel, in a cache folder."""
    return sorted(f for f in cache_dir.rglob("*.best_config") if f.is_file())


def found_by_coordinate_descent(configs: list[Path]) -> int:
    """How many of these configs coordinate descent found (marked found_by_coordesc): how far a
    coordinate-descent first call stopped at a call's limit has got."""
    found = 0
    for path in configs:
        try:
            found += bool(json.loads(path.read_text()).get("found_by_coordesc"))
        except (OSError, ValueError):  # one being written as the folder is read
            continue
    return found


def is_timing_member(name: str) -> bool:
    """Whether a member of an archive of a cache folder (autotune_timings.tar.xz) is a timing file."""
    return name.startswith(f"{TIMINGS_FOLDER}/")


def read_timing_files(path: Path) -> list[dict[str, Any]]:
    """The timing files (JSON) in an autotune_timings.tar.xz, a cache folder or one file."""
    if path.is_dir():
        return [json.loads(f.read_text()) for f in timing_paths(path)]
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            return [json.load(tar.extractfile(member)) for member in tar
                    if member.isfile() and is_timing_member(member.name)]
    return [json.loads(path.read_text())]


def problem_shape(op: str, key: str) -> tuple[int, int, int] | None:
    """M, K, N of a timing key: a list of (device, dtype, size0, size1, stride0, stride1, offset) per input,
    the bias first for addmm, then the (M, K) input and the (K, N) weight; None for a key of another form (another
    torch's), which is left out rather than stopping a bench whose table matters more than this summary."""
    try:
        inputs = ast.literal_eval(key)
        a, b = inputs[-2:]
        if len(inputs) == (3 if op == "addmm" else 2) and a[3] == b[2]:
            return a[2], a[3], b[3]
    except (ValueError, SyntaxError, TypeError, IndexError):
        pass
    return None


def problems(timing_file: dict[str, Any]) -> list[Problem]:
    """The matmul problems of one timing file, in its order, each with its fastest choice and fastest extern."""
    found = []
    for op, keys in timing_file.get("cache", {}).items():
        if op not in MATMUL_OPS:
            continue
        for key, by_precision in keys.items():
            for times in by_precision.values():
                best = min(times, key=times.get)
                externs = [name for name in times if not name.startswith(TRITON_PREFIX)]
                if not externs:
                    continue  # nothing to compare against
                shape = problem_shape(op, key)
                if shape is None:
                    continue
                extern = min(externs, key=times.get)
                found.append(Problem(op, *shape, len(times), best, times[best], extern, times[extern]))
    return found


def read_problems(path: Path) -> list[Problem]:
    """Every matmul problem in the timing files at path (read_timing_files), slowest under cuBLAS first."""
    found = [problem for timing in read_timing_files(path) for problem in problems(timing)]
    return sorted(found, key=lambda p: -p.extern_ms)


def markdown(found: list[Problem]) -> str:
    lines = ["| op | M x K x N | choices | winner | winner µs | cuBLAS µs | cuBLAS / winner |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for p in found:
        winner = "Triton" if p.triton_wins else "cuBLAS"
        lines.append(f"| {p.op} | {p.m} x {p.k} x {p.n} | {p.choices} | {winner} | {p.best_ms * 1e3:.1f} | "
                     f"{p.extern_ms * 1e3:.1f} | {p.extern_ms / p.best_ms:.2f} |")
    extern = sum(p.extern_ms for p in found)
    best = sum(p.best_ms for p in found)
    wins = sum(p.triton_wins for p in found)
    lines.append("")
    lines.append(f"{len(found)} timing keys; Triton won {wins}. One launch of each: {extern:.2f} ms with cuBLAS, "
                 f"{best:.2f} ms with the winners ({1 - best / extern:.0%} less).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("timings", type=Path,
                        help="autotune_timings.tar.xz (bench/unet_levers.py's), an inductor cache folder or a "
                             "cache/<hash> timing file")
    args = parser.parse_args(argv)
    if not args.timings.exists():
        parser.error(f"{args.timings}: no such file or folder")
    found = read_problems(args.timings)
    if not found:
        print(f"{args.timings}: no matmul timings in it", file=sys.stderr)
        return 1
    print(markdown(found), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
