"""A three-turn analysis on the real sandbox (the openai SDK on the loopback model API),
exported, then run top to bottom with nbclient in the sandbox runtime's Python: the notebook
prints what labbot showed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import nbformat
import pytest

from labbot.app import open_app
from labbot.core import Final
from labbot.export import export_conversation, write_bundle
from labbot.llm.tools import TOOL_NAME
from tests.conftest import chunks_of, model_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replies import Reply

pytestmark = pytest.mark.sandbox

CSV = b"month,region,units\n2026-01,north,10\n2026-01,south,7\n2026-02,north,12\n"
EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
               resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[3])
"""


def shown(notebook: Any) -> list[dict[str, Any]]:
    """What each execution showed: its stdout, its value, its error's name and its figures."""
    seen = []
    for cell in notebook.cells[1:]:
        if cell.cell_type != "code":
            continue
        outputs = cell.outputs
        seen.append(
            {
                "stdout": "".join(o.text for o in outputs if o.get("name") == "stdout"),
                "value": [
                    o.data["text/plain"] for o in outputs if o.output_type == "execute_result"
                ],
                "error": [(o.ename, o.evalue) for o in outputs if o.output_type == "error"],
                "figures": sum("image/png" in o.get("data", {}) for o in outputs),
            }
        )
    return seen


def run_in_runtime(runtime: Path, notebook: Path, tmp_path: Path) -> Any:
    """Execute ``notebook`` with nbclient and ipykernel from the sandbox runtime."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{runtime / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "MPLCONFIGDIR": str(home / "mpl"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    executed = tmp_path / "executed.ipynb"
    subprocess.run(
        [
            str(runtime / "bin" / "python"),
            "-c",
            EXECUTE,
            str(notebook),
            str(notebook.parent),
            str(executed),
        ],
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return nbformat.read(executed, as_version=4)


async def test_three_turns_export_and_run_the_same(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """Load and total, plot, a failing cell then its fix: the export holds each as a code
    cell with its outputs, and running the bundle's notebook prints the same."""
    fake_openai.enqueue(
        Reply.tool_call(
            TOOL_NAME,
            {"code": "df = load_file('sales.csv')\nprint(df.shape)\ndf['units'].sum()"},
        ),
        Reply.text("29 units in all."),
        Reply.tool_call(
            TOOL_NAME,
            {
                "code": (
                    "import matplotlib.pyplot as plt\n"
                    "by_region = df.groupby('region')['units'].sum()\n"
                    "ax = by_region.plot(kind='bar')\nprint(by_region.to_string())"
                )
            },
        ),
        Reply.text("North leads; the chart is attached."),
        Reply.tool_call(TOOL_NAME, {"code": "df['price'].mean()"}),
        Reply.tool_call(TOOL_NAME, {"code": "df.groupby('month')['units'].sum()"}),
        Reply.text("There is no price column; units by month instead."),
    )
    settings = model_settings(tmp_path / "data", fake_openai.base_url)
    async with open_app(settings) as app:
        assert app.engine is not None
        saved = await app.store.save("42", "sales.csv", chunks_of(CSV))
        questions = [
            ("Total units?", [saved.record.id]),
            ("Plot units by region.", []),
            ("Average price?", []),
        ]
        for question, files in questions:
            events = [e async for e in app.engine.turn("42", "c1", question, file_ids=files)]
            assert any(isinstance(e, Final) for e in events), events
        export = await export_conversation(app.conversations, app.store, "42", "c1")
        bundle = tmp_path / "analysis.zip"
        await write_bundle(export, app.store, "42", bundle, "analysis.ipynb")

    notebook = nbformat.reads(export.text(), as_version=4)
    nbformat.validate(notebook)
    first = notebook.cells[0].source
    assert "def load_file(" in first and f"{saved.record.id!r}: 'files/sales.csv'" in first
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    assert markdown[0].startswith("**Question**\n\nTotal units?")
    assert "29 units in all." in markdown
    assert shown(notebook) == [
        {"stdout": "(3, 3)\n", "value": ["29"], "error": [], "figures": 0},
        {"stdout": "region\nnorth    22\nsouth     7\n", "value": [], "error": [], "figures": 1},
        {"stdout": "", "value": [], "error": [("KeyError", "'price'")], "figures": 0},
        {
            "stdout": "",
            "value": ["month\n2026-01    17\n2026-02    12\nName: units, dtype: int64"],
            "error": [],
            "figures": 0,
        },
    ]

    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == ["analysis.ipynb", "files/sales.csv"]
        assert archive.read("files/sales.csv") == CSV
        archive.extractall(folder)
    runtime = settings.LABBOT_RUNTIME_DIR
    executed = run_in_runtime(runtime, folder / "analysis.ipynb", tmp_path)
    assert shown(executed) == shown(notebook)
    assert sys.executable != str(runtime / "bin" / "python")  # run in the runtime, not here
