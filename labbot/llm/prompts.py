"""The system prompt: who the assistant is, the date and time, and the user's files."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from humanize import naturalsize

from labbot.files import FileRecord, kind_by_name
from labbot.files.names import clean_filename, visible_text

# A preview is a file's shape and columns, then a line saying how it was read ("Read: ...",
# with the load_file arguments that undo it); the columns are trimmed first so that line
# survives a wide table.
MAX_PREVIEW_CHARS = 700
_READ = "Read: "

_ROLE = """You are labbot, a data analyst working with the user in a chat.
When a question needs their data, numbers or a chart, run code with execute_python_code rather
than guessing; never invent figures. Work step by step: inspect the data before drawing
conclusions. Files you write or plots you draw reach the user automatically: name them in your
answer, never paste file contents or base64. Answer in the user's language, concisely; the chat
shows Markdown, so prefer short lists and small tables."""


def system_prompt(files: list[FileRecord], *, now: datetime, timezone: str) -> str:
    """The system prompt for one request."""
    local = now.astimezone(ZoneInfo(timezone))
    lines = [_ROLE, "", f"Now: {local:%A %Y-%m-%d %H:%M} ({timezone})."]
    if not files:
        lines.append("The user has no files yet; they can attach some to a message.")
        return "\n".join(lines)
    lines.append("The user's files (load with load_file('<id>')):")
    for record in files:
        kind = kind_by_name(record.kind)
        size = naturalsize(record.size, binary=True)
        # Cleaned again here: records stored before the cleaner knew a character keep it.
        line = f"- {record.id}: {clean_filename(record.name)} ({kind.label}, {size}"
        line += ", made by code)" if record.source == "generated" else ")"
        if record.preview:
            preview = clip_preview(record.preview).split("\n")
            line += "".join("\n  " + visible_text(part) for part in preview)
        lines.append(line)
    return "\n".join(lines)


def clip_preview(text: str, limit: int = MAX_PREVIEW_CHARS) -> str:
    """`text` within `limit` characters: the other lines are trimmed before the "Read: ..."
    lines (how the file was read, and the arguments that override it)."""
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    reads = [i for i, ln in enumerate(lines) if ln.lstrip().startswith(_READ)]
    others = [i for i in range(len(lines)) if i not in reads]
    room = limit - sum(len(lines[i]) + 1 for i in reads)
    if reads and others and room >= 60 * len(others):
        each = room // len(others) - 1
        lines = [_cut(ln, each) if i in others else ln for i, ln in enumerate(lines)]
        text = "\n".join(lines)
    return _cut(text, limit)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
