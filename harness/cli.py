"""The `harness` command: run | sweep | report | compare | score | download | variants."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

EPILOG = (
    "Weights: a checkpoint folder in the public layout (latentsync_unet.pt, whisper/tiny.pt, vae/), 'synthetic' "
    "(real architectures, seeded random values: speed only) or 'tiny' (small configs for CPU tests)."
)


class _RunHelpFormatter(argparse.HelpFormatter):
    """Writes a run option's help when help is shown: its allowed values come from the variant families, and
    importing those (torch and diffusers among them) would cost every `harness sweep` seconds it never needs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        describe = getattr(action, "describe", None)
        return describe() if describe else super()._get_help_string(action)


def _run_option_help(name: str, default: Any) -> str:
    from harness.config import settings
    from variants.values import describe_allowed

    decl = settings()[name]
    allowed = describe_allowed(name)
    allowed = "" if allowed == "any text" else f"{allowed}; "
    family = f"; variant family {decl.family!r}" if decl.family else ""
    return f"{decl.help} ({allowed}default {default!r}{family})".replace("%", "%%")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """One option per run setting, generated from RunConfig's declarations (type, allowed values, help)."""
    from harness.config import RunConfig, field_type, settings

    defaults = RunConfig()
    p.formatter_class = _RunHelpFormatter  # which writes each option's help from `describe`, below
    p.add_argument("--config", help="YAML file of run settings (any option below, as key: value)")
    groups: dict[str, Any] = {}
    for name, decl in settings().items():
        if not decl.cli:
            continue
        group = groups.get(decl.group) or groups.setdefault(decl.group, p.add_argument_group(decl.group))
        kind = field_type(name)
        action = group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind if kind in (int, float) and not decl.family else str,
            metavar=name.upper(),
            help=decl.help,
        )
        action.describe = partial(_run_option_help, name, getattr(defaults, name))
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="FAMILY=VALUE",
        help="apply a variant (repeatable; the value is YAML); see `harness variants`",
    )


def cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from harness.config import field_names
    from harness.models.lean_diffusers import skip_unused_diffusers_integrations
    from harness.pipeline.distributed import current_shard, rank_folder
    from harness.preflight import check_run
    from harness.results import STAGE_TIMES_PLOT
    from harness.runner import output_path, resolve_inputs, run_trial
    from harness.stages import STAGES
    from harness.trial import Trial
    from reports.plots import draw_if_available, stage_times_plot
    from variants.values import resolve

    from_yaml = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    if from_yaml and not isinstance(from_yaml, dict):
        raise ValueError(f"{args.config}: expected a mapping of run settings (key: value)")
    cli = {k: getattr(args, k) for k in field_names() if getattr(args, k, None) is not None}
    resolve(cli, where=("command line",))  # an error in a flag says so (the merged layers below say "base")
    base = {**(from_yaml or {}), **cli}
    video, audio = base.pop("video", "demo"), base.pop("audio", "demo")
    variants = dict(_parse_variant(v) for v in args.variant)
    trial = Trial(
        name="run",
        variants=variants,
        base=base,
        video=video,
        audio=audio,
        repeats=0,  # one run: the cold run, no warm-up, no timed repeats, no profiled pass
        warmup=0,
        profile=False,
        score=False,
    )
    config = resolve_inputs(trial).resolve()  # every setting checked before anything loads
    run_dir = Path(args.run_dir or Path("outputs") / "runs" / time.strftime("%Y%m%d-%H%M%S"))
    shard = current_shard()  # under torchrun: this rank's share of the video (harness.pipeline.distributed)
    if shard is not None:
        run_dir = rank_folder(Path(shard.agree(str(run_dir))), shard)
    check_run(config, output_path(config, run_dir))  # inputs, device and output, before the folder exists
    print(f"run folder: {run_dir} (config.json, result.json)")
    skip_unused_diffusers_integrations()
    result = run_trial(trial, run_dir)
    if result.status != "ok":
        raise RuntimeError(result.error or result.reason)
    if shard is not None and shard.rank:
        return 0  # rank 0 wrote the video and reports the run
    m = result.metrics
    draw_if_available(lambda: stage_times_plot(m, STAGES, run_dir / STAGE_TIMES_PLOT))
    if result.tags.get("weights.synthetic") == "true":
        print(
            f"NOTE: weights are {result.tags['weights.source']!r} (random values): the output is not a real lip-sync"
        )
    output = output_path(config, run_dir)
    print(f"\nwrote {output} ({m['frames']:.0f} frames, {m['output_s']:.2f} s at 25 fps, with audio)")
    if result.transforms:
        print("transforms applied, in order: " + ", ".join(result.transforms))
    print("\n| stage | seconds |\n| --- | ---: |")
    for stage in (s for s in STAGES if f"{s}_s" in m):  # gather: distributed runs only
        print(f"| {stage} | {m[f'{stage}_s']:.3f} |")
    print(f"| total | {m['total_s']:.3f} |\n\n{m['fps']:.2f} frames/s, real-time factor {m['rtf']:.3f}")
    return 0


