"""The code interpreter end to end: state, results, outputs, files, packages, sessions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from labbot.errors import SandboxUnavailable
from labbot.sandbox import CodeInterpreter
from tests.conftest import chunks_of


async def test_variables_persist_and_the_last_expression_is_shown(
    interpreter: CodeInterpreter,
) -> None:
    """A variable set in one execution is there in the next; a bare last expression is shown."""
    first = await interpreter.run("u", "c", "import math\nx = 20")
    assert first.status == "ok" and first.value is None
    second = await interpreter.run("u", "c", "x * 2 + 2")
    assert (second.status, second.value, second.session_restarted) == ("ok", "42", False)
    other = await interpreter.run("u", "other", "x")
    assert other.status == "error" and other.error and other.error.name == "NameError"


async def test_errors_carry_a_traceback_with_the_users_line_numbers(
    interpreter: CodeInterpreter,
) -> None:
    """A failure reports the exception and a traceback pointing at the user's own lines."""
    code = "def f(d):\n    return d['missing']\n\nprint('before')\nf({})\n"
    result = await interpreter.run("u", "c", code)
    assert result.status == "error" and result.stdout == "before\n"
    assert result.error is not None and result.error.name == "KeyError"
    trace = result.error.traceback
    assert "line 5, in <module>" in trace and "line 2, in f" in trace
    assert "kernel.py" not in trace and "return d['missing']" in trace


async def test_syntax_error_is_a_result(interpreter: CodeInterpreter) -> None:
    """Code that does not parse is reported with its line, not raised."""
    result = await interpreter.run("u", "c", "x = 1\nif x\n    pass")
    assert result.status == "error" and result.error and result.error.name == "SyntaxError"
    assert "line 2" in result.error.traceback


async def test_stderr_and_live_output(interpreter: CodeInterpreter) -> None:
    """stdout and stderr are captured apart, and output is forwarded while the code runs."""
    seen: list[tuple[str, str]] = []

    async def on_output(name: str, text: str) -> None:
        seen.append((name, text))

    result = await interpreter.run(
        "u", "c", "import sys\nprint('out')\nprint('err', file=sys.stderr)", on_output=on_output
    )
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert ("stdout", "out\n") in seen and ("stderr", "err\n") in seen


async def test_files_load_by_id_and_by_name(make_interpreter) -> None:
    """The user's uploads load with load_file by id or by name; FILES and list_files list
    them; the code sees nothing else in the files folder."""
    async with make_interpreter() as (interpreter, store):
        record = (
            await store.save("u", "sales.csv", chunks_of(b"region;amount\nn;10\ns;32\n"))
        ).record
        code = (
            f"df = load_file('{record.id}')\nsame = load_file('sales.csv')\n"
            "import os\nprint(sorted(os.listdir('/mnt/files')), list(FILES), "
            "[f['name'] for f in list_files()])\n"
            "int(df['amount'].sum()), same.equals(df)"
        )
        result = await interpreter.run("u", "c", code)
        assert result.status == "ok", result.error
        assert result.value == "(42, True)"
        assert f"['{record.id}'] ['{record.id}'] ['sales.csv']" in result.stdout
        missing = await interpreter.run("u", "c", "load_file('nope.csv')")
        assert missing.error and "sales.csv" in missing.error.message


async def test_written_files_and_figures_come_back_with_ids(make_interpreter) -> None:
    """A file the code writes (bare name, working dir) and an open figure are saved as the
    user's generated files; a figure saved explicitly is not sent twice."""
    async with make_interpreter() as (interpreter, store):
        code = (
            "import pandas as pd, matplotlib.pyplot as plt\n"
            "pd.DataFrame({'a': [1, 2]}).to_csv('result.csv', index=False)\n"
            "plt.plot([1, 2, 3]); plt.title('sales')\nplt.show()\n"
            "fig, ax = plt.subplots(); ax.bar(['x'], [1]); fig.savefig('bars.png')\n"
        )
        result = await interpreter.run("u", "c", code)
        assert result.status == "ok", result.error
        names = sorted(f.name for f in result.files)
        assert names == ["bars.png", "figure-1.png", "result.csv"]
        stored = {r.name: r for r in await store.list("u")}
        assert stored["result.csv"].source == "generated" and stored["result.csv"].kind == "csv"
        assert stored["figure-1.png"].kind == "image"
        data = b"".join([c async for c in store.read("u", stored["result.csv"].id)])
        assert data == b"a\n1\n2\n"
        again = await interpreter.run("u", "c", "print('nothing new')")
        assert again.files == ()  # unchanged files are not sent again


