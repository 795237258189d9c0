"""The attacks of the sandbox-escape review (issue 11), each really attempted from inside the
sandbox: host root through the kernel's interfaces, the shared runtime, unsized folders, work
between cells, forged frames, output floods and the smaller leaks. Run as root (cgroups) and,
through test_unprivileged.py, as an unprivileged bot (no cgroups)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from labbot.config import MIB
from labbot.sandbox.interpreter import session_capacity
from labbot.sandbox.jail import memory_available
from tests.conftest import chunks_of

# Reaches the kernel's own channel as user code can (it shares the process: load_file is the
# kernel's bound method; gc.get_objects() no longer lists it, as the preload is frozen), and
# sends frames.
FORGE = "kernel = load_file.__self__\nchannel = kernel.channel\ncell = kernel.streams.cell\n"


def host_uids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of a process and its descendants."""
    uids: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        line = next(x for x in status.splitlines() if x.startswith("Uid:"))
        uids |= {int(v) for v in line.split()[1:]}
        todo += [int(c) for c in children]
    return uids


async def test_attack1_sandbox_is_never_host_root(jailed) -> None:
    """Writing a global sysctl (core_pattern, its own value), reading root-only /proc files, and
    every process of the sandbox: none of it is host uid 0."""
    interpreter, _ = jailed
    code = (
        "import os\nresults = {}\n"
        "for path in ['/proc/sys/kernel/core_pattern', '/proc/sys/vm/overcommit_memory',"
        " '/proc/sys/vm/panic_on_oom']:\n"
        "    try:\n        value = open(path).read()\n"
        "        open(path, 'w').write(value)\n        results[path] = 'WROTE'\n"
        "    except OSError as exc:\n        results[path] = exc.errno\n"
        "for path in ['/proc/kpageflags', '/proc/slabinfo', '/proc/vmallocinfo',"
        " '/proc/sysrq-trigger']:\n"
        "    try:\n        open(path, 'rb').read(16)\n        results[path] = 'READ'\n"
        "    except OSError as exc:\n        results[path] = exc.errno\n"
        "results"
    )
    result = await interpreter.run("u", "c", code)
    assert result.status == "ok", result.error
    outcomes = eval(result.value)  # noqa: S307 - our own dict repr
    assert set(outcomes) and not {"WROTE", "READ"} & set(outcomes.values()), outcomes
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    inside = host_uids(kernel.process.pid)
    assert inside and 0 not in inside, inside


async def test_attack2_a_fake_import_error_changes_nothing(jailed) -> None:
    """Raising ModuleNotFoundError for a module that is installed, or one that is not on the
    allow-list (keras is not, by default), installs nothing."""
    interpreter, _ = jailed
    runtime = interpreter.installer.venv
    before = sorted(p.name for p in runtime.glob("lib/python3*/site-packages/*"))
    for name in ("numpy", "keras"):
        result = await interpreter.run("u", "c", f"raise ModuleNotFoundError('no', name={name!r})")
        assert result.status == "error" and not result.packages_installed
    notes = " ".join(result.notes)
    assert "allow-list" in notes
    numpy = await interpreter.run("u", "c", "raise ModuleNotFoundError('x', name='numpy')")
    assert "is installed" in " ".join(numpy.notes)
    assert sorted(p.name for p in runtime.glob("lib/python3*/site-packages/*")) == before


async def test_attack3_no_folder_takes_more_than_the_disk_limit(jailed) -> None:
    """Every folder is read-only or a tmpfs of SANDBOX_DISK_MB (64 here): writing 8 MiB files
    until 160 MiB into each stops at the limit (the per-file limit stops one file, not a
    folder), and the root, /etc, /opt, /root, /usr and /dev take nothing."""
    interpreter, _ = jailed
    code = (
        "import os\nwritten = {}\n"
        "for folder in ['/', '/etc', '/opt', '/root', '/usr', '/dev', '/dev/shm', '/tmp',"
        " '/mnt/data', '/mnt/files']:\n"
        "    total, paths = 0, []\n"
        "    try:\n"
        "        for i in range(20):\n"
        "            path = os.path.join(folder, f'fill{i}.bin')\n            paths.append(path)\n"
        "            with open(path, 'wb') as f:\n"
        "                for _ in range(8):\n"
        "                    f.write(b'\\0' * 2**20)\n                    total += 2**20\n"
        "    except OSError:\n        pass\n"
        "    written[folder] = total // 2**20\n"
        "    for path in paths:\n"
        "        try:\n            os.remove(path)\n        except OSError:\n            pass\n"
        "written"
    )
    result = await interpreter.run("u", "c", code)
    assert result.status == "ok", result.error
    written = eval(result.value)  # noqa: S307
    assert all(mib <= 64 for mib in written.values()), written
    for folder in ("/", "/etc", "/opt", "/root", "/usr", "/dev", "/mnt/files"):
        assert written[folder] == 0, written


