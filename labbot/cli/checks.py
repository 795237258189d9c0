"""`labbot doctor`'s checks of what `labbot run` will start, the data folder, the model API and
Discord; each returns its lines and never raises for what it checks."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from labbot.cli.group import plural
from labbot.config import Settings
from labbot.errors import ConfigError, LabbotError, LLMAuthError, StorageError
from labbot.files.receipt import format_size
from labbot.logs import mask_url

CheckStatus = Literal["ok", "warn", "fail", "skip"]
RunMode = Literal["bot", "model chat", "console"]
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
MODEL_CHECK_TIMEOUT = 15.0  # seconds for the model API's answer to the listing
NO_TERMINAL = (
    "No DISCORD_TOKEN, and no terminal for the chat: set DISCORD_TOKEN (in .env) to run the"
    " Discord bot, or start `labbot run` in a terminal."
)


# Query parameters that are never credentials: an OAuth invite's (Discord's invite URL is shown
# whole, since the operator opens it). Every other query value is masked.
PUBLIC_QUERY_KEYS = frozenset(
    {"client_id", "scope", "permissions", "guild_id", "disable_guild_select", "integration_type"}
)
_URL_IN_TEXT = re.compile(
    r"\b[a-z][a-z0-9+.-]*://(?:(?!,[a-z][a-z0-9+.-]*://)[^\s'\"<>`])+", re.IGNORECASE
)
# Names that look like ours (the prefixes of labbot's settings) in the environment or .env. In
# the environment only the prefixes no other program uses; in .env, every prefix of ours.
OWN_PREFIXES = (
    "LABBOT_", "SANDBOX_", "MAX_", "FILE_", "CODE_", "DISCORD_", "MONGODB_", "LLM_", "PACKAGE_",
    "SESSION_", "RATE_", "ALLOWED_", "BLOCKED_", "ADMIN_",
)  # fmt: skip
# Read by labbot's scripts or tests, not by the settings.
OTHER_VARIABLES = ("LABBOT_BIN_DIR", "LABBOT_TEST_", "LABBOT_SHARED_FIXTURES")


def mask_credentials(text: str) -> str:
    """``text`` with every URL's credentials masked (userinfo, secret-looking path segments,
    query values), but the query values that are never secret (an invite's client_id, scope
    and permissions) kept, so a URL the operator must open still works."""

    def masked(match: re.Match[str]) -> str:
        url = match.group()
        tail = len(url) - len(url.rstrip(".,;:!?)]}"))
        url, after = url[: len(url) - tail], url[len(url) - tail :]
        try:
            parts = urlsplit(url)
        except ValueError:
            return "***" + after
        shown = mask_url(urlunsplit(parts._replace(query="", fragment="")))
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            kept = [(k, v if k in PUBLIC_QUERY_KEYS else "***") for k, v in pairs]
            shown += "?" + urlencode(kept).replace("%2A", "*")
        return shown + after

    return _URL_IN_TEXT.sub(masked, text)


def unknown_settings(
    known: Iterable[str], environ: Mapping[str, str], dotenv: Mapping[str, Any]
) -> Check | None:
    """A warning naming each variable that looks like a setting of ours but is none (a typo
    is otherwise silently ignored), with the closest known name; None when there is none."""
    names = sorted(known)
    prefixes = {name.split("_")[0] + "_" for name in names}
    found: dict[str, str] = {}
    for where, variables, ours in (
        (".env", dotenv, tuple(prefixes)),
        ("the environment", environ, OWN_PREFIXES),
    ):
        for name in variables:
            if name in names or name in found or not name.startswith(ours):
                continue
            if name.startswith(OTHER_VARIABLES):
                continue
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
            if where == "the environment" and not close and not name.startswith("LABBOT_"):
                continue  # MAX_JOBS, FILE_NAME, ... belong to other programs
            hint = f"did you mean {close[0]}?" if close else "no setting is named like it"
            found[name] = f"{name} (in {where}): {hint}"
    if not found:
        return None
    lines = [f"{plural(len(found), 'variable')} named like a setting but unknown (ignored):"]
    return Check("unknown settings", "warn", "\n".join([*lines, *found.values()]))


def mongo_ping(settings: Settings) -> None:
    """One ping of MONGODB_URI within MONGODB_TIMEOUT_SECONDS (doctor's quick answer; the bot
    itself retries); a StorageError when it does not answer. pymongo's blocking client: its
    asyncio one leaves a socket open when closed in the middle of a connection attempt."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    assert settings.MONGODB_URI is not None
    timeout_ms = int(settings.MONGODB_TIMEOUT_SECONDS * 1000)
    client: MongoClient = MongoClient(
        settings.MONGODB_URI.get_secret_value(),
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname="labbot-doctor",
    )
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        raise StorageError(
            f"MongoDB cannot be reached within {settings.MONGODB_TIMEOUT_SECONDS:g} s"
            f" (MONGODB_URI, {type(exc).__name__}).",
            hint="Check that the server runs and the URI, user and password are right.",
        ) from exc
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class Check:
    """One line of doctor: ok, a warning (works, but see the detail), failed or not checked."""

    name: str
    status: CheckStatus
    detail: str

    def to_json(self) -> dict[str, Any]:
        """``{"check", "ok", "status", "detail"}`` (a warning is ok)."""
        ok = self.status in ("ok", "warn")
        return {"check": self.name, "ok": ok, "status": self.status, "detail": self.detail}


