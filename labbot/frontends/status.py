"""What the running bot holds, for `labbot status`: a CLI process does not hold the bot's
sessions, so the bot writes a small snapshot, ``status.json`` in the data dir (never inside the
SQLite file), every STATUS_SECONDS, atomically (a temporary file renamed over the old one), and
the CLI reads it. The snapshot names users and conversations: it is the owner's alone (0600).

    {"written_at", "pid", "host", "executor", "sessions": [{"user", "conversation",
     "age_seconds", "idle_seconds", "running", "memory_bytes", "cpu_seconds"}], "warm_pool",
     "kernels", "max_sessions", "waiting_executions", "workers": [...], "files": {...}}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labbot.app import App

STATUS_FILE = "status.json"
STATUS_SECONDS = 5.0
STALE_AFTER = 3 * STATUS_SECONDS  # an older snapshot: the bot is not running (or is stuck)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def status_path(data_dir: Path) -> Path:
    """Where the bot writes its snapshot."""
    return data_dir / STATUS_FILE


def sessions_now(app: App) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The live sessions (with their kernel's pid) and the pool's counts, read on the event
    loop (the session table is not safe to read from another thread)."""
    from labbot.sandbox import CodeInterpreter

    sessions: list[dict[str, Any]] = []
    pool: dict[str, Any] = {}
    if isinstance(app.executor, CodeInterpreter):  # sessions on this machine
        local = app.executor.sessions
        now = time.monotonic()
        for session in list(local.sessions.values()):
            process = session.kernel.process
            sessions.append(
                {
                    "user": session.user,
                    "conversation": session.conversation,
                    "idle_seconds": 0.0 if session.lock.locked() else now - session.last_used,
                    "running": session.lock.locked(),
                    "pid": process.pid if process is not None else None,
                }
            )
        busy = sum(s["running"] for s in sessions)
        pool = {
            "warm_pool": local.warm,
            "kernels": local.kernels,
            "max_sessions": local.max_sessions,
            # Sessions with a cell past the machine's slots wait for one.
            "waiting_executions": max(0, busy - app.settings.MAX_CONCURRENT_EXECUTIONS),
        }
    if app.settings.LABBOT_EXECUTOR == "nats":  # scaled out: the workers heard
        from labbot.remote.executor import RemoteExecutor

        assert isinstance(app.executor, RemoteExecutor)
        table = app.executor.table
        now = time.monotonic()
        pool["workers"] = [
            {
                "host": h.host,
                "seconds_since_heard": round(now - h.seen, 1),
                "slots": h.slots,
                "free": h.free,
                "sessions": h.sessions,
                "warm": h.warm,
                "draining": h.draining,
            }
            for h in list(table.hosts.values())
        ]
    return sessions, pool


def measure_sessions(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each session's age, memory (resident, all its processes) and CPU seconds, from /proc
    (blocking: run it in a thread)."""
    from labbot.sandbox.jail.freezer import tree_cpu_seconds, tree_pids

    uptime = float(Path("/proc/uptime").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    measured = []
    for session in sessions:
        pid = session.pop("pid")
        age = memory = cpu = None
        if pid is not None:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                started = int(stat.rsplit(")", 1)[1].split()[19]) / ticks
                age = round(uptime - started, 1)
                memory = sum(_rss(p) for p in tree_pids(pid))
                cpu = round(tree_cpu_seconds(pid), 2)
            except (OSError, IndexError, ValueError):  # it ended meanwhile
                pass
        idle = round(session["idle_seconds"], 1)
        measured.append(
            session
            | {"age_seconds": age, "idle_seconds": idle, "memory_bytes": memory}
            | {"cpu_seconds": cpu}
        )
    return measured


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def file_totals(folder: Path) -> dict[str, int]:
    """Files and bytes under the local file folder (blocking: run it in a thread)."""
    count = size = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                size += os.stat(os.path.join(root, name)).st_size
                count += 1
            except OSError:  # deleted meanwhile
                continue
    return {"files": count, "bytes": size}


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Replace the snapshot atomically: a reader sees the old one or the new one, whole."""
    handle, temporary = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:  # mkstemp: mode 0600
            json.dump(data, out)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_status(path: Path, *, now: datetime | None = None) -> dict[str, Any] | None:
    """The bot's last snapshot with its age in seconds (``age_seconds``); None without one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        written = datetime.fromisoformat(data["written_at"])
    except (OSError, ValueError, KeyError, TypeError):  # none, or not one the bot wrote
        return None
    data["age_seconds"] = round(((now or datetime.now(UTC)) - written).total_seconds(), 1)
    return data
