"""The security suite again, with the bot running as an unprivileged user (no cgroups, no root),
as a service user or the container's user would.

As root, this test prepares a view of the machine for ``nobody`` (a private mount namespace in
which the checkout, its venvs and the base Python are reachable even when they sit under
/root), then runs test_security.py and test_attacks.py there as that user.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from labbot.config import default_runtime_dir
from labbot.sandbox.jail import Runtime

REPO = Path(__file__).resolve().parents[2]
SUITE = [
    "tests/sandbox/test_security.py",
    "tests/sandbox/test_attacks.py",
    "tests/sandbox/test_review_attacks.py",
    "tests/sandbox/test_host_hidden.py",
    "tests/sandbox/test_uids.py",  # its root-only tests skip: the range check still runs
    "tests/sandbox/test_parked.py",  # without a cgroup every cell is stopped: skips, asserts CPU
]


def _blocker(path: Path) -> Path | None:
    """The highest folder above ``path`` that others may not pass through."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def view_script(paths: list[Path], stage: Path) -> str:
    """Shell lines that, in a private mount namespace, make ``paths`` reachable by anyone:
    each folder that blocks the way is covered by a tmpfs holding only those paths."""
    lines, covered = [], {}
    for index, path in enumerate(paths):
        blocker = _blocker(path)
        if blocker is None:
            continue
        keep = stage / str(index)
        lines.append(f"mkdir -p {keep} && mount --bind {shlex.quote(str(path))} {keep}")
        covered.setdefault(blocker, []).append((keep, path))
    for blocker, kept in covered.items():
        lines.append(f"mount -t tmpfs -o mode=0755 labbot-view {shlex.quote(str(blocker))}")
        for keep, path in kept:
            target = shlex.quote(str(path))
            lines.append(f"mkdir -p {target} && mount --bind {keep} {target}")
    return " && ".join(lines) or "true"


@pytest.mark.timeout(900)
@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: the suite runs so as is")
def test_security_suite_as_an_unprivileged_bot() -> None:
    """Every row of the security suite and every attack of the escape review hold when the bot
    itself is an unprivileged user without cgroups."""
    nobody = pwd.getpwnam("nobody")
    work = Path(tempfile.mkdtemp(prefix="labbot-unprivileged-", dir="/var/tmp"))
    try:
        os.chown(work, nobody.pw_uid, nobody.pw_gid)
        os.chmod(work, 0o700)
        runtime = default_runtime_dir()
        python = Path(sys.executable).resolve()
        needed = [REPO, runtime, Runtime.locate(runtime).base_prefix, python.parents[1]]
        script = view_script([p.resolve() for p in needed], work / "view")
        inner = [
            str(REPO / ".venv/bin/python"), "-m", "pytest", *SUITE, "-q", "-p",
            "no:cacheprovider", f"--basetemp={work / 'pytest'}", "-o", "addopts=-rs",
        ]  # fmt: skip
        command = (
            f"{script} && cd {shlex.quote(str(REPO))} && exec setpriv --reuid={nobody.pw_uid}"
            f" --regid={nobody.pw_gid} --clear-groups --inh-caps=-all -- "
            + " ".join(shlex.quote(a) for a in inner)
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "PYTHONDONTWRITEBYTECODE": "1",
            "UV_PYTHON_DOWNLOADS": "never",
        }
        run = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=850,
        )
        summary = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
        assert " passed" in summary and "failed" not in summary, summary
        print(f"unprivileged security suite: {summary}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
