"""Each trial in a fresh process: clean peak-memory figures, and no compiled graphs, patched modules or
quantized weights leaking into the next trial. The result (or the traceback) comes back through result.json.

A trial process never outlives its sweep: it holds the trial folder's lock (shared with the sweep process), it
gets SIGTERM from the kernel if the sweep process dies however it dies (PR_SET_PDEATHSIG), and an interrupted
sweep (Ctrl-C, SIGTERM) ends its trial processes itself and records those trials as failed with the reason.
Ended by a signal, a trial process records its own failure and removes its partial files before it exits.
Its temporary files go to a folder of its own that the sweep removes when it ends, however it ends: a library's
temporary file outlives a process killed before its clean-up could run (in the middle of its imports, or by
SIGKILL after the grace time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from harness.folder_lock import FolderLock
from harness.results import RESULT_FILE, TrialResult, load_trial
from harness.runner import failed_result
from harness.trial import Trial

STOP_GRACE_S = 20.0  # a trial told to stop gets this long to record its failure before SIGKILL
TRIAL_LOCK_WAIT_S = 30.0  # a trial folder still held (by a dying process of a killed sweep) is waited for
_live: dict[subprocess.Popen, threading.Event] = {}
_live_lock = threading.Lock()
_stop_reason: str | None = None


class TrialKilled(Exception):
    """Raised in a trial process by SIGTERM/SIGHUP, so its run is recorded as failed and cleaned up."""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it ends (Linux; elsewhere a no-op)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        return


def share_inductor_cache(sweep_tmpdir: str) -> None:
    """In the trial process: the compile cache it would use with the sweep's TMPDIR, so that trials keep sharing
    torch's per-user folder (compile_cache: off) although each has a TMPDIR of its own. Worked out here, where
    diffusers has imported torch's inductor anyway, not in the sweep process, which would import torch for it."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    own, tempfile.tempdir = tempfile.tempdir, sweep_tmpdir
    try:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = default_cache_dir()
    finally:
        tempfile.tempdir = own


def run_in_subprocess(
    trial: Trial, folder: Path, baseline_output: Path | None, timeout_s: float | None = None
) -> TrialResult:
    global _stop_reason
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder, what=f"trial {trial.name}", wait_s=TRIAL_LOCK_WAIT_S) as lock:
        spec = folder / "trial.json"
        spec.write_text(
            json.dumps(
                {
                    "trial": trial.to_dict(),
                    "baseline_output": str(baseline_output or ""),
                    "sweep_tmpdir": tempfile.gettempdir(),
                }
            )
        )
        log_path = folder / "trial.log"
        # a failed attempt's result must not stand for this one
        (folder / RESULT_FILE).unlink(missing_ok=True)
        done = threading.Event()
        scratch = tempfile.TemporaryDirectory(prefix="harness-trial-tmp-", ignore_cleanup_errors=True)
        env = {**os.environ, "TMPDIR": scratch.name}
        with scratch, open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness.launcher", str(spec)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(lock.fd,),  # the child holds the trial folder too, until it ends
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            with _live_lock:
                _live[proc] = done
            try:
                code: Any = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _end(proc)
                code = f"timeout after {timeout_s} s"
            except BaseException:  # the sweep itself is being interrupted: this trial ends with it
                _stop_reason = _stop_reason or "the sweep was interrupted"
                _end(proc)
                code = proc.returncode
                raise
            finally:
                try:
                    result = _collect(trial, folder, log_path, code)
                finally:
                    with _live_lock:
                        _live.pop(proc, None)
                    done.set()
    return result


def _collect(trial: Trial, folder: Path, log_path: Path, code: Any) -> TrialResult:
    result = None
    if (folder / RESULT_FILE).exists():
        result = load_trial(folder).result
        if result.key != trial.key():
            result = None
    written = result is not None  # by the trial process: rewritten only if there is something to add
    if result is None:
        result = failed_result(
            trial,
            f"trial process ended ({_exit_text(code)}) without a result",
            log_path.read_text(errors="replace")[-3000:],
        )
    if _stop_reason and result.status == "failed":
        result.error = f"killed: {_stop_reason} ({result.error})"
    elif written:
        return result
    result.write(folder)
    return result


def _exit_text(code: Any) -> str:
    if isinstance(code, int) and code < 0:
        return f"by signal {signal.Signals(-code).name}"
    return f"exit code {code}" if isinstance(code, int) else str(code)


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM (the trial records its failure), then SIGKILL if it has not ended within the grace time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_all(reason: str) -> None:
    """End every running trial process of this sweep (their trials are recorded failed with `reason`) and wait
    until each one's result is written."""
    global _stop_reason
    _stop_reason = reason
    with _live_lock:
        live = list(_live.items())
    for proc, _ in live:
        if proc.poll() is None:
            proc.terminate()
    for proc, done in live:
        _end(proc)
        done.wait(timeout=STOP_GRACE_S)
    _stop_reason = None  # recorded; a later sweep in this process starts clean


def _raise_killed(signum: int, _frame: Any) -> None:
    raise TrialKilled(f"the trial process received {signal.Signals(signum).name}")


def main(argv: list[str]) -> int:
    import logging

    from harness.models.lean_diffusers import skip_unused_diffusers_integrations
    from harness.runner import run_trial

    signal.signal(signal.SIGTERM, _raise_killed)
    signal.signal(signal.SIGHUP, _raise_killed)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    skip_unused_diffusers_integrations()  # every trial process pays for its imports
    spec = json.loads(Path(argv[0]).read_text())
    share_inductor_cache(spec["sweep_tmpdir"])
    trial = Trial.from_dict(spec["trial"])
    baseline = Path(spec["baseline_output"]) if spec["baseline_output"] else None
    # The sweep process holds the folder's lock and shares it with this process (pass_fds).
    result = run_trial(trial, Path(argv[0]).parent, baseline_output=baseline, lock=False)
    return 0 if result.status in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
