"""Each row of the attack checklist (code-interpreter anchors §D.1, rows 1-18), really attempted
from inside the sandbox. The host and other users' sessions must stay responsive through each."""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import socket
import uuid
import zipfile
from pathlib import Path

import pytest

from labbot.errors import SandboxUnavailable
from labbot.sandbox import CodeInterpreter
from tests.conftest import chunks_of
from tests.sandbox.conftest import FAKE_KEY, FAKE_TOKEN


def processes_running(marker: str) -> list[str]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


async def still_responsive(interpreter: CodeInterpreter) -> None:
    """Another user's session answers while (or right after) an attack runs."""
    async with asyncio.timeout(60):
        result = await interpreter.run("bystander", "c", "print('alive')")
    assert result.stdout == "alive\n"


async def test_row1_no_secrets_in_the_environment(jailed) -> None:
    """The bot's secrets are in its own environment but not in the sandbox's."""
    interpreter, _ = jailed
    assert os.environ["DISCORD_TOKEN"] == FAKE_TOKEN
    result = await interpreter.run(
        "u",
        "c",
        "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())"
        "\nprint(open('/proc/1/environ').read())",
    )
    assert result.status == "ok", result.error
    for secret in (FAKE_TOKEN, FAKE_KEY, "DISCORD", "OPENAI"):
        assert secret not in result.stdout


async def test_row2_no_host_files(jailed, tmp_path: Path) -> None:
    """The bot's .env, its database, its home, /etc/shadow and the host's processes are not
    reachable from inside."""
    interpreter, store = jailed
    env_file = tmp_path / ".env"
    env_file.write_text(f"DISCORD_TOKEN={FAKE_TOKEN}\n")
    targets = [
        str(env_file),
        str(store.meta.path),
        "/etc/shadow",
        "/root/.bashrc",
        str(Path(__file__)),
        f"/proc/{os.getpid()}/environ",
    ]
    code = (
        f"import os\nfor path in {targets!r}:\n"
        "    try:\n        print(path, 'READ', open(path, 'rb').read(40))\n"
        "    except OSError as exc:\n        print(path, 'DENIED', type(exc).__name__)\n"
        "print(sorted(os.listdir('/')))\n"
    )
    result = await interpreter.run("u", "c", code)
    assert "READ" not in result.stdout and FAKE_TOKEN not in result.stdout
    assert result.stdout.count("DENIED") == len(targets)
    top = result.stdout.strip().splitlines()[-1]
    assert "'home'" not in top and "'work'" not in top and "'var'" not in top


async def test_row3_other_users_files_are_invisible(jailed) -> None:
    """Another user's file is neither listed nor readable, by id, by name or by host path."""
    interpreter, store = jailed
    victim = (await store.save("victim", "payroll.csv", chunks_of(b"name,salary\nx,1\n"))).record
    await store.save("attacker", "mine.csv", chunks_of(b"a\n1\n"))
    code = (
        "import os\nprint(os.listdir('/mnt/files'), list(FILES))\n"
        f"for key in ({victim.id!r}, 'payroll.csv'):\n"
        "    try:\n        load_file(key)\n        print('LOADED')\n"
        "    except Exception as exc:\n        print('refused', type(exc).__name__)\n"
        f"for path in ({str(store.path(victim))!r}, '/mnt/files/{victim.id}'):\n"
        "    print(os.path.exists(path))\n"
    )
    result = await interpreter.run("attacker", "c", code)
    assert victim.id not in result.stdout.splitlines()[0]
    assert "LOADED" not in result.stdout and result.stdout.count("refused") == 2
    assert result.stdout.count("False") == 2


async def test_row4_no_view_or_ptrace_of_other_processes(jailed) -> None:
    """Only the sandbox's own processes are visible, and ptrace is refused."""
    interpreter, _ = jailed
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print(pids)\nprint(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"  # PTRACE_ATTACH
    )
    result = await interpreter.run("u", "c", code)
    pids = eval(result.stdout.splitlines()[0])  # noqa: S307
    assert max(pids) < 50 and len(pids) <= 4
    assert result.stdout.splitlines()[1] == "-1 1"  # EPERM


