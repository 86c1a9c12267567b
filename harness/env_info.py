"""Where a trial ran: code version, machine, libraries. Logged as `env.*` tags on every trial.

Fast (well under a second once torch is imported) and never raises: anything that cannot be read is
"unknown". Values are flat (str, int or float) so they can become tags and table columns directly.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

UNKNOWN = "unknown"
REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy", "diffusers", "transformers", "mlflow", "onnxruntime", "onnxruntime-gpu", "av")
_SUBPROCESS_TIMEOUT_S = 2.0


def _safe(read: Callable[[], Any]) -> Any:
    try:
        value = read()
    except Exception:  # collecting the environment must never fail a trial
        return UNKNOWN
    return UNKNOWN if value is None or value == "" else value


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    out = subprocess.run(
        args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S,
        check=True,
    )
    return out.stdout.strip()


def _git(root: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str | None:
    """git's output ("" is a valid answer), or None when git or the checkout is missing."""
    try:
        return _run("git", *args, cwd=root, env=env, stdin=stdin)
    except (OSError, subprocess.SubprocessError):
        return None


def git_info(root: Path = REPO_ROOT) -> dict[str, str]:
    """Commit, branch, dirty flag ("true"/"false", tracked files only) and the files' tree (source_tree) of the
    checkout at root; "unknown" outside a checkout."""
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return {"git_commit": UNKNOWN, "git_branch": UNKNOWN, "git_dirty": UNKNOWN, "git_tree": UNKNOWN}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD") or UNKNOWN,
        "git_dirty": UNKNOWN if status is None else str(bool(status)).lower(),
        "git_tree": source_tree(root),
    }


def source_tree(root: Path = REPO_ROOT) -> str:
    """The git tree id of the checkout's files as they are (tracked and untracked, not ignored). It equals the
    tree of the commit that holds exactly these files (`git log --format='%H %T'` finds it) even where HEAD is
    stale or files changed since, as in a copy of a working tree sent to a GPU machine. Built in a temporary
    index; file contents are hashed, not stored (only the small tree objects are written)."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if not listed:
        return UNKNOWN
    paths = sorted({p for p in listed.split("\0") if p and (root / p).is_file()})
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(folder) / "index")}
        added = _git(root, "update-index", "--add", "--info-only", "-z", "--stdin", env=env, stdin="\0".join(paths) + "\0")
        return (added is not None and _git(root, "write-tree", "--missing-ok", env=env)) or UNKNOWN


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no NVML binding or no driver; nvidia-smi may still answer
        pass
    return _run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader").splitlines()[0].strip()


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _device_info(device: Any) -> dict[str, Any]:
    import torch

    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    info: dict[str, Any] = {"device": str(dev), "device_type": dev.type}
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            device=f"cuda:{index}",
            device_name=props.name,
            device_capability=f"{props.major}.{props.minor}",
            device_memory_gb=round(props.total_memory / 1e9, 1),
            # which GPU of the machine (CUDA_VISIBLE_DEVICES renumbers them): trials side by side on Ray differ
            device_uuid=f"GPU-{props.uuid}" if getattr(props, "uuid", None) else UNKNOWN,
        )
    else:
        info["device_name"] = _safe(_cpu_model) if dev.type == "cpu" else UNKNOWN
    return info


def collect_env(device: Any = "auto") -> dict[str, Any]:
    """Flat dict: git_*, hostname, os, python, torch, cuda, cudnn, device*, driver, gpu_count, cpu_*, ram_gb,
    `<package>_version`. `device` is what the run uses ("auto", "cpu", "cuda:1" or a torch.device)."""
    env: dict[str, Any] = dict(git_info())
    env.update(
        hostname=_safe(socket.gethostname),
        os=_safe(platform.platform),
        python=platform.python_version(),
        cpu_model=_safe(_cpu_model),
        cpu_count_logical=_safe(os.cpu_count),
        cpu_count_physical=_safe(lambda: psutil.cpu_count(logical=False)),
        ram_gb=_safe(lambda: round(psutil.virtual_memory().total / 1e9, 1)),
    )
    try:
        import torch

        env.update(
            torch=torch.__version__,
            cuda=torch.version.cuda or "none",
            cudnn=_safe(torch.backends.cudnn.version) if torch.cuda.is_available() else "none",
            gpu_count=torch.cuda.device_count(),
        )
    except Exception:
        env.update(torch=UNKNOWN, cuda=UNKNOWN, cudnn=UNKNOWN, gpu_count=UNKNOWN)
    device_info = _safe(lambda: _device_info(device))
    if device_info == UNKNOWN:
        device_info = {"device": str(device), "device_type": UNKNOWN, "device_name": UNKNOWN}
    env.update(device_info)
    env["driver"] = _safe(_driver_version) if env.get("gpu_count") not in (0, UNKNOWN) else "none"
    for name in PACKAGES:
        env[f"{name.replace('-', '_')}_version"] = _package_version(name)
    return env
