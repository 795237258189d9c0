"""What the sandbox's /proc/self/mountinfo shows of the host (issue 17, finding 5): the kernel's
code and /etc are copied in, so neither the checkout nor the data folder's own folders show;
the host paths left are those of the three folders bound (the runtime venv, the session's files
folder, and the base Python when it is outside /usr). Run as root and, through
test_unprivileged.py, as an unprivileged bot."""

from __future__ import annotations

from pathlib import Path

from labbot.sandbox.jail import Runtime
from labbot.sandbox.jail.bwrap import KERNEL_DIR

REPO = Path(__file__).resolve().parents[2]
CODE = "print(open('/proc/self/mountinfo').read())"


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape")


async def test_mountinfo_shows_only_the_bound_folders(jailed) -> None:
    """No line names the checkout (the kernel's code), the sandbox folder's /etc or any of the
    data folder but the session's own files folder; every host path shown is one of the bound
    folders; /root shows only as the base Python's home when the runtime's Python lives there."""
    interpreter, _ = jailed
    result = await interpreter.run("u", "c", CODE)
    assert result.status == "ok", result.error
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    runtime = Runtime.locate(interpreter.settings.LABBOT_RUNTIME_DIR)
    bound = {
        str(runtime.venv.resolve()),
        str(kernel.files_dir.resolve()),
        str(runtime.base_prefix),
    }
    data_dir = str(interpreter.settings.LABBOT_DATA_DIR.resolve())
    shown: set[str] = set()
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        assert str(KERNEL_DIR) not in line and "/sandbox/etc" not in line, line
        if data_dir in line:
            assert root == str(kernel.files_dir.resolve()), line
        if root not in ("/", "/newroot") and not root.startswith(("/usr/", "/null", "/zero")):
            shown.add(root)
        if point.startswith("/root") or root.startswith("/root"):
            assert str(runtime.base_prefix).startswith("/root"), line
    assert shown <= bound | {"/usr", "/full", "/random", "/urandom", "/tty"}, shown - bound
    assert str(REPO) not in result.stdout or str(runtime.venv.resolve()).startswith(str(REPO))
