"""A conversation as a Jupyter notebook (nbformat 4): questions and answers as Markdown cells,
each execution as a code cell with its outputs (streams, the last expression's value, the
error, figures as PNG read from the file store), and a first cell defining ``FILES`` and
``load_file`` (``standalone.py``) over a folder ``files`` beside the notebook.

Reads history and files only: nothing runs, no session is touched. What the model wrote is
made inert where a notebook viewer would fetch something by itself (raw HTML, images)."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import nbformat
from nbformat import v4

from labbot.chat.history import ConversationStore, Message
from labbot.errors import FileNotFound, LabbotError
from labbot.files import FileRecord, FileStore
from labbot.files.names import FILE_ID_PATTERN
from labbot.llm.tools import read_call

log = logging.getLogger(__name__)

FILES_FOLDER = "files"
MAX_FIGURE_BYTES = 8 * 1024 * 1024  # a larger image is named, not embedded
_CELL_MARK = "# CELL -- the notebook's first cell starts on the next line\n"
_FILE_ID = re.compile(rf"\b{FILE_ID_PATTERN}\b")
_ATTACHED = re.compile(rf"\(id ({FILE_ID_PATTERN})\)")
_QUOTED = re.compile(r"""(["'])([^"'\n]{1,200})\1""")
_HTML_TAG = re.compile(r"<(?=[A-Za-z/!?])")


class ExportError(LabbotError):
    """A conversation that cannot be exported (there is none of that name)."""


@dataclass(frozen=True, slots=True)
class ExportedFile:
    """One of the user's files the notebook loads, and its path beside the notebook."""

    record: FileRecord
    path: str


@dataclass(frozen=True, slots=True)
class Export:
    """An exported conversation: the notebook, and the files it loads (``missing``: ids it
    loads that are no longer stored)."""

    notebook: nbformat.NotebookNode
    files: tuple[ExportedFile, ...]
    missing: tuple[str, ...]

    def text(self) -> str:
        """The notebook as .ipynb JSON."""
        return str(nbformat.writes(self.notebook))


async def export_conversation(
    conversations: ConversationStore,
    store: FileStore,
    user: str,
    conversation: str,
    *,
    now: Callable[[], datetime] | None = None,
) -> Export:
    """The conversation as a validated notebook, with the files its code loads.

    :raises ExportError: the user has no conversation of that name.
    """
    messages = await conversations.messages(user, conversation)
    if not messages:
        raise ExportError(
            f"There is no conversation {conversation!r} to export.",
            hint="Ask something there first (in Discord: run /export in the thread or DM).",
        )
    cells, codes, made = await _cells(store, user, messages)
    files, missing = await _files(store, user, messages, codes, made)
    first = v4.new_code_cell(_first_cell(files, missing))
    first.metadata["labbot"] = {"role": "setup"}
    notebook = v4.new_notebook(cells=[first, *cells])
    for n, cell in enumerate(notebook.cells):
        cell.id = f"cell-{n}"  # the same export twice is the same file (no random ids)
    notebook.metadata.update(
        kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
        language_info={"name": "python"},
        labbot={
            "conversation": conversation,
            "exported": (now or store.clock)().isoformat(timespec="seconds"),
        },
    )
    nbformat.validate(notebook)
    log.info("export.notebook user=%s cells=%d files=%d", user, len(notebook.cells), len(files))
    return Export(notebook, tuple(files), tuple(missing))


async def _cells(
    store: FileStore, user: str, messages: list[Message]
) -> tuple[list[nbformat.NotebookNode], list[str], set[str]]:
    """The cells in order; the code of every execution; the ids of the files code made."""
    cells: list[nbformat.NotebookNode] = []
    by_call: dict[str, nbformat.NotebookNode] = {}
    codes: list[str] = []
    made: set[str] = set()
    count = 0
    for message in messages:
        role = message.get("role")
        if role == "user":
            cells.append(_markdown(f"**Question**\n\n{_text_of(message.get('content'))}", role))
        elif role == "assistant":
            text = _text_of(message.get("content"))
            if text.strip():
                cells.append(_markdown(text, role))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                code, why = read_call(str(function.get("name")), str(function.get("arguments")))
                if code is None:
                    cells.append(_markdown(f"*A call that was not run: {why}*", "assistant"))
                    continue
                count += 1
                cell = v4.new_code_cell(code.rstrip("\n"), execution_count=count)
                cell.metadata["labbot"] = {"call_id": call.get("id")}
                by_call[str(call.get("id"))] = cell
                codes.append(code)
                cells.append(cell)
        elif role == "tool" and (cell := by_call.get(str(message.get("tool_call_id")))):
            result = _result_of(message.get("content"))
            made |= {f["id"] for f in result.get("files") or [] if isinstance(f, dict)}
            await _outputs(store, user, cell, result)
    return cells, codes, made


def _markdown(text: str, role: str) -> nbformat.NotebookNode:
    """A Markdown cell that fetches nothing when shown: raw HTML tags and images are
    escaped (a planted ``<img src=...>`` would leak data to whoever serves it)."""
    cell = v4.new_markdown_cell(_inert(text))
    cell.metadata["labbot"] = {"role": role}
    return cell


def _inert(text: str) -> str:
    """Markdown that fetches nothing when shown: raw HTML tags and images escaped."""
    return _HTML_TAG.sub("&lt;", text).replace("![", "!\\[")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # a question with images: its text parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _result_of(content: Any) -> dict[str, Any]:
    try:
        result = json.loads(content) if isinstance(content, str) else None
    except ValueError:
        result = None
    return result if isinstance(result, dict) else {"status": "error", "notes": ["Not kept."]}


async def _outputs(
    store: FileStore, user: str, cell: nbformat.NotebookNode, result: dict[str, Any]
) -> None:
    """An execution's result as the cell's outputs, in the order Jupyter shows them."""
    outputs = cell.outputs
    for stream in ("stdout", "stderr"):
        if isinstance(text := result.get(stream), str) and text:
            outputs.append(v4.new_output("stream", name=stream, text=text))
    others = []
    for file in result.get("files") or []:
        if not isinstance(file, dict):
            continue
        png = await _figure(store, user, file)
        if png is not None:
            outputs.append(v4.new_output("display_data", data={"image/png": png}))
        else:
            others.append(f"`{file.get('name')}`")
    if others:
        made = _inert("Files made: " + ", ".join(others))  # names the user's code chose
        outputs.append(v4.new_output("display_data", data={"text/markdown": made}))
    if isinstance(value := result.get("value"), str):
        outputs.append(
            v4.new_output(
                "execute_result",
                data={"text/plain": value},
                execution_count=cell.execution_count,
            )
        )
    status = result.get("status")
    error = result.get("error")
    if isinstance(error, dict) or status not in ("ok", None):
        error = error if isinstance(error, dict) else {}
        trace = str(error.get("traceback") or "")
        outputs.append(
            v4.new_output(
                "error",
                ename=str(error.get("name") or status),
                evalue=str(error.get("message") or ""),
                traceback=trace.splitlines() if trace else [],
            )
        )
    cell.metadata["labbot"].update(status=status, notes=[str(n) for n in result.get("notes") or []])


async def _figure(store: FileStore, user: str, file: dict[str, Any]) -> str | None:
    """A PNG the code made, base64 for the notebook; None when it is no PNG, too large to
    embed, or no longer stored."""
    name, size = str(file.get("name") or ""), file.get("size")
    if not name.lower().endswith(".png") or not isinstance(size, int) or size > MAX_FIGURE_BYTES:
        return None
    try:
        data = await store.read_bytes(user, str(file.get("id")))
    except (FileNotFound, LabbotError):
        return None
    return base64.b64encode(data).decode()


async def _files(
    store: FileStore, user: str, messages: list[Message], codes: list[str], made: set[str]
) -> tuple[list[ExportedFile], list[str]]:
    """The files the notebook loads: those attached to the questions and those the code
    names by id, or by name unless the code made them (a run makes them again)."""
    wanted: set[str] = set()
    for message in messages:
        if message.get("role") == "user":
            wanted |= set(_ATTACHED.findall(_text_of(message.get("content"))))
    code = "\n".join(codes)
    wanted |= set(_FILE_ID.findall(code))
    quoted = {m.group(2) for m in _QUOTED.finditer(code)}
    live = {r.id: r for r in await store.list(user)}
    wanted |= {i for i, r in live.items() if r.name in quoted and i not in made}
    taken: set[str] = set()
    files: list[ExportedFile] = []
    # Newest first, as load_file has them: a name shared by several files is the newest one's.
    chosen = (live[i] for i in wanted if i in live)
    for record in sorted(chosen, key=lambda r: r.created_at, reverse=True):
        name = record.name
        if name in taken:
            path = PurePosixPath(name)
            name = f"{path.stem}-{record.id[:6]}{path.suffix}"
        taken.add(name)
        files.append(ExportedFile(record, f"{FILES_FOLDER}/{name}"))
    attached_or_named = {i for i in wanted if _FILE_ID.fullmatch(i)}
    missing = sorted(i for i in attached_or_named - live.keys() if i not in made)
    return files, missing


def _first_cell(files: list[ExportedFile], missing: list[str]) -> str:
    """The loader cell: ``standalone.py`` below its mark, with FILES and NAMES filled in."""
    source = (Path(__file__).parent / "standalone.py").read_text(encoding="utf-8")
    cell = source.split(_CELL_MARK, 1)[1]
    paths = {f.record.id: f.path for f in files}
    names = {f.record.id: f.record.name for f in files}
    cell = cell.replace("FILES: dict[str, str] = {}", f"FILES: dict[str, str] = {_literal(paths)}")
    cell = cell.replace("NAMES: dict[str, str] = {}", f"NAMES: dict[str, str] = {_literal(names)}")
    if missing:
        gone = ", ".join(missing)
        cell = f"# No longer stored (expired or deleted), so not exported: {gone}\n{cell}"
    return cell.rstrip("\n")


def _literal(mapping: dict[str, str]) -> str:
    """A dict as Python source, one item a line."""
    if not mapping:
        return "{}"
    items = "".join(f"    {k!r}: {v!r},\n" for k, v in mapping.items())
    return "{\n" + items + "}"
