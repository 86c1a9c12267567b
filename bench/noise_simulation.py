"""How often the speed verdicts of harness.noise are wrong: the simulation behind MIN_REPEATS and README's rates.

A simulated trial is timed in n rounds beside its baseline, as an interleaved sweep times it. Each run's frames/s
is its true speed times a log-normal run-to-run spread (5% by default: the sample report's trials varied by 5-11%
run to run on a busy 2-core machine); in the `drifting` model every round also has a machine factor shared by
all runs of that round (10%: another job, heat, clocks), which is what interleaving and pairing are for. For
each true gain (1.00 = no change) and n, the script counts how often the verdict is `faster` or `slower`:

- at gain 1.00 that is a false verdict (the nominal rate of a 95% interval is 5%);
- at a gain above 1 it is the share of real gains found (a `slower` verdict there would be wrong too, and is
  counted apart).

Two rules, both from harness.noise with its own bootstrap (4000 resamples, percentile): `paired` (the median of
the per-round ratios, what an interleaved sweep uses) and `unpaired` (the ratio of the two medians, both sets
resampled apart: trials timed one after another, on Ray, or `harness compare` across sweeps). MIN_REPEATS is
lifted while simulating, so n below it shows what the threshold guards against.

    python bench/noise_simulation.py                  # about 3-4 minutes on one core
    python bench/noise_simulation.py --experiments 200 --repeats 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness import noise

GAINS = (1.0, 1.05, 1.10, 1.20)


def simulate(
    rule: str, n: int, gain: float, spread: float, drift: float, experiments: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(share of `faster` verdicts, share of `slower` verdicts) over `experiments` simulated trials."""
    judge = noise.paired_ratio if rule == "paired" else noise.ratio_interval
    faster = slower = 0
    for _ in range(experiments):
        machine = np.exp(rng.normal(0.0, drift, n))  # one factor per round, shared by its runs
        baseline = machine * np.exp(rng.normal(0.0, spread, n))
        trial = gain * machine * np.exp(rng.normal(0.0, spread, n))
        verdict = judge(baseline, trial).verdict
        faster += verdict == noise.FASTER
        slower += verdict == noise.SLOWER
    return faster / experiments, slower / experiments


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiments", type=int, default=1000, help="simulated trials per cell (default 1000)"
    )
    parser.add_argument(
        "--repeats", type=int, nargs="+", default=[3, 4, 5, 8], help="timed rounds n per trial"
    )
    parser.add_argument("--spread", type=float, default=0.05, help="run-to-run spread, log-normal sigma")
    parser.add_argument(
        "--drift", type=float, default=0.10, help="round-to-round machine drift (drifting model)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    noise.MIN_REPEATS = 1  # judge every n: the threshold itself is what the table is for
    rng = np.random.default_rng(args.seed)
    began = time.perf_counter()
    print(
        f"{args.experiments} simulated trials per cell; run-to-run spread {args.spread:.0%}; "
        f"drifting: plus {args.drift:.0%} per round, shared by the round's runs"
    )
    gains = " | ".join(f"gain {g:.2f}" for g in GAINS)
    print(f"\n| model | rule | n | {gains} |\n| --- | --- | ---: |" + " ---: |" * len(GAINS))
    for model, drift in (("quiet", 0.0), ("drifting", args.drift)):
        for rule in ("paired", "unpaired"):
            for n in args.repeats:
                cells = []
                for gain in GAINS:
                    faster, slower = simulate(rule, n, gain, args.spread, drift, args.experiments, rng)
                    if gain == 1.0:
                        cells.append(f"{faster + slower:.1%} false")
                    else:
                        cells.append(f"{faster:.1%} found" + (f", {slower:.1%} wrong" if slower else ""))
                print(f"| {model} | {rule} | {n} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
