"""Checkpoints of a session's variables on the real sandbox and the real file store: saved after
each cell inside the sandbox, restored when a conversation's session is gone (lost, killed, a
bot killed with SIGKILL), never listed as files, counted in the quota, deleted by /reset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labbot.files import FileStore
from labbot.sandbox import CodeInterpreter
from labbot.sandbox.checkpoints import conversation_tag
from tests.conftest import Factory

REPO = Path(__file__).resolve().parents[2]
MAKE_DF = (
    "import pandas as pd\n"
    "df = pd.DataFrame({'n': range(2000), 'word': [f'w{i % 7}' for i in range(2000)]})\n"
    "df['x'] = df['n'] * 0.5\n"
)
SAME_DF = (
    "df.equals(pd.DataFrame({'n': range(2000), 'word': [f'w{i % 7}' for i in range(2000)],"
    " 'x': [i * 0.5 for i in range(2000)]}))"
)


async def pieces(store: FileStore, user: str, conversation: str) -> dict[str, str]:
    """The conversation's checkpoint pieces in the store: variable → record id."""
    prefix = conversation_tag(conversation) + "."
    return {
        r.name[len(prefix) : -len(".ckpt")]: r.id
        for r in await store.records(user)
        if r.source == "checkpoint" and r.name.startswith(prefix)
    }


async def lose_session(interpreter: CodeInterpreter, user: str, conversation: str) -> None:
    """The session's sandbox dies (as on an out-of-memory kill or a lost worker)."""
    await interpreter.sessions.sessions[(user, conversation)].kernel.kill()


async def test_a_lost_session_comes_back_with_its_variables(make_interpreter: Factory) -> None:
    """After the session dies, the next execution finds the DataFrame equal to the one before,
    aliases still aliases, a function that sees the live namespace, the imports re-run, and
    the user is told what came back and what could not (the connection, the generator)."""
    async with make_interpreter(CODE_EXECUTION_TIMEOUT=60) as (interpreter, store):
        code = (
            MAKE_DF + "import sqlite3\nconn = sqlite3.connect(':memory:')\nalias = df\n"
            "scale = 2\ndef total(k):\n    return df['n'].sum() * scale + k\n"
            "gen = (i for i in range(3))\nhandle = open('/tmp/x.txt', 'w')\n"
        )
        first = await interpreter.run("u1", "c1", code)
        assert first.status == "ok", first
        assert any("conn (sqlite3.Connection)" in n and "gen (generator)" in n for n in first.notes)
        assert any("handle (_io.TextIOWrapper)" in n for n in first.notes), first.notes
        await lose_session(interpreter, "u1", "c1")
        after = await interpreter.run(
            "u1", "c1", f"print({SAME_DF}, alias is df, pd.__name__)\nscale = 3\ntotal(1)"
        )
        assert after.status == "ok", after
        assert after.stdout == "True True pandas\n"
        assert after.value == str(sum(range(2000)) * 3 + 1)  # the live `scale`, not a copy
        assert after.session_restarted
        note = next(n for n in after.notes if "restored" in n)
        assert note.startswith(
            "The session was restarted because the session was closed: restored 6 variables"
            " (alias, df, pd, scale, sqlite3, total); not restored: conn (sqlite3.Connection),"
        ), note
        assert "not restored: " in note and "conn (sqlite3.Connection)" in note, note


async def test_checkpoints_are_incremental_hidden_counted_and_reset(
    make_interpreter: Factory,
) -> None:
    """A cell that touches nothing writes nothing; a cell that mutates a variable in place
    (same object) writes that one again; one that rebinds a small one to equal bytes does
    not; pieces are no files (list, get) but count in the quota; /reset deletes them."""
    async with make_interpreter(CODE_EXECUTION_TIMEOUT=60) as (interpreter, store):
        await interpreter.run("u1", "c1", "rows = [1, 2]\nother = {'k': 1}")
        before = await pieces(store, "u1", "c1")
        assert set(before) == {"rows", "other"}
        result = await interpreter.run("u1", "c1", "1 + 1")
        assert result.value == "2" and await pieces(store, "u1", "c1") == before
        await interpreter.run("u1", "c1", "rows.append(3)")
        now = await pieces(store, "u1", "c1")
        assert now["rows"] != before["rows"] and now["other"] == before["other"]
        # A small variable bound again to equal bytes is compared, not stored again.
        await interpreter.run("u1", "c1", "other = {'k': 1}")
        assert (await pieces(store, "u1", "c1"))["other"] == before["other"]
        assert await store.list("u1") == []
        from labbot.errors import FileNotFound

        with pytest.raises(FileNotFound):
            await store.get("u1", now["rows"])
        total = sum(r.size for r in await store.records("u1"))
        assert total > 0
        await lose_session(interpreter, "u1", "c1")
        assert (await interpreter.run("u1", "c1", "rows")).value == "[1, 2, 3]"
        await interpreter.reset("u1", "c1")
        assert await pieces(store, "u1", "c1") == {}
        fresh = await interpreter.run("u1", "c1", "'rows' in globals()")
        assert fresh.value == "False" and not any("restored" in n for n in fresh.notes)


