"""One host uid per live sandbox (issue 17, finding 3): sessions never share the kernel's
per-uid budgets, and a uid goes back to the range only once no process holds it.

With the bot unprivileged every sandbox runs as the bot's own uid (doctor says so): the tests
that need a uid per sandbox run as root only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from labbot.errors import SandboxUnavailable
from labbot.sandbox.jail.uids import UidRange, uids_with_processes
from tests.sandbox.test_attacks import host_uids

root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="unprivileged bot: one uid for every sandbox (doctor warns)"
)
# Each test leases from a range of its own, away from the default one other runs use.
TEST_BASE = 2_100_000_000

# What a victim checks in a fresh session: a cell runs and prints, a new pipe has the normal
# 64 KiB buffer, an fd passes over a unix socket, an epoll watch registers.
VICTIM = (
    "import fcntl, os, select, socket\n"
    "r, w = os.pipe()\n"
    "size = fcntl.fcntl(r, 1032)\n"  # F_GETPIPE_SZ
    "a, b = socket.socketpair()\n"
    "socket.send_fds(a, [b'x'], [r])\n"
    "passed = socket.recv_fds(b, 1, 1)[1]\n"
    "ep = select.epoll()\n"
    "ep.register(w, select.EPOLLOUT)\n"
    "print('victim', size, len(passed), len(ep.poll(1)))\n"
)

# Each attack prints what it did, with the proof that it bit (its own uid's budget is spent)
# where the budget is small enough to spend, then holds what it took in a running cell (a cell's
# processes end with it) while the victim runs.
ATTACKS = {
    "pipe pages": (
        # Idle pipes of 16 pages each past the uid's soft limit (growing one is refused by
        # seccomp), held by forked children: one process may open only 512 files.
        "import fcntl, os, signal\n"
        "soft = int(open('/proc/sys/fs/pipe-user-pages-soft').read())\n"
        "kids = []\n"
        "for _ in range(soft // 16 // 400 + 2):\n"
        "    ends = []\n"
        "    for _ in range(400):\n"
        "        r, w = os.pipe()\n"
        "        os.close(w)\n"
        "        ends.append(r)\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        while True:\n"
        "            signal.pause()\n"
        "    kids.append(pid)\n"
        "    for r in ends:\n"
        "        os.close(r)\n"
        "r, w = os.pipe()\n"
        "print('attacker', fcntl.fcntl(r, 1032), flush=True)\n"
    ),
    "fds in flight": (
        "import errno, os, socket\n"
        "a, b = socket.socketpair()\n"
        "fd = os.open('/dev/null', os.O_RDONLY)\n"
        "refused = 0\n"
        "for _ in range(8):\n"  # never received: 250 fds in flight per message
        "    try:\n"
        "        socket.send_fds(a, [b'x'], [fd] * 250)\n"
        "    except OSError as exc:\n"
        "        refused = exc.errno\n"
        "        break\n"
        "print('attacker', refused == errno.ETOOMANYREFS, flush=True)\n"
    ),
    "epoll watches": (
        "import select, socket\n"
        "socks = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(200)]\n"
        "polls = [select.epoll() for _ in range(200)]\n"
        "for p in polls:\n"
        "    for s in socks:\n"
        "        p.register(s, select.EPOLLIN)\n"
        "print('attacker', len(polls) * len(socks), flush=True)\n"
    ),
    "processes": (
        "import os, signal\n"
        "kids = []\n"
        "try:\n"
        "    while len(kids) < 1000:\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            while True:\n"
        "                signal.pause()\n"
        "        kids.append(pid)\n"
        "except OSError:\n"
        "    pass\n"
        "print('attacker', len(kids) > 10, flush=True)\n"
    ),
    "inotify": (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('attacker', libc.inotify_init1(0) == -1, flush=True)\n"  # refused outright (seccomp)
    ),
}
PROOF = {
    "pipe pages": lambda out: int(out) < 65536,
    "fds in flight": lambda out: out == "True",
    "epoll watches": lambda out: int(out) == 40000,
    "processes": lambda out: out == "True",
    "inotify": lambda out: out == "True",
}


def kernel_uid(interpreter, user: str, conversation: str) -> int:
    """The host uid of a session's kernel, read from the host's /proc."""
    kernel = interpreter.sessions.sessions[(user, conversation)].kernel
    (uid,) = host_uids(kernel.process.pid)
    return uid


@root_only
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_an_attack_on_per_uid_budgets_leaves_another_user_working(
    make_interpreter, attack: str
) -> None:
    """One session spends a per-uid kernel budget and keeps it; another user's new session
    still starts, prints, gets a 64 KiB pipe, passes an fd and registers an epoll watch."""
    async with make_interpreter(
        CODE_EXECUTION_TIMEOUT=30, SANDBOX_MEMORY_MB=384, SANDBOX_UID_BASE=TEST_BASE
    ) as (interpreter, _):
        printed: list[str] = []
        holding = asyncio.Event()

        async def on_output(stream: str, text: str) -> None:
            printed.append(text)
            holding.set()

        code = ATTACKS[attack] + "import time\ntime.sleep(60)\n"
        attacker = asyncio.create_task(interpreter.run("attacker", "c", code, on_output=on_output))
        try:
            await asyncio.wait_for(holding.wait(), 30)
            word, _, out = "".join(printed).strip().partition(" ")
            assert word == "attacker" and PROOF[attack](out), printed
            victim = await interpreter.run("victim", "c", VICTIM)
            assert victim.status == "ok", victim.error
            assert victim.stdout == "victim 65536 1 1\n"
            attacker_uid = kernel_uid(interpreter, "attacker", "c")
            assert kernel_uid(interpreter, "victim", "c") != attacker_uid
        finally:
            attacker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attacker


@root_only
async def test_live_sandboxes_have_distinct_host_uids(make_interpreter) -> None:
    """Two sessions of one bot, a warm-pool kernel and a session of a second labbot process on
    the same range (a CLI beside the bot) each run as their own uid from the range: never 0,
    never the bot's."""
    settings = {"SANDBOX_UID_BASE": TEST_BASE + 100, "SANDBOX_UID_COUNT": 20}
    async with (
        make_interpreter(SANDBOX_WARM_POOL=1, **settings) as (bot, _),
        make_interpreter(**settings) as (cli, _),
    ):
        for user in ("a", "b"):
            assert (await bot.run(user, "c", "1")).value == "1"
        assert (await cli.run("a", "c", "1")).value == "1"
        uids = [kernel_uid(bot, "a", "c"), kernel_uid(bot, "b", "c"), kernel_uid(cli, "a", "c")]
        async with asyncio.timeout(60):  # the taken kernel is replaced after a first cell
            await bot.sessions.wait_for_pool()
        uids += [u for k in bot.sessions._pool for u in host_uids(k.process.pid)]
        assert len(uids) == 4 and len(set(uids)) == 4, uids
        assert all(TEST_BASE + 100 <= uid < TEST_BASE + 120 for uid in uids), uids
        assert uids_with_processes(TEST_BASE + 100, TEST_BASE + 120) == set(uids)


