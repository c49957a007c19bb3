"""The two sides of an A/B run: a git revision (checked out into a temporary worktree) or the
path of another checkout. Each side runs its own ``run_bench.py`` with the current Python."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.errors import UsageError

ENTRY = "run_bench.py"


@dataclass(frozen=True)
class Side:
    label: str                 # "base" or "head"
    spec: str                  # as given on the command line
    root: Path                 # the checkout whose run_bench.py measures this side
    commit: str | None = None  # full commit id when the side is a revision
    harness_from: str = ""     # with --same-harness: whose harness measures this side

    def describe(self) -> str:
        if self.commit is None:
            text = f"{self.spec} (checkout at {self.root})"
        else:
            short = self.commit[:10]
            text = short if self.spec.startswith(short) else f"{self.spec} ({short})"
        return text + (f" [harness of {self.harness_from}]" if self.harness_from else "")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def repository_root(where: Path) -> Path | None:
    """Top of the git work tree containing ``where``; None if not in one (or no git)."""
    try:
        done = _git(where, "rev-parse", "--show-toplevel")
    except FileNotFoundError:
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def resolve_commit(repo: Path, spec: str) -> str | None:
    """Full commit id of revision ``spec`` in ``repo``; None if it names no commit."""
    if spec.startswith("-"):
        return None
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def is_checkout(path: Path) -> bool:
    return (path / ENTRY).is_file() and (path / "harness").is_dir()


def classify(spec: str, label: str, cwd: Path) -> tuple[str, Path | str]:
    """('path', root) for another checkout, ('commit', id) for a revision; UsageError if neither.

    A spec that names an existing directory is a path (``.`` is the working tree as it is,
    uncommitted changes included); anything else must be a revision of the repository the
    command runs in.
    """
    candidate = (cwd / spec).expanduser()
    if spec and candidate.is_dir():
        root = candidate.resolve()
        if not is_checkout(root):
            raise UsageError(f"{label.upper()} {spec}: not an attnbench checkout (no {ENTRY} "
                             f"and harness/ in {root})")
        return "path", root
    repo = repository_root(cwd)
    if repo is None:
        raise UsageError(f"{label.upper()} {spec}: not a directory, and {cwd} is not inside a "
                         f"git repository to take it as a revision from")
    commit = resolve_commit(repo, spec)
    if commit is None:
        raise UsageError(f"{label.upper()} {spec}: unknown revision in {repo} (and no such "
                         f"directory)")
    return "commit", commit


def with_harness_of(side: Side, harness_side: Side, where: Path) -> Side:
    """``side``'s implementations measured by ``harness_side``'s harness: a directory holding a
    copy of that run_bench.py (a copy, not a link, so that Python puts this directory first on
    the path), a link to its harness/ and a link to ``side``'s implementations/."""
    where.mkdir(parents=True)
    shutil.copy(harness_side.root / ENTRY, where / ENTRY)
    (where / "harness").symlink_to(harness_side.root / "harness", target_is_directory=True)
    (where / "implementations").symlink_to(side.root / "implementations",
                                           target_is_directory=True)
    return Side(side.label, side.spec, where, side.commit,
                harness_from=harness_side.describe())


@contextmanager
def checked_out(specs: dict[str, str], cwd: Path, *,
                same_harness: bool = False) -> Iterator[dict[str, Side]]:
    """The sides, revisions checked out (detached) into temporary worktrees removed at the end.

    Everything is resolved before anything is checked out, so bad input costs nothing. With
    ``same_harness`` BASE's implementations run under HEAD's harness (only implementations/
    differs between the sides).
    """
    kinds = {label: classify(spec, label, cwd) for label, spec in specs.items()}
    repo = repository_root(cwd)
    made: list[Path] = []
    tmp = Path(tempfile.mkdtemp(prefix="attnbench-ab-"))
    try:
        sides: dict[str, Side] = {}
        for label, (kind, value) in kinds.items():
            if kind == "path":
                sides[label] = Side(label, specs[label], Path(value))
                continue
            assert repo is not None
            where = tmp / label
            done = _git(repo, "worktree", "add", "--detach", "--quiet", str(where), str(value))
            if done.returncode != 0:
                raise UsageError(f"{label.upper()} {specs[label]}: git worktree add failed: "
                                 f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
            made.append(where)
            if not is_checkout(where):
                raise UsageError(f"{label.upper()} {specs[label]}: revision {str(value)[:10]} "
                                 f"has no {ENTRY} and harness/ (not an attnbench revision)")
            sides[label] = Side(label, specs[label], where, commit=str(value))
        if same_harness:
            sides["base"] = with_harness_of(sides["base"], sides["head"], tmp / "base-mixed")
        yield sides
    finally:
        for where in made:
            _git(repo, "worktree", "remove", "--force", str(where))  # type: ignore[arg-type]
        if made:
            _git(repo, "worktree", "prune")  # type: ignore[arg-type]
        shutil.rmtree(tmp, ignore_errors=True)