def run_mode(settings: Settings, *, terminal: bool) -> tuple[RunMode | None, str]:
    """What `labbot run` starts, and the sentence saying so; None when it cannot start."""
    if settings.DISCORD_TOKEN is not None:
        return "bot", "the Discord bot (DISCORD_TOKEN is set)"
    if not terminal:
        return None, NO_TERMINAL
    if settings.llm_configured:
        return "model chat", (
            f"the terminal chat with the model {settings.DEFAULT_MODEL} (no DISCORD_TOKEN)"
        )
    return "console", (
        "a sandboxed Python console in the terminal (no DISCORD_TOKEN; no model:"
        " OPENAI_API_KEY and OPENAI_BASE_URL are unset)"
    )


def mode_check(settings: Settings, *, terminal: bool) -> Check:
    """What `labbot run` would start here (a warning when it would stop at once)."""
    mode, sentence = run_mode(settings, terminal=terminal)
    return Check("labbot run", "ok" if mode else "warn", f"starts {sentence}" if mode else sentence)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (tmpfs, ext4, ...), from mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    target, best, kind = str(path.resolve()), "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):  # the last mount on a point wins
            best, kind = mount, right.split()[0]
    return kind


def data_dir_check(path: Path) -> Check:
    """The data folder exists (or can be made), is a folder, is writable and is on disk."""
    fix = "set LABBOT_DATA_DIR to a folder labbot may write"
    if path.exists() and not path.is_dir():
        return Check("data dir", "fail", f"{path} is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Check("data dir", "fail", f"{path} cannot be created ({exc.strerror}); {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("data dir", "fail", f"{path} is not writable ({exc.strerror}); {fix}")
    shown = f"{path} ({format_size(shutil.disk_usage(path).free)} free)"
    kind = filesystem_type(path)
    if kind in MEMORY_FILESYSTEMS:
        return Check(
            "data dir",
            "warn",
            f"{shown} is on {kind} (memory): files and the database vanish at reboot;"
            " set LABBOT_DATA_DIR to a folder on disk",
        )
    return Check("data dir", "ok", shown)


def core_pattern_check(path: Path = CORE_PATTERN) -> Check:
    """Warn when the kernel pipes core dumps to a program: it starts that program as root
    for a crash of any process, a sandbox's included."""
    try:
        pattern = path.read_text().strip()
    except OSError as exc:
        return Check("core dumps", "skip", f"{path} cannot be read ({exc.strerror})")
    if not pattern.startswith("|"):
        return Check("core dumps", "ok", f"kernel.core_pattern writes files ({pattern!r})")
    program = (pattern[1:].split() or ["?"])[0]
    return Check(
        "core dumps",
        "warn",
        f"kernel.core_pattern pipes every crash to {program}, which the kernel starts as root:"
        " a crash is then a way into a root program's input (sandboxes ask for no dump,"
        " RLIMIT_CORE 1, but every other process of the machine may); unless you need it,"
        " set `sysctl kernel.core_pattern=core`",
    )


def sandbox_uid_check(settings: Settings, *, euid: int | None = None) -> Check:
    """Whether sandboxes get a host uid each (a root bot) or all share the bot's."""
    euid = os.geteuid() if euid is None else euid
    if settings.LABBOT_SANDBOX == "off":
        return Check("sandbox uids", "skip", "the sandbox is off (LABBOT_SANDBOX=off)")
    if euid == 0:
        top = settings.SANDBOX_UID_BASE + settings.SANDBOX_UID_COUNT - 1
        return Check(
            "sandbox uids",
            "ok",
            f"each live sandbox runs as a host uid of its own ({settings.SANDBOX_UID_BASE}-{top})",
        )
    return Check(
        "sandbox uids",
        "warn",
        f"the bot is not root, so every sandbox runs as its uid, {euid}: one session can"
        " spend that uid's kernel budgets (epoll watches, pipe buffers, fds in flight over"
        " sockets) for the other sessions and for the bot itself, which could then fail to"
        " open connections; for strangers' code run the bot as root (a uid per sandbox)",
    )


def memory_sharing_check(settings: Settings, *, euid: int | None = None) -> Check:
    """Whether idle sessions share their preloaded pages: SANDBOX_SHARE_MEMORY, and KSM
    running (a root bot starts it; otherwise `make setup` as root)."""
    from labbot.sandbox.jail.merging import ENABLE_HINT, merging_state

    euid = os.geteuid() if euid is None else euid
    name, alone = "memory sharing", "each idle session holds its own copy (about 80 MiB)"
    if settings.LABBOT_SANDBOX == "off":
        return Check(name, "skip", "the sandbox is off (LABBOT_SANDBOX=off)")
    if not settings.SANDBOX_SHARE_MEMORY:
        return Check(name, "ok", f"off (SANDBOX_SHARE_MEMORY=off): {alone}")
    state = merging_state()
    if state.running:
        saved = format_size(state.saved_bytes)
        return Check(
            name, "ok", f"on: KSM merges identical pages ({saved} saved now, machine-wide)"
        )
    if state.run == 0 and euid == 0:
        return Check(name, "ok", "on: KSM is stopped; the bot (root) starts it when it starts")
    if state.run is None:
        why = "this kernel has no same-page merging (KSM)"
        fix = "use a kernel built with CONFIG_KSM, or set SANDBOX_SHARE_MEMORY=off"
    else:
        why = "KSM is stopped" if state.run == 0 else f"KSM is not merging (run={state.run})"
        fix = ENABLE_HINT
    return Check(name, "warn", f"SANDBOX_SHARE_MEMORY is on, but {why}, so {alone}; {fix}")


def base_url_problem(url: str) -> str | None:
    """Why OPENAI_BASE_URL cannot be an API address, or None (the value is never repeated:
    a malformed one may hold a key)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            "OPENAI_BASE_URL is not an http(s) URL with a host; set it to the API's address,"
            " e.g. http://localhost:11434/v1 (Ollama) or https://openrouter.ai/api/v1,"
            " or leave it unset for OpenAI"
        )
    return None


def check_base_url(settings: Settings) -> None:
    """Raise ConfigError when OPENAI_BASE_URL is set but cannot be an API address."""
    if settings.OPENAI_BASE_URL and (problem := base_url_problem(settings.OPENAI_BASE_URL)):
        raise ConfigError(f"{problem}.")


async def model_checks(settings: Settings) -> list[Check]:
    """The model: the base URL's form, the API reachable, the key accepted, the model listed."""
    if not settings.llm_configured:
        return [
            Check(
                "model",
                "ok",
                "none (OPENAI_API_KEY and OPENAI_BASE_URL unset): the terminal is a Python console",
            )
        ]
    url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
    if problem := base_url_problem(url):
        return [Check("model endpoint", "fail", problem)]
    from labbot.llm.client import LLMClient

    shown = mask_url(url)
    quick = {"LLM_MAX_RETRIES": 0, "LLM_TIMEOUT": min(settings.LLM_TIMEOUT, MODEL_CHECK_TIMEOUT)}
    client = LLMClient(settings.model_copy(update=quick))
    try:
        names = await client.list_models()
    except LLMAuthError:
        return [Check("model API", "fail", f"{shown} refused the key; check OPENAI_API_KEY")]
    except LabbotError as exc:
        return [Check("model API", "fail", f"{shown}: {exc}")]
    finally:
        await client.close()
    key = "the key is accepted" if settings.OPENAI_API_KEY else "no key is sent (OPENAI_API_KEY)"
    if names is None:
        return [
            Check("model API", "ok", f"{shown} answers; it lists no models, so {key} unchecked"),
            Check("model", "ok", f"{settings.DEFAULT_MODEL} (not checked: no listing)"),
        ]
    count = plural(len(names), "model")
    listed = Check("model API", "ok", f"{shown} answers, {key}, {count} listed")
    if settings.DEFAULT_MODEL in names:
        return [listed, Check("model", "ok", f"{settings.DEFAULT_MODEL} is offered")]
    some = ", ".join(sorted(names)[:8])
    return [
        listed,
        Check(
            "model",
            "fail",
            f"DEFAULT_MODEL {settings.DEFAULT_MODEL!r} is not among the models {shown} lists"
            f" ({some}{', ...' if len(names) > 8 else ''}); set DEFAULT_MODEL to one of them",
        ),
    ]


async def discord_checks(token: str | None) -> list[Check]:
    """The token's form, Discord's answer to it (when it can be reached), intents, invite."""
    from labbot.frontends.discord.setup_check import DiscordUnreachable, checks, login

    lines = [Check(name, "ok" if ok else "fail", detail) for name, ok, detail in checks(token)]
    if token is None or any(c.status == "fail" for c in lines):
        return lines
    try:
        me = await login(token)
        accepted = Check("discord login", "ok", f"accepted: the bot is {me.get('username')}")
    except DiscordUnreachable as exc:
        accepted = Check("discord login", "warn", f"not verified: {exc}")
    except LabbotError as exc:
        accepted = Check("discord login", "fail", str(exc))
    return [lines[0], accepted, *lines[1:]]
