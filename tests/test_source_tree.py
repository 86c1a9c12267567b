"""env.git_tree names the code a trial ran, as files, not as the checkout's HEAD: it equals the tree of the commit
holding exactly those files, whatever HEAD says (a copy of a working tree sent to a GPU machine carries a stale
HEAD), and stores no file contents in the repository."""

import subprocess
from pathlib import Path

import pytest

from harness.env_info import UNKNOWN, git_info, source_tree


def _git(root: Path, *args: str) -> str:
    return subprocess.run(("git", *args), cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / ".gitignore").write_text("outputs/\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def test_the_tree_of_a_clean_checkout_is_its_commits(repo):
    assert source_tree(repo) == _git(repo, "rev-parse", "HEAD^{tree}")
    assert git_info(repo)["git_tree"] == source_tree(repo) and git_info(repo)["git_dirty"] == "false"


def test_changed_and_new_files_give_the_tree_of_the_commit_that_holds_them(repo):
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "pkg" / "a.py").write_text("A = 2\n")
    (repo / "pkg" / "b.py").write_text("B = 1\n")  # new, untracked
    (repo / "outputs").mkdir()
    (repo / "outputs" / "run.json").write_text("{}")  # ignored: not code
    objects = _git(repo, "count-objects")
    tree = source_tree(repo)
    assert _git(repo, "rev-parse", "HEAD") == first and tree != _git(repo, "rev-parse", "HEAD^{tree}")
    blobs = {line.split("\t")[1]: line.split()[2] for line in _git(repo, "ls-tree", "-r", tree).splitlines()}
    assert set(blobs) == {".gitignore", "pkg/a.py", "pkg/b.py"}
    # the changed and new files' contents are hashed, not stored
    assert not _objects_has(repo, blobs["pkg/a.py"]) and not _objects_has(repo, blobs["pkg/b.py"])
    assert _git(repo, "count-objects") != objects  # the tree objects are (a few hundred bytes)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "second")
    assert tree == _git(repo, "rev-parse", "HEAD^{tree}")  # found again as the commit of those files


def _objects_has(repo: Path, sha: str) -> bool:
    done = subprocess.run(("git", "cat-file", "-e", sha), cwd=repo, capture_output=True, check=False)
    return done.returncode == 0


def test_outside_a_checkout_it_is_unknown(tmp_path):
    assert source_tree(tmp_path) == UNKNOWN and git_info(tmp_path)["git_tree"] == UNKNOWN