async def test_generated_files_obey_the_users_limits(make_interpreter) -> None:
    """An output over the per-file limit is not kept and the result says why."""
    async with make_interpreter(MAX_FILE_SIZE_MB=0.01) as (interpreter, store):
        result = await interpreter.run("u", "c", "open('big.bin', 'wb').write(b'x' * 50000)")
        assert result.files == ()
        assert result.skipped_files and result.skipped_files[0].name == "big.bin"
        assert await store.list("u") == []


async def test_reset_forgets_variables_and_keeps_files(make_interpreter) -> None:
    """reset ends the session: variables go, files stay."""
    async with make_interpreter() as (interpreter, store):
        await interpreter.run("u", "c", "x = 1\nopen('keep.txt', 'w').write('k')")
        assert await interpreter.reset("u", "c") is True
        result = await interpreter.run(
            "u", "c", "print(sorted(f['name'] for f in list_files()))\nx"
        )
        assert result.error and result.error.name == "NameError"
        assert "keep.txt" in result.stdout
        assert not result.session_restarted  # a reset the user asked for is not news


async def test_a_lost_session_is_reported_once(make_interpreter) -> None:
    """When the interpreter dies between executions, the next result says the session
    restarted (variables lost, files kept), and the one after does not. (Without checkpoints:
    with them the variables come back, tests/sandbox/test_checkpoints.py.)"""
    async with make_interpreter(SESSION_CHECKPOINT_MB=0) as (interpreter, _):
        await interpreter.run("u", "c", "x = 1")
        session = interpreter.sessions.sessions[("u", "c")]
        assert session.kernel.process is not None
        os.kill(session.kernel.process.pid, signal.SIGKILL)  # stopped between cells: still dies
        await session.kernel.process.wait()
        result = await interpreter.run("u", "c", "print('hi')")
        assert result.status == "ok" and result.session_restarted
        assert "variables" in result.notes[0] and "files are kept" in result.notes[0]
        assert not (await interpreter.run("u", "c", "1")).session_restarted


async def test_idle_sessions_end_and_say_why(make_interpreter) -> None:
    """A session idle past SESSION_IDLE_MINUTES is ended; the next result names the reason."""
    async with make_interpreter(SESSION_IDLE_MINUTES=0.002) as (interpreter, _):
        await interpreter.run("u", "c", "x = 1")
        dropped = interpreter.sessions.dropped
        async with asyncio.timeout(10):
            while ("u", "c") in interpreter.sessions.sessions:
                await dropped.wait()
                dropped.clear()
        result = await interpreter.run("u", "c", "x")
        assert result.session_restarted and "idle" in result.notes[0]


async def test_least_recently_used_session_goes_first(make_interpreter) -> None:
    """With MAX_SESSIONS=2 a third user's conversation ends the least recently used one."""
    async with make_interpreter(MAX_SESSIONS=2) as (interpreter, _):
        for user in ("a", "b"):
            await interpreter.run(user, "c", "x = 1")
        await interpreter.run("a", "c", "x")  # a is now the most recent
        await interpreter.run("n", "c", "x = 1")
        assert set(interpreter.sessions.sessions) == {("a", "c"), ("n", "c")}
        result = await interpreter.run("b", "c", "x")
        assert result.session_restarted and "room" in result.notes[0]