def _straggler(uid: int) -> subprocess.Popen[bytes]:
    """A host process holding ``uid``, as a previous session's survivor would. Returns once
    the process runs as ``uid`` (it says so after setpriv switched), not merely once started."""
    process = subprocess.Popen(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        + ["sh", "-c", "echo ready; exec sleep 600"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline() == b"ready\n"
    assert uid in uids_with_processes(uid, uid + 1)
    return process


@root_only
async def test_a_uid_is_not_reused_while_a_process_holds_it(make_interpreter) -> None:
    """A uid some host process holds is skipped, and one whose session ended while a process
    still held it stays out of use until that process is gone; with every uid held, a new
    sandbox is refused with a sentence."""
    base = TEST_BASE + 200
    async with make_interpreter(SANDBOX_UID_BASE=base, SANDBOX_UID_COUNT=2, MAX_SESSIONS=2) as (
        interpreter,
        _,
    ):
        held = _straggler(base)
        try:
            await interpreter.run("a", "c", "1")
            assert kernel_uid(interpreter, "a", "c") == base + 1  # base is held
            survivor = _straggler(base + 1)  # outlives session a
            try:
                assert await interpreter.sessions.reset("a", "c")
                with pytest.raises(SandboxUnavailable, match="Every uid of the sandbox range"):
                    await interpreter.run("b", "c", "1")
            finally:
                survivor.kill()
                survivor.wait()
            await interpreter.run("b", "c", "1")
            assert kernel_uid(interpreter, "b", "c") == base + 1
        finally:
            held.kill()
            held.wait()


def test_the_range_never_holds_root_a_user_or_too_few_uids(tmp_path: Path) -> None:
    """The range is refused, naming the fix, when it holds uid 0, the bot's uid or a user of
    /etc/passwd, or has fewer uids than sandboxes that may live at once."""
    user = next(e for e in pwd.getpwall() if e.pw_uid not in (0, os.geteuid()))

    def problem(base: int, count: int, needed: int = 1) -> str:
        with pytest.raises(SandboxUnavailable) as info:
            UidRange(base, count, fallback_locks=tmp_path).check(needed)
        return str(info.value)

    assert "out of bounds" in problem(0, 10)
    assert "bot's own uid" in problem(os.geteuid(), 1) or os.geteuid() == 0
    assert f"holds the uid of the user {user.pw_name!r}" in problem(user.pw_uid, 1)
    assert "fewer than the 18 sandboxes" in problem(TEST_BASE, 17, needed=18)
    UidRange(TEST_BASE, 18, fallback_locks=tmp_path).check(18)


@root_only
async def test_uids_go_back_to_the_range(make_interpreter) -> None:
    """Sessions started and closed many times over a range of two never run out: each uid is
    given back once its sandbox is gone."""
    base = TEST_BASE + 300
    async with make_interpreter(SANDBOX_UID_BASE=base, SANDBOX_UID_COUNT=2, MAX_SESSIONS=2) as (
        interpreter,
        _,
    ):
        for i in range(6):
            assert (await interpreter.run("a", f"c{i}", "1")).value == "1"
            assert await interpreter.sessions.reset("a", f"c{i}")
        assert interpreter.jail.user is not None and interpreter.jail.user.in_use() == 0