async def test_row5_no_network_at_all(jailed) -> None:
    """TCP to the internet, TCP to a port listening on the host's loopback, UDP DNS, name
    resolution and the cloud metadata address all fail; the host listener sees nothing."""
    interpreter, _ = jailed
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\nattempts = {\n"
        f"  'loopback': lambda: socket.create_connection(('127.0.0.1', {port}), 2),\n"
        "  'internet': lambda: socket.create_connection(('1.1.1.1', 443), 2),\n"
        "  'metadata': lambda: socket.create_connection(('169.254.169.254', 80), 2),\n"
        "  'ipv6': lambda: socket.create_connection(('2606:4700:4700::1111', 443), 2),\n"
        "  'dns': lambda: socket.getaddrinfo('example.com', 443),\n"
        "  'udp': lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', "
        "('8.8.8.8', 53)),\n}\n"
        "for name, attempt in attempts.items():\n"
        "    try:\n        attempt()\n        print(name, 'CONNECTED')\n"
        "    except OSError as exc:\n        print(name, 'failed', exc.errno)\n"
    )
    try:
        result = await interpreter.run("u", "c", code)
        assert "CONNECTED" not in result.stdout and result.stdout.count("failed") == 6
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


async def test_row6_fork_bomb_is_contained(jailed) -> None:
    """A fork bomb hits the process limit and the time limit; the host and another user's
    session keep working."""
    interpreter, _ = jailed
    bomb = asyncio.create_task(
        interpreter.run(
            "u",
            "c",
            "import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n",
        )
    )
    try:
        await still_responsive(interpreter)
    except SandboxUnavailable:
        # Unprivileged without cgroups, one process count is shared by every session (README,
        # Privileges): another session may not start while the bomb runs, only after.
        if os.geteuid() == 0:
            raise
        await bomb
        await still_responsive(interpreter)
    result = await bomb
    assert result.status == "timeout" and "time limit" in result.notes[-1]
    assert (await interpreter.run("u", "c", "print(1)")).stdout == "1\n"


async def test_row7_memory_bomb_is_killed_with_a_clear_message(jailed) -> None:
    """Filling memory past the limit kills only that session, and the result says so."""
    interpreter, _ = jailed
    bomb = asyncio.create_task(interpreter.run("u", "c", "x = b'x' * (2 * 1024**3)"))
    await still_responsive(interpreter)
    result = await bomb
    assert result.status == "memory", result
    assert "out of memory" in result.notes[-1] and "384 MiB" in result.notes[-1]
    assert (await interpreter.run("u", "c", "print(2)")).stdout == "2\n"


async def test_row8_disk_fill_stops_at_the_sandbox_quota(jailed) -> None:
    """Writing until the disk is full ends with an error inside the sandbox, within its
    own size-limited folders; the host disk is untouched."""
    interpreter, _ = jailed
    code = (
        "import os\nfor target in ('/mnt/data/fill.bin', '/tmp/fill.bin'):\n"
        "    written = 0\n    try:\n        with open(target, 'wb') as f:\n"
        "            while written < 4 * 1024**3:\n"
        "                f.write(b'\\0' * 2**20)\n                written += 2**20\n"
        "    except OSError as exc:\n"
        "        print(target, 'stopped', exc.errno, written // 2**20)\n"
        "    os.remove(target)\n"
    )
    result = await interpreter.run("u", "c", code)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("stopped" in line for line in lines), result
    assert all(int(line.split()[-1]) <= 64 for line in lines)


async def test_row9_infinite_loop_long_sleep_and_input(jailed) -> None:
    """A busy loop and a long sleep are stopped at the time limit with a message that says
    so; input() gets end-of-file at once instead of hanging."""
    interpreter, _ = jailed
    for code in ("while True:\n    pass", "import time\ntime.sleep(10**9)"):
        result = await interpreter.run("u", "c", code)
        assert result.status == "timeout" and "8 s time limit" in result.notes[-1]
    result = await interpreter.run("u", "c", "input('name? ')")
    assert result.status == "error" and result.error.name == "EOFError"


async def test_row10_daemons_do_not_outlive_the_timeout(jailed) -> None:
    """A setsid double-fork daemon started before a timeout is gone afterwards (checked in the
    host's process table)."""
    interpreter, _ = jailed
    marker = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 10**6}"
    code = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
        "time.sleep(10**9)\n"
    )
    result = await interpreter.run("u", "c", code)
    assert result.status == "timeout"
    assert processes_running(marker) == []


