"""The upload confirmation a user sees (CLI and Discord render the same text)."""

from __future__ import annotations

from datetime import datetime

from humanize import naturalsize

from labbot.files import kinds
from labbot.files.meta.base import FileRecord
from labbot.files.store import SaveResult

_EXAMPLES = {
    True: ('"Summarise {name}"', '"Plot the monthly totals"', '"Which columns have gaps?"'),
    False: ('"What is in {name}?"', '"Extract the key figures"', '"Turn it into a chart"'),
}


def format_size(size: int) -> str:
    """A size as people read it: 1.2 MiB."""
    return naturalsize(size, binary=True)


_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"))


def time_left(seconds: float) -> str:
    """ "2 days", "30 hours", "5 minutes": the nearest whole number of the largest unit of which
    at least one and a half are left, so times a few minutes apart read alike (48 hours and
    47 hours 59 minutes are both "2 days"; the exact time is shown beside it)."""
    for size, unit in _UNITS:
        if seconds >= 1.5 * size:
            count = round(seconds / size)
            return f"{count} {unit}s"
    return "1 minute" if seconds >= 30 else "less than a minute"


def format_expiry(expires_at: datetime | None, now: datetime) -> str:
    """ "in 2 days (2026-11-28 06:30 UTC)", "in 30 hours (...)", or "never"."""
    if expires_at is None:
        return "never"
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    if expires_at <= now:
        return f"expired ({when})"
    return f"in {time_left((expires_at - now).total_seconds())} ({when})"


def describe(record: FileRecord) -> str:
    """One line naming a file: emoji, name, id."""
    return f"{kinds.kind_by_name(record.kind).emoji} {record.name} (`{record.id}`)"


def render_upload_confirmation(result: SaveResult, *, now: datetime) -> str:
    """The confirmation shown after a file is stored: what it is, its id, expiry, the user's
    totals, what was evicted to make room, and what to do next."""
    record, limits = result.record, result.limits
    kind = kinds.kind_by_name(record.kind)
    verb = "uploaded" if record.source == "upload" else "created"
    lines = [
        f"{kind.emoji} **File {verb}: {record.name}**",
        f"Type: {kind.label} · Size: {format_size(record.size)} · ID: `{record.id}`",
        f"Expires: {format_expiry(record.expires_at, now)}",
        f"Your files: {result.file_count}/{limits.max_files}"
        f" · {format_size(result.total_bytes)} of {format_size(limits.max_total_bytes)}",
    ]
    for old in result.evicted:
        which = "oldest file the code made" if old.source == "generated" else "oldest upload"
        lines.append(f"⚠️ To make room, your {which}, {describe(old)}, was removed.")
    if record.source == "upload" and result.file_count >= limits.max_files:
        lines.append(
            "When room is needed, files the code made go first; your uploads go only when none"
            " is left."
        )
    if record.source == "upload":
        examples = ", ".join(e.format(name=record.name) for e in _EXAMPLES[kind.is_table])
        lines.append(f"Ask about it in plain words, e.g. {examples}.")
        lines.append(f"In code: `load_file('{record.id}')`.")
    return "\n".join(lines)
