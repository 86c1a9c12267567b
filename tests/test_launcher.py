import json
import os
import tempfile
import textwrap

from harness.launcher import run_in_subprocess, share_inductor_cache
from harness.trial import Trial


def test_a_trial_process_killed_outright_leaves_no_temporary_file_and_keeps_the_shared_compile_cache(
    tmp_path, monkeypatch, stand_in_python
):
    """A process killed before its clean-up runs (SIGKILL, or SIGTERM in the middle of its imports) cannot
    remove a library's temporary file; the sweep removes the trial's own temporary folder instead."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    parent_tmp = tmp_path / "tmp"
    parent_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(parent_tmp))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    seen = tmp_path / "seen"
    # stands in for the trial process: it leaves a temporary file and dies by a signal it cannot handle
    stand_in_python(
        textwrap.dedent(f"""\
        echo "$TMPDIR" > {seen}.tmpdir
        cp "$3" {seen}.spec
        touch "$TMPDIR/tmpabcd1234"
        kill -9 $$
        """)
    )

    result = run_in_subprocess(Trial(name="killed"), tmp_path / "trial", baseline_output=None)

    assert result.status == "failed" and "by signal SIGKILL" in result.error
    child_tmp = seen.with_suffix(".tmpdir").read_text().strip()
    assert os.path.dirname(child_tmp) == str(parent_tmp) and not os.path.exists(child_tmp)
    assert not list(parent_tmp.iterdir())
    # compile_cache: off still means torch's per-user folder under the sweep's TMPDIR, shared across trials: the
    # trial process works it out from the sweep's TMPDIR, under its own
    sweep_tmpdir = json.loads(seen.with_suffix(".spec").read_text())["sweep_tmpdir"]
    assert sweep_tmpdir == str(parent_tmp)
    monkeypatch.setattr(tempfile, "tempdir", child_tmp)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # unset, as in the sweep (and restored after the test)
    share_inductor_cache(sweep_tmpdir)
    assert tempfile.gettempdir() == child_tmp  # the trial's own TMPDIR, for everything else
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == default_cache_dir()
    assert default_cache_dir().startswith(str(parent_tmp))