async def test_a_checkpoint_over_the_cap_is_not_kept_and_said_once(
    make_interpreter: Factory,
) -> None:
    """A variable that would take the checkpoint past SESSION_CHECKPOINT_MB is not kept; the
    result says so once, not at every cell."""
    async with make_interpreter(SESSION_CHECKPOINT_MB=1) as (interpreter, store):
        first = await interpreter.run("u1", "c1", "big = bytes(2 * 1024 * 1024)\nsmall = 1")
        assert any("big (bytes: over the 1 MiB" in n for n in first.notes), first.notes
        second = await interpreter.run("u1", "c1", "big[:1]")
        assert not any("big" in n for n in second.notes), second.notes
        assert set(await pieces(store, "u1", "c1")) == {"small", "+session"}  # big: not kept


DRIVER = """
import asyncio, sys
from labbot.app import open_app
from labbot.config import load_settings

async def main():
    async with open_app(load_settings()) as app:
        result = await app.executor.run("42", "analysis", sys.argv[1])
        print(result.status, flush=True)
        await asyncio.Event().wait()  # until killed

asyncio.run(main())
"""


@pytest.mark.timeout(180)
def test_a_conversation_survives_kill_9_of_the_bot(tmp_path: Path) -> None:
    """The bot process is killed with SIGKILL after a cell made ``df``; the next process (the
    `labbot exec` CLI, on the same data dir) restores it, equal to the one before."""
    env = {
        **os.environ,
        "LABBOT_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_WARM_POOL": "0",
        "CODE_EXECUTION_TIMEOUT": "60",
    }
    bot = subprocess.Popen(
        [sys.executable, "-c", DRIVER, MAKE_DF],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert bot.stdout is not None
        assert bot.stdout.readline().strip() == "ok"
    finally:
        bot.send_signal(signal.SIGKILL)
        bot.wait(30)
        if bot.stdout is not None:
            bot.stdout.close()
    labbot = str(Path(sys.executable).with_name("labbot"))
    done = subprocess.run(
        [labbot, "exec", "--user", "42", "--session", "analysis", "--json", SAME_DF],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["value"] == "True", data
    assert data["notes"][0] == (
        "The session was restarted: restored 2 variables (df, pd). Files are kept."
    )


async def test_a_change_through_a_session_function_is_saved(make_interpreter: Factory) -> None:
    """A cell that only calls a function of the session changes what the function reaches
    (`df`, named only inside it): that variable is written again."""
    async with make_interpreter(CODE_EXECUTION_TIMEOUT=60) as (interpreter, store):
        code = "data = {'n': [1, 2]}\ndef bump():\n    data['n'].append(3)\n"
        await interpreter.run("u1", "c1", code)
        before = await pieces(store, "u1", "c1")
        await interpreter.run("u1", "c1", "bump()")
        assert (await pieces(store, "u1", "c1"))["data"] != before["data"]
        await lose_session(interpreter, "u1", "c1")
        assert (await interpreter.run("u1", "c1", "data['n']")).value == "[1, 2, 3]"


async def test_a_restore_that_ends_the_session_is_not_tried_again(
    make_interpreter: Factory,
) -> None:
    """A variable whose unpickling kills the interpreter: the next execution says the saved
    variables could not be restored (the code did not run), and the one after runs in a fresh
    session without trying again."""
    async with make_interpreter(CODE_EXECUTION_TIMEOUT=60) as (interpreter, store):
        code = (
            "class Bomb:\n    def __reduce__(self):\n        import os\n"
            "        return (os._exit, (3,))\nbomb = Bomb()\nsafe = 1"
        )
        assert (await interpreter.run("u1", "c1", code)).status == "ok"
        await lose_session(interpreter, "u1", "c1")
        failed = await interpreter.run("u1", "c1", "print('ran')")
        assert failed.status == "killed" and "ran" not in failed.stdout
        assert (
            "could not be restored" in failed.notes[0] and "not be tried again" in failed.notes[0]
        )
        after = await interpreter.run("u1", "c1", "'bomb' in globals()")
        assert after.status == "ok" and after.value == "False", after
        # The pieces that could not come back are deleted, not kept to fail again.
        assert set(await pieces(store, "u1", "c1")) == set()