def _parse_variant(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise SystemExit(f"--variant expects FAMILY=VALUE, got {text!r}")
    family, value = text.split("=", 1)
    return family.strip(), yaml.safe_load(value)


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.sweep import LoggingFailed, load_sweep, log_only, run_sweep

    sweep = load_sweep(args.file, overrides=args.set, only=args.only.split(",") if args.only else None)
    out_dir = Path(args.out_dir or Path("outputs") / sweep.name)
    if args.dry_run:
        print(
            f"sweep {sweep.name}: {len(sweep.trials)} trial(s), baseline {sweep.baseline!r}, output {out_dir}"
        )
        for trial in sweep.trials:
            notes = [] if trial.is_baseline else [f"{trial.tier} tier"]
            notes += [f"{family}: no-op on this base" for family in trial.noop_families()]
            print(f"  {trial.folder_name()}  {json.dumps(trial.variants)} ({'; '.join(notes) or 'baseline'})")
        return 0
    if args.log_only and args.no_mlflow:
        raise ValueError("--log-only logs the finished trials to MLflow; it cannot go with --no-mlflow")
    if args.executor == "ray":
        from harness.ray_executor import import_ray

        if args.inline:
            raise ValueError("--inline runs the trials in this process; it cannot go with --executor ray")
        import_ray()  # not installed: say so before anything runs
    if args.inline:  # the trials load their models in this process
        from harness.models.lean_diffusers import skip_unused_diffusers_integrations

        skip_unused_diffusers_integrations()
    logging_failure = ""
    try:
        if args.log_only:
            results = log_only(sweep, out_dir)
        else:
            results = run_sweep(
                sweep,
                out_dir,
                inline=args.inline,
                log_mlflow=not args.no_mlflow,
                executor=args.executor,
                ray_address=args.address,
            )
    except LoggingFailed as exc:  # the trials' results, the table and the report are written
        results, logging_failure = exc.results, str(exc)
    return _summarise(results, [t.name for t in sweep.trials], out_dir, logging_failure)


def _summarise(results: list[Any], planned: list[str], out_dir: Path, logging_failure: str) -> int:
    """The sweep's table; exit status 0 only when every planned trial is ok (or skipped here, with its
    reason) and logged, else 1 with what is wrong."""
    print("\n| trial | status | fps | total s | note |\n| --- | --- | ---: | ---: | --- |")
    for r in results:
        m = r.metrics
        note = r.error or r.reason or ""
        fps = f"{m['fps']:.2f}" if "fps" in m else ""
        total = f"{m['total_s']:.2f}" if "total_s" in m else ""
        print(f"| {r.trial} | {r.status} | {fps} | {total} | {note[:80]} |")
    print(f"\nresults: {out_dir / 'results.csv'}")
    problems = []
    failed = [r.trial for r in results if r.status == "failed"]
    if failed:
        problems.append(
            f"{len(failed)} of {len(planned)} trial(s) failed: {', '.join(failed)} (see results.csv)"
        )
    missing = [name for name in planned if name not in {r.trial for r in results}]
    if missing:
        problems.append(f"{len(missing)} trial(s) have no result: {', '.join(missing)}")
    if logging_failure:
        problems.append(logging_failure)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_score(args: argparse.Namespace) -> int:
    from metrics.score import score_video

    result = score_video(
        Path(args.video),
        audio=args.audio,
        reference=args.reference,
        input_video=args.input,
        resolution=args.resolution,
        syncnet_weights=args.syncnet_weights,
        s3fd_weights=args.s3fd_weights,
        fid_weights=args.fid_weights,
        fvd_weights=args.fvd_weights,
        lpips_weights=tuple(args.lpips_weights) if args.lpips_weights else None,
    )
    for key, reason in result.skipped.items():
        print(f"{key}: not computed: {reason}", file=sys.stderr)
    if not result.scores:
        print(f"error: no score could be computed for {args.video}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.scores, indent=2, sort_keys=True))
    else:
        for key, value in sorted(result.scores.items()):
            print(f"{key:28s} {value:.4f}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from harness.models.download import download

    path = download(Path(args.dest), version=args.version)
    print(f"checkpoints in {path}")
    return 0


def cmd_variants(args: argparse.Namespace) -> int:
    from variants import VARIANTS

    for name in VARIANTS.names():
        cls = VARIANTS.get(name)
        print(
            f"{name:18s} {cls.summary}\n{'':18s} setting: {cls.field_name} (--{cls.field_name.replace('_', '-')})"
        )
        print(f"{'':18s} values: {cls.allowed()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark and optimise LatentSync lip-sync inference: run the pipeline, sweep variants, score.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="lip-sync one video to an audio track", epilog=EPILOG)
    _add_run_options(run)
    run.add_argument(
        "--run-dir", help="folder for config.json and the default output (default outputs/runs/<time>)"
    )
    run.set_defaults(func=cmd_run)
    sweep = sub.add_parser(
        "sweep",
        help="run a grid/list of variant trials from a YAML file",
        epilog="Exit status: 0 when every trial is ok (or skipped here, with the reason); 1 when a trial failed "
        "or logging to MLflow failed (the table and report are written either way); 2 for bad input, found "
        "before any trial runs (the file, an input, an unreachable MLflow store); 130/143 when interrupted.",
    )
    sweep.add_argument("file", help="sweep YAML (see experiments/)")
    sweep.add_argument("--out-dir", help="sweep folder (default outputs/<sweep name>)")
    sweep.add_argument("--dry-run", action="store_true", help="list the trials and exit")
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the file (repeatable): a top-level key such as repeats=1 or profile=false, "
        "or a run setting as base.FIELD=VALUE (e.g. base.max_seconds=3.2); values are YAML",
    )
    sweep.add_argument(
        "--only", metavar="NAMES", help="run only these trials (comma-separated names as in --dry-run)"
    )
    sweep.add_argument(
        "--inline",
        action="store_true",
        help="run trials in this process (debugging) instead of one fresh process each",
    )
    sweep.add_argument(
        "--no-mlflow",
        action="store_true",
        help="do not log to MLflow (results stay in JSON/CSV; log them later with --log-only)",
    )
    sweep.add_argument(
        "--log-only",
        action="store_true",
        help="run no trial: write the results table and report from the finished trials' files and log them "
        "to MLflow (after a sweep run with --no-mlflow, or whose MLflow server was down)",
    )
    sweep.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: a fresh process per trial on this machine (default); ray: a Ray task per trial, one GPU "
        'each (one CPU for CPU trials), trials side by side; needs the ray extra (pip install -e ".[ray]")',
    )
    sweep.add_argument(
        "--address",
        metavar="ADDR",
        help="with --executor ray: the Ray cluster to join (auto, HOST:6379, ray://HOST:10001); default: start "
        "one on this machine with all its GPUs and CPUs",
    )
    sweep.set_defaults(func=cmd_sweep)
    score = sub.add_parser("score", help="score a video's lip-sync and visual quality")
    score.add_argument("video")
    score.add_argument("--audio", help="audio to score against (default: the video's own track)")
    score.add_argument("--reference", help="reference video for PSNR/SSIM fidelity")
    score.add_argument(
        "--input", help="the input video the output was made from (scores outside/inside the mouth)"
    )
    score.add_argument(
        "--resolution",
        type=int,
        default=512,
        choices=[256, 512],
        help="face resolution of the run (mouth region)",
    )
    score.add_argument("--syncnet-weights", help="syncnet_v2.model for LSE-C/LSE-D (skipped without it)")
    score.add_argument("--s3fd-weights", help="sfd_face.pth: S3FD face crops for SyncNet, as in papers")
    score.add_argument(
        "--fid-weights",
        help="Inception for FID: NVIDIA's inception-2015-12-05.pt or pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth (skipped without it)",
    )
    score.add_argument("--fvd-weights", help="TorchScript I3D for FVD (skipped without it)")
    score.add_argument(
        "--lpips-weights",
        nargs=2,
        metavar=("ALEXNET", "HEADS"),
        help="torchvision's alexnet-owt-7be5be79.pth and lpips' v0.1 alex.pth (skipped without them)",
    )
    score.add_argument("--json", action="store_true", help="print the scores as JSON")
    score.set_defaults(func=cmd_score)
    download = sub.add_parser("download", help="fetch the public checkpoints with huggingface_hub")
    download.add_argument("--dest", default="checkpoints", help="destination folder (default ./checkpoints)")
    download.add_argument("--version", default="1.6", choices=["1.5", "1.6"], help="LatentSync version")
    download.set_defaults(func=cmd_download)
    variants = sub.add_parser("variants", help="list the variant families and their values")
    variants.set_defaults(func=cmd_variants)
    from reports.commands import add_commands

    add_commands(sub)  # report, compare
    return parser


def main(argv: list[str] | None = None) -> int:
    from harness.interrupts import exit_status, signals_interrupt

    # From the first moment (the imports below take seconds): SIGTERM/SIGHUP end the command as Ctrl-C does.
    with signals_interrupt():
        try:
            return _main(argv)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (harness.interrupts)
            print(f"\ninterrupted ({exc or 'Ctrl-C'})", file=sys.stderr)
            return exit_status(exc)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`harness variants | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # permissions, a full disk, ...: say which file
        if args.verbose:
            raise
        where = f": {exc.filename}" if exc.filename and str(exc.filename) not in str(exc) else ""
        print(f"error: {exc}{where}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