async def test_attack4_nothing_runs_between_cells(jailed) -> None:
    """A daemon thread that spins after its cell returns gets no CPU until the next cell (the
    sandbox's processes are stopped); the session and its variables stay."""
    interpreter, _ = jailed
    code = (
        "import os, threading\ndef spin():\n    while True:\n        pass\n"
        "threading.Thread(target=spin, daemon=True).start()\nkeep = 1\n'started'"
    )
    assert (await interpreter.run("u", "c", code)).value == "'started'"
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    await kernel.settled()  # parked, or every process seen stopped
    before = await asyncio.to_thread(kernel.cpu_seconds)
    await asyncio.sleep(1.0)  # a measuring window, not a synchronisation
    used = await asyncio.to_thread(kernel.cpu_seconds) - before
    assert used < 0.05, used
    after = await interpreter.run("u", "c", "print(keep)")
    assert after.stdout == "1\n" and not after.session_restarted


async def test_attack4_sessions_per_user_are_capped(jailed) -> None:
    """One user with three conversations holds two live sessions (MAX_SESSIONS_PER_USER); the
    conversation that lost its session is told why."""
    interpreter, _ = jailed
    for conversation in ("a", "b", "c"):
        await interpreter.run("hog", conversation, "x = 1")
    assert sorted(k for k in interpreter.sessions.sessions if k[0] == "hog") == [
        ("hog", "b"),
        ("hog", "c"),
    ]
    result = await interpreter.run("hog", "a", "x")
    assert result.session_restarted and "at most 2 live sessions" in result.notes[0]


async def test_attack4_memory_admission(make_interpreter) -> None:
    """The sum of session memory limits never exceeds the budget: with room for two 256 MiB
    sessions, a third user's session takes the least recently used place, and a user who holds
    one already cannot take another user's last session."""
    assert session_capacity(_settings(SANDBOX_MEMORY_MB=2048)) * 2048 * MIB <= memory_available()
    async with make_interpreter(SANDBOX_MEMORY_MB=256, SANDBOX_MEMORY_BUDGET_MB=512) as (
        interpreter,
        _,
    ):
        interpreter.sessions.room_wait = 0.5  # no one will finish: do not wait long
        for user in ("a", "b", "c"):
            await interpreter.run(user, "one", "x = 1")
            assert interpreter.sessions.kernels <= 2
        assert {k[0] for k in interpreter.sessions.sessions} == {"b", "c"}
        refused = await interpreter_error(interpreter, "c", "two")
        assert "room for is busy" in refused


def _settings(**overrides):
    from labbot.config import load_settings

    return load_settings(**overrides)


async def interpreter_error(interpreter, user: str, conversation: str) -> str:
    """The message of the SandboxUnavailable a run raises."""
    from labbot.errors import SandboxUnavailable

    with pytest.raises(SandboxUnavailable) as info:
        await interpreter.run(user, conversation, "1")
    return str(info.value)