async def test_warm_pool_kernel_serves_one_user_only(make_interpreter) -> None:
    """A new session takes an already-started kernel from the pool; that kernel never returns
    to the pool, and after a reset it is gone."""
    async with make_interpreter(SANDBOX_WARM_POOL=1, SANDBOX_PRELOAD=True) as (interpreter, _):
        await interpreter.sessions.wait_for_pool()
        pooled = interpreter.sessions._pool[0]
        result = await interpreter.run("alice", "c", "import sys\n'pandas' in sys.modules")
        assert result.value == "True"
        assert interpreter.sessions.sessions[("alice", "c")].kernel is pooled
        await interpreter.sessions.wait_for_pool()
        assert pooled not in interpreter.sessions._pool
        await interpreter.reset("alice", "c")
        assert not pooled.alive and pooled not in interpreter.sessions._pool
        bob = await interpreter.run("bob", "c", "1")
        assert bob.status == "ok"
        assert interpreter.sessions.sessions[("bob", "c")].kernel is not pooled


async def test_per_user_executions_queue_and_users_run_side_by_side(make_interpreter) -> None:
    """One user's executions run one at a time (the second waits its turn); two users run at
    once."""
    code = "import time\nstart = time.time()\ntime.sleep(0.5)\n(start, time.time())"
    async with make_interpreter(MAX_CONCURRENT_EXECUTIONS=2) as (interpreter, _):
        same = await asyncio.gather(
            interpreter.run("u", "a", code), interpreter.run("u", "b", code)
        )
        spans = sorted(eval(r.value) for r in same)  # noqa: S307 - our own tuple repr
        assert spans[0][1] <= spans[1][0]
        await interpreter.run("v", "a", "1")  # both sessions warm before they race
        both = await asyncio.gather(
            interpreter.run("u", "a", code), interpreter.run("v", "a", code)
        )
        spans = sorted(eval(r.value) for r in both)  # noqa: S307
        assert spans[1][0] < spans[0][1]


@contextmanager
def bot_sigint(inherited: str) -> Iterator[None]:
    """The test process's (the bot's) SIGINT as given while the block runs: "default", or
    "ignored" (a job started in the background of a shell) or "blocked"; a child inherits it."""
    if inherited == "ignored":
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif inherited == "blocked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if inherited == "ignored":
            signal.signal(signal.SIGINT, before)
        elif inherited == "blocked":
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.parametrize("inherited", ["default", "ignored", "blocked"])
async def test_stop_interrupts_and_keeps_variables(make_interpreter, inherited: str) -> None:
    """stop() interrupts running code with KeyboardInterrupt; the session's variables stay,
    whatever SIGINT the bot had when the kernel started (an ignored one used to be inherited,
    and every stop then killed the session)."""
    with bot_sigint(inherited):
        async with make_interpreter() as (interpreter, _):
            await interpreter.run("u", "c", "x = 7")
            started = asyncio.Event()

            async def on_output(name: str, text: str) -> None:
                started.set()

            code = "print('go', flush=True)\nwhile True:\n    pass"
            task = asyncio.create_task(interpreter.run("u", "c", code, on_output=on_output))
            async with asyncio.timeout(20):
                await started.wait()
                assert await interpreter.stop("u", "c") is True
                result = await task
            assert result.status == "error" and result.error.name == "KeyboardInterrupt"
            assert (await interpreter.run("u", "c", "x")).value == "7"


async def test_module_outside_the_allowlist_names_the_allowlist(
    interpreter: CodeInterpreter,
) -> None:
    """Importing a module nobody allowed fails with a note naming the allow-list."""
    result = await interpreter.run("u", "c", "import surely_not_a_module_xyz")
    assert result.status == "error" and result.error.name == "ModuleNotFoundError"
    assert "allow-list" in result.notes[-1] and "scikit-learn" in result.notes[-1]