async def test_row11_output_flood_is_bounded(jailed) -> None:
    """A gigabyte of output comes back as its head and tail, within the output limit."""
    interpreter, _ = jailed
    result = await interpreter.run(
        "u", "c", "import sys\nsys.stdout.write('A' * 10**6 + 'x' * 10**8 + 'Z' * 10)"
    )
    assert result.status == "ok"
    assert len(result.stdout) < 40_000 and "omitted" in result.stdout
    assert result.stdout.startswith("AAAA") and result.stdout.endswith("ZZZZZZZZZZ")
    await still_responsive(interpreter)


async def test_row12_output_names_cannot_escape(jailed) -> None:
    """Outputs with hostile names are stored under ids with cleaned display names."""
    interpreter, store = jailed
    code = (
        "import os\nos.makedirs('a/b', exist_ok=True)\nopen('a/b/x\\\\..\\\\y.csv', 'w').write('1')"
    )
    result = await interpreter.run("u", "c", code)
    assert [f.name for f in result.files] == ["y.csv"]
    record = (await store.list("u"))[0]
    assert store.path(record).parent == store.blobs.root / "u"


async def test_row13_links_fifos_and_devices_are_not_collected(jailed) -> None:
    """Symlinks, hard links to inputs, FIFOs and sockets in the output folder are skipped;
    the execution does not block on the FIFO."""
    interpreter, store = jailed
    record = (await store.save("u", "in.csv", chunks_of(b"a\n1\n"))).record
    code = (
        "import os, socket\nos.symlink('/etc/passwd', 'passwd.txt')\n"
        f"os.symlink('/mnt/files/{record.id}', 'input-link.csv')\n"
        "os.mkfifo('pipe.csv')\n"
        "s = socket.socket(socket.AF_UNIX); s.bind('sock')\n"
        "try:\n"
        f"    os.link('/mnt/files/{record.id}', 'hard.csv')\n"
        "except OSError as exc:\n    print('link refused', exc.errno)\n"
        "open('real.txt', 'w').write('ok')\n"
    )
    result = await interpreter.run("u", "c", code)
    assert result.status == "ok", result.error
    assert [f.name for f in result.files] == ["real.txt"]
    assert "link refused" in result.stdout


async def test_row14_zip_bomb_upload_is_refused_inside(jailed) -> None:
    """A zip that expands to gigabytes is stored as uploaded, never expanded on the host, and
    load_file refuses it with a clear message."""
    interpreter, store = jailed
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.csv", "w", force_zip64=True) as member:
            chunk = b"0" * 2**20
            for _ in range(1024):
                member.write(chunk)
    assert len(buffer.getvalue()) < 5 * 2**20
    record = (await store.save("u", "bomb.zip", chunks_of(buffer.getvalue()))).record
    result = await interpreter.run("u", "c", f"load_file({record.id!r})")
    assert result.status == "error"
    assert "bomb.zip" in result.error.message and "MiB" in result.error.message
    await still_responsive(interpreter)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


async def test_row15_pickle_payload_runs_only_inside(jailed, tmp_path: Path) -> None:
    """A malicious pickle's payload runs inside the sandbox when loaded there, never on the
    host: the file it creates on the host path does not appear."""
    interpreter, store = jailed
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    record = (
        await store.save("u", "model.pkl", chunks_of(pickle.dumps(_Payload(str(marker)))))
    ).record
    assert record.kind in ("pickle", "joblib")  # detected from the header, never unpickled
    result = await interpreter.run("u", "c", f"load_file({record.id!r})")
    assert result.status in ("ok", "error")
    assert not marker.exists()


async def test_row16_image_bomb_is_not_decoded_by_the_host(jailed) -> None:
    """An output PNG claiming 50,000 x 50,000 pixels is stored as bytes; the host never
    decodes it (no memory spike, no error)."""
    interpreter, store = jailed
    code = (
        "import struct, zlib\n"
        "def chunk(kind, data):\n"
        "    return struct.pack('>I', len(data)) + kind + data + "
        "struct.pack('>I', zlib.crc32(kind + data))\n"
        "header = struct.pack('>IIBBBBB', 50000, 50000, 8, 2, 0, 0, 0)\n"
        "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', header) + chunk(b'IEND', b'')\n"
        "open('huge.png', 'wb').write(png)\n"
    )
    result = await interpreter.run("u", "c", code)
    assert [(f.name, f.kind) for f in result.files] == [("huge.png", "image")]