@pytest.mark.parametrize(
    "forged",
    [
        "for _ in range(2000):\n"
        "    channel.send({'type': 'stream', 'cell': cell, 'name': 'stdout', 'text': 'A' * 30000})",
        "channel.send({'type': 'result', 'cell': cell, 'status': 'ok', 'error': None,"
        " 'value': None, 'stdout': ['x'], 'stderr': '', 'duration': 0, 'files': [],"
        " 'skipped': [], 'more_skipped': 0, 'missing_module': None})",
        "channel.send({'type': 'result', 'cell': cell, 'status': 'error', 'error': {'name': 'E',"
        " 'message': 'm', 'traceback': 'T' * 300000}, 'value': None, 'stdout': '', 'stderr': '',"
        " 'duration': 0, 'files': [], 'skipped': [], 'more_skipped': 0, 'missing_module': None})",
        "channel.send({'type': 'result', 'cell': cell, 'status': 'timeout', 'error': None,"
        " 'value': None, 'stdout': '', 'stderr': '', 'duration': 0, 'files': [], 'skipped': [],"
        " 'more_skipped': 0, 'missing_module': None})",
        "channel.send({'type': 'file', 'name': 'big.bin', 'size': '12'})",
        "import io\nfor i in range(60):\n"
        "    channel.send_file(f'f{i}.bin', io.BytesIO(b'x' * 10).read, 10)",
        "import protocol\nwith channel.lock:\n"
        "    protocol.write_all(channel.fd, protocol.encode_json("
        "{'type': 'file', 'name': 'huge.bin', 'size': 10}))\n"
        "    for _ in range(400):\n"
        "        protocol.write_all(channel.fd, protocol.encode_bytes(b'x' * 2**18))\n"
        "    protocol.write_all(channel.fd, protocol.encode_json({'type': 'file_end'}))",
    ],
    ids=["live-flood", "stdout-list", "huge-traceback", "timeout-no-error", "size-string",
         "too-many-files", "bytes-beyond-size"],
)  # fmt: skip
async def test_attack5_forged_frames_end_only_that_session(jailed, forged: str) -> None:
    """Frames sent by user code through the kernel's own channel, beyond what an honest kernel
    sends, end the attacker's session with a clear result: never an exception out of run, never
    more than the limits on the host."""
    interpreter, store = jailed
    seen: list[str] = []

    async def on_output(name: str, text: str) -> None:
        seen.append(text)

    result = await interpreter.run("attacker", "c", FORGE + forged, on_output=on_output)
    assert result.status == "killed", result
    assert "sent something it must not" in result.error.message
    assert sum(map(len, seen)) <= interpreter.limits.output_head
    assert len(json.dumps(result.to_json())) < 100_000
    assert len(await store.list("attacker")) <= interpreter.limits.max_output_files
    again = await interpreter.run("attacker", "c", "print('again')")
    assert again.stdout == "again\n"


async def test_attack7_output_files_are_capped(jailed) -> None:
    """20,000 files in /mnt/data come back as at most SANDBOX_MAX_OUTPUT_FILES (50), the rest
    counted in one note; the result stays small."""
    interpreter, store = jailed
    code = "for i in range(20000):\n    open(f'f{i:05}.txt', 'w').close()\n"
    result = await interpreter.run("u", "c", code)
    assert result.status == "ok", result.error
    assert len(result.files) + len(result.skipped_files) <= 100
    assert len(result.files) <= 50 and len(await store.list("u")) <= 50
    assert any("more files were not returned" in note for note in result.notes)
    assert len(json.dumps(result.to_json())) < 60_000


async def test_attack8_mountinfo_names_no_bot_pid_user_or_conversation(jailed) -> None:
    """The sandbox's mount table names its folders neutrally: not the bot's pid, nor the user
    or conversation ids."""
    interpreter, _ = jailed
    result = await interpreter.run(
        "user-4242", "conv-777", "print(open('/proc/self/mountinfo').read())"
    )
    assert result.status == "ok", result.error
    for secret in (f"/{os.getpid()}-", "user-4242", "conv-777"):
        assert secret not in result.stdout


@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt()"])
async def test_attack8_repr_raising_base_exceptions_is_an_error(jailed, raised: str) -> None:
    """A value whose __repr__ raises SystemExit or KeyboardInterrupt is reported as that error;
    the session and its variables stay."""
    interpreter, _ = jailed
    code = f"keep = 5\nclass Evil:\n    def __repr__(self):\n        raise {raised}\nEvil()"
    result = await interpreter.run("u", "c", code)
    assert result.status == "error" and result.error.name == raised.split("(")[0]
    after = await interpreter.run("u", "c", "keep")
    assert after.value == "5" and not after.session_restarted


async def test_attack8_undecodable_names_and_surrogates_do_not_end_the_kernel(jailed) -> None:
    """An output file whose name is not UTF-8 and a value holding a lone surrogate come back
    (replaced), without ending the session."""
    interpreter, _ = jailed
    code = "open(b'bad\\xff.txt', 'wb').write(b'1')\nraise ValueError('\\udc80')"
    result = await interpreter.run("u", "c", code)
    assert result.status == "error" and result.error.name == "ValueError", result
    assert len(result.files) == 1 and not result.session_restarted
    assert (await interpreter.run("u", "c", "1")).value == "1"


async def test_outputs_within_limits_still_arrive(jailed) -> None:
    """The limits do not bite honest work: 50 files, a plot and live output all come back."""
    interpreter, store = jailed
    await store.save("u", "in.csv", chunks_of(b"a\n1\n"))
    code = (
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
        "for i in range(49):\n    open(f'o{i}.txt', 'w').write(str(i))\nprint('done')\n"
    )
    result = await interpreter.run("u", "c", code)
    assert result.status == "ok" and result.stdout == "done\n"
    assert len(result.files) == 50 and not result.skipped_files