@pytest.fixture
def uninstall_tinydb(make_interpreter):
    """Keep the shared runtime as it was: tinydb is removed before and after the test."""
    from labbot.config import default_runtime_dir
    from labbot.sandbox.packages import _uv

    python = str(default_runtime_dir() / "bin" / "python")

    def uninstall() -> None:
        subprocess.run(
            [_uv(), "pip", "uninstall", "--quiet", "--python", python, "tinydb"],
            check=False,
            capture_output=True,
        )

    uninstall()
    yield
    uninstall()


async def test_allowed_package_installs_itself_on_import(make_interpreter, uninstall_tinydb):
    """An allow-listed package that is missing is installed into the runtime (outside the
    sandbox) and the code re-runs and succeeds; the result names the package."""
    async with make_interpreter(PACKAGE_ALLOWLIST="tinydb") as (interpreter, _):
        result = await interpreter.run("u", "c", "import tinydb\ntinydb.__name__")
        assert result.status == "ok", (result.error, result.notes)
        assert result.value == "'tinydb'" and result.packages_installed == ("tinydb",)


async def test_missing_bubblewrap_is_refused_with_the_fix(tmp_path, monkeypatch) -> None:
    """Without bwrap on PATH the interpreter refuses to start and names the fix."""
    from labbot.config import load_settings
    from labbot.sandbox.jail import Jail, SandboxLimits

    monkeypatch.setenv("PATH", str(tmp_path))
    settings = load_settings(LABBOT_DATA_DIR=tmp_path)
    with pytest.raises(SandboxUnavailable) as info:
        Jail(settings, SandboxLimits.from_settings(settings))
    assert "apt-get install bubblewrap" in str(info.value)
    assert "LABBOT_SANDBOX=off" in str(info.value)


async def test_sandbox_off_runs_code_with_a_loud_warning(make_interpreter, caplog) -> None:
    """LABBOT_SANDBOX=off (development only) still runs code and warns at start."""
    async with make_interpreter(LABBOT_SANDBOX="off") as (interpreter, _):
        result = await interpreter.run("u", "c", "open('o.txt', 'w').write('x')\n40 + 2")
        assert result.value == "42" and [f.name for f in result.files] == ["o.txt"]
    assert any("WITHOUT isolation" in r.getMessage() for r in caplog.records)


def test_labbot_exec_runs_through_the_whole_path(tmp_path: Path, monkeypatch) -> None:
    """`labbot exec` runs code in the sandbox with the user's files and prints JSON."""
    from click.testing import CliRunner

    from labbot.cli import cli

    monkeypatch.setenv("LABBOT_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "t.csv").write_text("a\n1\n2\n")
    runner = CliRunner()
    added = runner.invoke(
        cli, ["files", "add", str(tmp_path / "t.csv"), "-u", "9"], catch_exceptions=False
    )
    assert added.exit_code == 0
    result = runner.invoke(
        cli, ["exec", "-u", "9", "--json", "load_file('t.csv')['a'].sum()"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["value"] == "3"
    failing = runner.invoke(cli, ["exec", "-u", "9", "1/0"], catch_exceptions=False)
    assert failing.exit_code == 1 and "ZeroDivisionError" in failing.output


async def test_cjk_text_renders_in_plots(interpreter: CodeInterpreter) -> None:
    """A plot titled in Chinese and Japanese renders without missing-glyph warnings."""
    code = (
        "import warnings, matplotlib.pyplot as plt\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    plt.title('销售额 売上高'); plt.plot([1, 2])\n"
        "    plt.gcf().canvas.draw()\n"
        "[str(w.message) for w in caught if 'Glyph' in str(w.message)]"
    )
    result = await interpreter.run("u", "c", code)
    assert result.status == "ok", result.error
    assert result.value == "[]" and len(result.files) == 1 and result.stderr == ""


async def test_a_trailing_semicolon_hides_the_value(interpreter: CodeInterpreter) -> None:
    """As in notebooks, ending the code with ';' shows no value."""
    assert (await interpreter.run("u", "c", "1 + 1;")).value is None
    assert (await interpreter.run("u", "c", "1 + 1")).value == "2"


async def test_a_figure_that_cannot_render_is_an_error_not_a_lost_session(
    interpreter: CodeInterpreter,
) -> None:
    """Bad mathtext in a title fails at render time: an error result, variables kept."""
    await interpreter.run("u", "c", "x = 1")
    result = await interpreter.run(
        "u",
        "c",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.title(r'$x^$')\nprint('plotted')",
    )
    assert result.status == "error" and result.stdout == "plotted\n"
    assert (await interpreter.run("u", "c", "x")).value == "1"


async def test_processes_a_cell_starts_end_with_it(interpreter: CodeInterpreter) -> None:
    """A child process left spinning by a cell is gone before the next cell runs."""
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'while 1: pass'])\np.pid"
    )
    spinner = (await interpreter.run("u", "c", code)).value
    check = await interpreter.run("u", "c", f"import os\nos.path.exists('/proc/{spinner}')")
    assert check.value == "False"