async def test_row17_kernel_attack_surface_is_closed(jailed) -> None:
    """AF_ALG, AF_PACKET and AF_RXRPC sockets, io_uring, bpf, userfaultfd, keyctl, nested
    user namespaces and mount are refused."""
    interpreter, _ = jailed
    code = (
        "import ctypes, os, socket\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for family in (38, 17, 33):\n"
        "    try:\n        socket.socket(family, socket.SOCK_RAW if family == 17 else 5)\n"
        "        print(family, 'OPEN')\n"
        "    except OSError as exc:\n        print(family, 'refused', exc.errno)\n"
        "for name, number, args in [('io_uring_setup', 425, (8, 0)), ('bpf', 321, (0, 0, 0)),"
        " ('userfaultfd', 323, (0,)), ('keyctl', 250, (0, 0)),"
        " ('unshare', 272, (0x10000000,)), ('mount', 165, (0, 0, 0, 0, 0))]:\n"
        "    rc = libc.syscall(number, *args)\n"
        "    print(name, rc, ctypes.get_errno())\n"
    )
    result = await interpreter.run("u", "c", code)
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines[:3]] == ["refused"] * 3, result.stdout
    for line in lines[3:]:
        name, rc, err = line.split()
        assert rc == "-1" and int(err) in (1, 38), line  # EPERM or ENOSYS


async def test_row18_no_control_plane_to_reach(jailed) -> None:
    """The kernel listens on no port (no network namespace peer, no socket); forged protocol
    frames from user code only break the attacker's own session, never another's."""
    interpreter, _ = jailed
    await still_responsive(interpreter)
    code = (
        "import os\nfds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
        "print(open('/proc/net/tcp').read().count(':'), fds)\n"
        "for fd in fds:\n"
        "    try:\n        os.write(fd, b'J\\x00\\x00\\x00\\x05{bad}')\n"
        "    except OSError:\n        pass\n"
    )
    result = await interpreter.run("attacker", "c", code)
    assert result.status in ("ok", "error", "killed")
    await still_responsive(interpreter)
    assert (await interpreter.run("attacker", "c", "print('again')")).stdout == "again\n"


@pytest.mark.parametrize("code", ["import ctypes\nctypes.string_at(0)", "import os\nos._exit(3)"])
async def test_killing_the_interpreter_is_reported(jailed, code: str) -> None:
    """Code that kills its own interpreter gets a 'killed' result and a fresh session."""
    interpreter, _ = jailed
    result = await interpreter.run("u", "c", code)
    assert result.status == "killed" and "session was restarted" in result.notes[-1]
    assert (await interpreter.run("u", "c", "print(3)")).stdout == "3\n"


@pytest.mark.parametrize(
    "frame", ["b'J\\x00\\x00\\x00\\x03[1]'", "b'J' + (40 * 2**20).to_bytes(4, 'big') + b'{' * 1000"]
)
async def test_forged_frames_end_only_that_session(jailed, frame: str) -> None:
    """A frame that is not an object, or one far over the size cap, written straight to the
    protocol channel, ends the attacker's session cleanly; the host never buffers it."""
    interpreter, _ = jailed
    code = (
        "import os\nfor fd in sorted(int(f) for f in os.listdir('/proc/self/fd')):\n"
        "    try:\n"
        f"        os.write(fd, {frame})\n"
        "    except OSError:\n        pass\n"
    )
    result = await interpreter.run("attacker", "c", code)
    assert result.status in ("ok", "killed")
    await still_responsive(interpreter)
    assert (await interpreter.run("attacker", "c", "print('again')")).stdout == "again\n"


async def test_a_session_gets_at_most_its_share_of_cpu(make_interpreter) -> None:
    """With SANDBOX_CPUS=0.5, two busy processes for 1.5 s of wall time get about 0.75 s of CPU
    between them, not the 3 s two free cores would give (an upper bound: load only lowers it)."""
    async with make_interpreter(SANDBOX_CPUS=0.5) as (interpreter, _):
        if interpreter.jail.cgroup_kind.version == "none":
            pytest.skip("no writable cgroups here: the CPU share cannot be set")
        code = (
            "import os, time\nkids = []\nfor _ in range(2):\n    pid = os.fork()\n"
            "    if pid == 0:\n        end = time.time() + 1.5\n        while time.time() < end:\n"
            "            pass\n        os._exit(0)\n    kids.append(pid)\n"
            "for pid in kids:\n    os.waitpid(pid, 0)\n"
            "t = os.times()\nt.children_user + t.children_system"
        )
        result = await interpreter.run("u", "c", code)
        assert result.status == "ok", result.error
        assert float(result.value) < 1.4
