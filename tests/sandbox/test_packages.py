"""Installs into the shared runtime change it only as the operator allows: pins kept, wheels
only, allow-listed, rate-limited, and never while holding an execution slot. Real uv against a
scratch venv and a local package folder or a loopback index."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from aiohttp import web

from labbot.sandbox.packages import Allowlist, Installer, InstallPolicy, _uv


def wheel(folder: Path, name: str, version: str, *, requires: tuple[str, ...] = ()) -> None:
    """A minimal pure-Python wheel providing module ``name``."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


def sdist_that_runs_code(folder: Path, marker: Path) -> None:
    """A source-only package whose in-tree build backend writes ``marker`` when run."""
    backend = (
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('build code ran on the host')\n"
        "def build_wheel(*a, **k):\n    raise RuntimeError('no')\n"
        "def get_requires_for_build_wheel(*a, **k):\n    return []\n"
    )
    files = {
        "buildme-1.0/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        'backend-path = ["."]\n[project]\nname = "buildme"\nversion = "1.0"\n',
        "buildme-1.0/backend.py": backend,
        "buildme-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: buildme\nVersion: 1.0\n",
    }
    with tarfile.open(folder / "buildme-1.0.tar.gz", "w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch runtime venv with pinned==1.0 installed, and a local package folder as the only
    index (pinned 2.0, a package needing it, and a source-only package)."""
    links = tmp_path / "links"
    links.mkdir()
    wheel(links, "pinned", "1.0")
    wheel(links, "pinned", "2.0")
    wheel(links, "needsnew", "1.0", requires=("pinned>=2.0",))
    wheel(links, "plain", "1.0")
    venv = tmp_path / "runtime"
    subprocess.run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    monkeypatch.setenv("UV_OFFLINE", "1")  # the local folder only, never PyPI
    monkeypatch.setenv("UV_FIND_LINKS", str(links))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    subprocess.run(
        [_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin/python"), "pinned==1.0"],
        check=True,
    )
    return venv


def installed(venv: Path) -> dict[str, str]:
    """name → version in a venv."""
    out = subprocess.run(
        [_uv(), "pip", "freeze", "--python", str(venv / "bin/python")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("==") for line in out.split())


async def test_an_install_never_changes_a_pinned_version(runtime: Path) -> None:
    """A package whose dependency needs a newer version of something installed is refused;
    the installed version stays."""
    installer = Installer(runtime, timeout=60)
    ok, why = await installer.install(Allowlist(extra="needsnew").resolve("needsnew"))
    assert not ok and "pinned" in why
    assert installed(runtime) == {"pinned": "1.0"}
    ok, _ = await installer.install(Allowlist(extra="plain").resolve("plain"))
    assert ok and installed(runtime) == {"pinned": "1.0", "plain": "1.0"}


async def test_source_packages_never_build_on_the_host(runtime: Path, tmp_path: Path) -> None:
    """A source-only release is refused: its build code never runs."""
    marker = tmp_path / "built"
    sdist_that_runs_code(tmp_path / "links", marker)
    installer = Installer(runtime, timeout=60)
    ok, why = await installer.install(Allowlist(extra="buildme").resolve("buildme"))
    assert not ok and why
    assert not marker.exists()
    assert "buildme" not in installed(runtime)


async def test_installs_are_rate_limited_and_failures_remembered(runtime: Path) -> None:
    """At most PACKAGE_INSTALLS_PER_HOUR attempts per user; a failed package is not retried
    for an hour, by anyone; a module that is installed is never installed again."""
    now = [0.0]
    allow = Allowlist(extra="needsnew,plain,pinned")
    policy = InstallPolicy(allow, Installer(runtime, timeout=60), per_user_hourly=1,
                           clock=lambda: now[0])  # fmt: skip
    package, note = await policy.decide("alice", "needsnew")
    assert package is None and "failed" in note
    package, note = await policy.decide("bob", "needsnew")
    assert package is None and "not" in note and "again" in note
    package, note = await policy.decide("alice", "plain")
    assert package is None and "at most 1" in note
    package, note = await policy.decide("bob", "pinned")
    assert package is None and "is installed" in note
    now[0] += 3601
    package, note = await policy.decide("alice", "plain")
    assert package is not None and note == ""


async def test_an_install_waits_apart_from_the_execution_slots(
    make_interpreter, unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one user's install hangs on a slow index, another user's 1+1 runs at once, even
    with a single execution slot; the install then fails with a note."""
    release = asyncio.Event()
    asked = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        asked.set()
        await release.wait()
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    monkeypatch.setenv("UV_DEFAULT_INDEX", f"http://127.0.0.1:{unused_tcp_port}/simple")
    monkeypatch.setenv("UV_NO_CACHE", "1")
    try:
        async with make_interpreter(
            MAX_CONCURRENT_EXECUTIONS=1, PACKAGE_ALLOWLIST="slowpkg-labbot-test=slowpkg"
        ) as (interpreter, _):
            await interpreter.run("bob", "c", "1")  # bob's session is warm
            installing = asyncio.create_task(interpreter.run("alice", "c", "import slowpkg"))
            async with asyncio.timeout(30):
                await asked.wait()
            async with asyncio.timeout(10):
                bob = await interpreter.run("bob", "c", "1 + 1")
            assert bob.value == "2" and not installing.done()
            release.set()
            result = await installing
            assert result.status == "error" and not result.packages_installed
            assert any("Installing slowpkg-labbot-test failed" in n for n in result.notes)
    finally:
        release.set()
        await runner.cleanup()


def test_operators_add_packages_from_the_command_line(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`labbot packages add` installs what the operator names, under the same rules (a pinned
    version never changes), and `packages list --json` shows the result."""
    from click.testing import CliRunner

    from labbot.cli import cli

    monkeypatch.setenv("LABBOT_RUNTIME_DIR", str(runtime))
    runner = CliRunner()
    added = runner.invoke(cli, ["packages", "add", "plain", "needsnew"])
    assert added.exit_code == 1
    assert "installed plain" in added.output and "not installed needsnew" in added.output
    listed = runner.invoke(cli, ["packages", "list", "--json"])
    assert listed.exit_code == 0
    assert json.loads(listed.output) == [
        {"name": "pinned", "version": "1.0"},
        {"name": "plain", "version": "1.0"},
    ]