async def test_a_deleted_files_copy_leaves_the_bots_blob_cache(make_interpreter) -> None:
    """With file contents elsewhere (here in memory, as with S3), the copy the sandbox read
    is removed from this machine's blob cache when the file is deleted."""
    async with make_interpreter(LABBOT_BLOB_URL="memory://") as (interpreter, store):
        saved = (await store.save("u", "notes.txt", chunks_of(b"kept secret"))).record
        result = await interpreter.run("u", "c", f"print(load_file({saved.id!r}))")
        assert result.stdout == "kept secret\n"
        copy = interpreter.settings.blob_cache_dir / "u" / saved.id
        assert copy.exists()
        await store.delete("u", saved.id)
        assert not copy.exists()


async def test_a_name_two_files_share_loads_the_newest(make_interpreter) -> None:
    """A corrected file uploaded again under the same name is the one load_file('name')
    reads (the older stays reachable by its id)."""
    async with make_interpreter() as (interpreter, store):
        old = (await store.save("u", "d.csv", chunks_of(b"a,b\n1,2\n"))).record
        await store.save("u", "d.csv", chunks_of(b"a,b\n100,200\n"))
        result = await interpreter.run("u", "c", "int(load_file('d.csv')['a'].sum())")
        assert result.value == "100", result
        result = await interpreter.run("u", "c", f"int(load_file({old.id!r})['a'].sum())")
        assert result.value == "1", result


async def test_kills_at_once_share_one_kill(make_interpreter) -> None:
    """A stop's escalation, the cell's reader and a reset may all kill one kernel at once:
    they share one kill (the cgroup's kept descriptors closed once, never written after),
    every caller returns, and the sandbox is gone."""
    async with make_interpreter() as (interpreter, _):
        assert (await interpreter.run("u", "c", "1")).status == "ok"
        kernel = interpreter.sessions.sessions[("u", "c")].kernel
        cgroup, workdir = kernel.cgroup, kernel.workdir
        async with asyncio.timeout(60):
            await asyncio.gather(*(kernel.kill() for _ in range(4)))
        assert not kernel.alive and not workdir.exists()
        if cgroup is not None:
            assert cgroup._kept == {}
            assert all(not Path(p).parent.exists() for p in cgroup.procs_files())
        await kernel.kill()  # and once more, later: nothing left to do, no error


async def test_a_kernel_being_killed_is_not_alive_from_the_first_step(make_interpreter) -> None:
    """From the kill's first step the kernel is not alive, so nothing hands it out while
    the kill (scheduled on its own) has not begun."""
    async with make_interpreter() as (interpreter, _):
        assert (await interpreter.run("u", "c", "1")).status == "ok"
        kernel = interpreter.sessions.sessions[("u", "c")].kernel
        kill = asyncio.create_task(kernel.kill())
        await asyncio.sleep(0)  # one loop step: the task's first step runs before this resumes
        assert not kernel.alive
        async with asyncio.timeout(60):
            await kill
