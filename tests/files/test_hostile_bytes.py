"""The host parses strangers' bytes in linear time, on a bounded prefix, with bounded memory.

Every call runs in a child process (tests/files/sniff_worker.py) with a ceiling of seconds: a
backtracking pattern holds the GIL, so only killing a process bounds it. Before the fix, the
explicit inputs here ran for minutes (162 bytes of `<?a?>` over 60 s; 60 KB of newlines and two
lines of `,"` 37 s to over a minute), a ZIP of a million entries took 10 s of CPU and 450 MiB,
and a 7999 x 7999 PNG of 62 KiB was decoded in the bot (308 MiB). Speed itself is measured in
bench/hostile.py.
"""

from __future__ import annotations

import base64
import codecs
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from labbot.app import open_app
from labbot.chat import images
from labbot.core import Final
from labbot.files import kinds
from labbot.files.kinds import detect_kind, kind_for_filename
from tests.conftest import chunks_of, model_settings
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.files import hostile_inputs
from tests.files.sniff_worker import SniffWorker

CEILING = 5.0  # seconds for one call on at most 64 KiB (today's inputs take milliseconds)
MIB = 1024 * 1024
EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples every run: a ceiling test must not be flaky
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def worker() -> Iterator[SniffWorker]:
    with SniffWorker() as child:
        yield child


def assert_bounded(worker: SniffWorker, name: str, data: bytes) -> str:
    """detect_kind on ``data`` (and its first 8 KiB) answers within the ceiling."""
    for head in (data[: 8 * 1024], data[: kinds.HEAD_BYTES]):
        answer = worker.kind(name, head, timeout=CEILING)
        assert answer["seconds"] < CEILING
    return answer["result"]


# --- the inputs of issue 17 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "name", "expected"),
    [
        (hostile_inputs.markup, "upload", "text"),
        (hostile_inputs.markup, "x.xml", "xml"),
        (hostile_inputs.newline_flood, "upload", "text"),
        (hostile_inputs.csv_quotes, "upload", "text"),
        (hostile_inputs.csv_quotes, "x.csv", "csv"),
        (hostile_inputs.json_flood, "x.json", "json"),
        (hostile_inputs.sql_flood, "upload", "text"),
        (hostile_inputs.zip_head, "x.zip", "zip"),
        (hostile_inputs.image_header, "x.jpg", "image"),
    ],
)
def test_reported_inputs_answer_within_the_ceiling(
    worker: SniffWorker, build, name: str, expected: str
) -> None:
    """Each reported input, at 8 and 64 KiB, is classified in well under the ceiling."""
    assert assert_bounded(worker, name, build(kinds.HEAD_BYTES)) == expected


def test_the_162_byte_markup_file(worker: SniffWorker) -> None:
    """The exact file of the report ("<?a?>" * 32 + "<1", 162 bytes): before, over 60 s."""
    data = b"<?a?>" * 32 + b"<1"
    assert len(data) == 162
    assert worker.kind("upload", data, timeout=CEILING)["result"] == "text"


def test_a_longer_head_is_cut_to_head_bytes(worker: SniffWorker) -> None:
    """A caller passing more than HEAD_BYTES still gets only that prefix parsed."""
    data = hostile_inputs.newline_flood(4 * kinds.HEAD_BYTES)
    assert worker.kind("upload", data, timeout=CEILING)["result"] == "text"


# --- adversarial generators, one per sniffer path ------------------------------------------


def repeated(tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    """A short unit of ``tokens`` repeated to 1-64 KiB, with a short tail: the shape of every
    backtracking input (a unit the pattern can split many ways, then a mismatch)."""
    unit = st.lists(st.sampled_from(tokens), min_size=1, max_size=8).map(b"".join)
    tail = st.lists(st.sampled_from(tokens), max_size=4).map(b"".join)
    size = st.sampled_from([1024, 8 * 1024, 64 * 1024])
    return st.builds(lambda u, t, n: hostile_inputs.grown(u, n, suffix=t), unit, tail, size)


MARKUP = [b"<", b">", b"?", b"<?", b"?>", b"<!--", b"-->", b"<!DOCTYPE", b" ", b"a", b"1", b"\n"]
CSV = [b",", b'"', b"'", b";", b"\t", b"|", b"\n", b"\r\n", b" ", b"a", b"1", b'",', b',"']
JSON = [b"[", b"]", b"{", b"}", b'"', b":", b",", b"1", b"e5", b'"type"', b" ", b"\n", b"\\"]
LINES = [b"\n", b"\r", b"\x0b", b"\x0c", b" ", b"\t", b"a", b"CREATE", b"TABLE", b"TEMP", b"%"]
ZIP = [b"PK\x01\x02", b"PK\x03\x04", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"mimetype",
       b"\x00", b"\xff", b"\x08\x00", b"xl/"]  # fmt: skip


@EXAMPLES
@given(data=repeated(MARKUP), name=st.sampled_from(["upload", "x.xml", "x.xls", "x.svg"]))
def test_markup_is_linear(worker: SniffWorker, data: bytes, name: str) -> None:
    assert_bounded(worker, name, data)


@EXAMPLES
@given(data=repeated(CSV), name=st.sampled_from(["upload", "x.csv", "x.xls", "x.txt"]))
def test_delimited_text_is_linear(worker: SniffWorker, data: bytes, name: str) -> None:
    assert_bounded(worker, name, data)


@EXAMPLES
@given(data=repeated(JSON), name=st.sampled_from(["upload", "x.json", "x.geojson"]))
def test_json_is_linear(worker: SniffWorker, data: bytes, name: str) -> None:
    assert_bounded(worker, name, b"[" + data)


@EXAMPLES
@given(data=repeated(LINES), name=st.sampled_from(["upload", "x.sql", "x.arff", "x.yaml"]))
def test_line_floods_are_linear(worker: SniffWorker, data: bytes, name: str) -> None:
    assert_bounded(worker, name, b"a" + data)


@EXAMPLES
@given(data=repeated(ZIP), name=st.sampled_from(["upload", "x.zip", "x.xlsx", "x.docx"]))
def test_zip_heads_are_linear(worker: SniffWorker, data: bytes, name: str) -> None:
    assert_bounded(worker, name, b"PK\x03\x04" + data)


@EXAMPLES
@given(
    data=st.binary(max_size=4096),
    tail=repeated([b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x07", b"\xff", b"\x00"]),
)
def test_zip_files_are_bounded(
    worker: SniffWorker, tmp_path: Path, data: bytes, tail: bytes
) -> None:
    """A file on disk (the store's path): the end records and directory come from the file."""
    path = tmp_path / "x.zip"
    path.write_bytes(b"PK\x03\x04" + data + tail)
    request = {"op": "kind", "name": "x.zip", "file": str(path)}
    assert worker.call(request, timeout=CEILING)["seconds"] < CEILING


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"GIF89a", b"RIFF", b"BM", b"II*\x00", b"MM\x00*"]


@EXAMPLES
@given(magic=st.sampled_from(MAGIC), body=repeated([b"\xff", b"\x00", b"\x01", b"\xfe", b"\xc0"]))
def test_image_headers_are_bounded(worker: SniffWorker, magic: bytes, body: bytes) -> None:
    data = base64.b64encode(magic + body).decode()
    for op in ("image_size", "prepare"):
        assert worker.call({"op": op, "data": data}, timeout=CEILING)["seconds"] < CEILING
    assert_bounded(worker, "x.png", magic + body)


# --- a million ZIP entries; a 7999 x 7999 PNG ----------------------------------------------


def test_a_million_entry_zip_costs_little_cpu_and_memory(
    worker: SniffWorker, tmp_path: Path
) -> None:
    """45 MiB, one million entries: before, 10 s of CPU and 450 MiB in the bot."""
    path = hostile_inputs.million_entry_zip(tmp_path / "many.zip")
    answer = worker.call({"op": "kind", "name": "many.zip", "file": str(path)}, timeout=30)
    assert answer["result"] == "zip"
    assert answer["cpu"] < 1.0, answer
    assert answer["rise"] < 16 * MIB, answer


def test_a_huge_png_is_refused_before_decoding(worker: SniffWorker, tmp_path: Path) -> None:
    """62 KiB that claim 7999 x 7999 pixels: refused from the header, memory barely moves
    (before: decoded in the bot, +308 MiB)."""
    path = tmp_path / "huge.png"
    path.write_bytes(hostile_inputs.huge_png())
    answer = worker.call({"op": "prepare", "file": str(path)}, timeout=30)
    assert answer["result"] == "ImageTooLarge: 7999x7999", answer
    assert answer["rise"] < 16 * MIB, answer


async def test_the_model_is_told_why_a_huge_image_is_not_shown(tmp_path: Path) -> None:
    """Through the real engine and the loopback API: the request carries a note with the
    image's size and what to do, and no image; the turn is answered."""
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("noted"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o")
        async with open_app(settings) as services:
            assert services.engine is not None
            saved = await services.store.save(
                "42", "huge.png", chunks_of(hostile_inputs.huge_png())
            )
            turn = services.engine.turn("42", "c", "what is this?", image_ids=[saved.record.id])
            events = [event async for event in turn]
    assert isinstance(events[-1], Final), events[-1]
    parts = [
        part
        for message in api.requests[-1]["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
    ]
    assert not [p for p in parts if p["type"] == "image_url"]
    [note] = [p["text"] for p in parts if p["type"] == "text" and saved.record.id in p["text"]]
    assert "7999x7999 pixels" in note and "smaller copy" in note


def test_a_big_jpeg_is_decoded_as_a_draft() -> None:
    """A 6000 x 4000 JPEG is over the decoding cap at full size, but decoded at half its size
    (draft) it fits, and reaches the model downscaled."""
    out = io.BytesIO()
    Image.new("L", (6000, 4000), 128).save(out, "JPEG", quality=50)
    prepared = images._prepare(out.getvalue(), "gpt-4o", "auto")
    assert 6000 * 4000 > images.MAX_DECODE_PIXELS
    assert prepared is not None and max(prepared.width, prepared.height) <= 2048


# --- issue 19: text in a legacy code page keeps its table kind -----------------------------

ROWS = {
    "cp1251": "Город;Сумма\nМосква;1 234,5\nКазань;99,9\n",
    "cp1250": "Město;Částka\nPraha;1 234,5\nBrno;99,9\n",
    "cp1252": "Stadt;Betrag\nMünchen;1.234,5\nKöln;99,9\nZürich;3,5\n",
    "latin-1": "Ville;Montant\nOrléans;1 234,5\nNîmes;99,9\n",
    "shift_jis": "都市,金額\n東京,1234\n大阪,999\nポート,5\n",
    "gb18030": "城市,金额\n北京,1234\n上海,999\n",
}
UNICODE_TEXT = "Name\tMenge\nÄpfel\t3\nBirnen\t5\n"  # Excel's "Unicode text" (UTF-16, tabs)
TABLE_NAMES = ["t.csv", "t.tsv", "t.txt", "t.dat", "t.TXT"]


@pytest.mark.parametrize("encoding", sorted(ROWS))
@pytest.mark.parametrize("name", TABLE_NAMES)
def test_legacy_code_pages_keep_the_extension(encoding: str, name: str) -> None:
    data = (ROWS[encoding] * 200).encode(encoding)
    assert detect_kind(name, data).name == kind_for_filename(name).name  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF16_LE + UNICODE_TEXT.encode("utf-16-le"),
        UNICODE_TEXT.encode("utf-16-le"),
        UNICODE_TEXT.encode("utf-16-be"),
        codecs.BOM_UTF16_BE + UNICODE_TEXT.encode("utf-16-be"),
        codecs.BOM_UTF32_LE + UNICODE_TEXT.encode("utf-32-le"),
    ],
    ids=["utf16le-bom", "utf16le", "utf16be", "utf16be-bom", "utf32le-bom"],
)
@pytest.mark.parametrize("name", TABLE_NAMES)
def test_utf16_tables_keep_the_extension(data: bytes, name: str) -> None:
    assert detect_kind(name, data * 50).name == kind_for_filename(name).name  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding", sorted(ROWS))
def test_legacy_tables_without_an_extension_are_tables(encoding: str) -> None:
    """Without an extension, the content decides: a cp1251 table is a table, not binary."""
    assert detect_kind("export", (ROWS[encoding] * 50).encode(encoding)).name == "csv"


def test_unicode_text_without_an_extension_is_a_tsv() -> None:
    assert detect_kind("export", UNICODE_TEXT.encode("utf-16-le") * 50).name == "tsv"


@pytest.mark.parametrize("name", ["t.csv", "t.txt", "t.dat"])
def test_nul_bytes_still_mean_binary(name: str) -> None:
    """Strong evidence still wins over the extension: NULs that are not UTF-16 text."""
    data = bytes(range(256)) * 40
    assert detect_kind(name, data).name == "binary"


def test_a_signature_still_wins_over_a_table_extension() -> None:
    assert detect_kind("t.csv", b"SQLite format 3\x00" + bytes(100)).name == "sqlite"


# --- the same class outside the sniffer: URL patterns over provider and log text ------------


@pytest.mark.parametrize(
    "call", ["labbot.llm.client.scrub", "labbot.logs.mask_urls"], ids=["scrub", "mask_urls"]
)
def test_url_masking_is_linear(call: str) -> None:
    """64 KB of "a." (each word start a possible URL scheme): before, 16 KB took 1.6-1.9 s
    (quadratic: 64 KB about 30 s) in every provider error or log line holding it."""
    module, _, name = call.rpartition(".")
    code = f"import {module} as m; print(len(m.{name}('a.' * 32000)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=CEILING + 5
    )
    assert done.stdout.strip() == "64000", done.stderr


def test_a_legacy_csv_named_xls_is_a_csv() -> None:
    """A bank's "report.xls" that is really a cp1251 CSV: text, so sniffed (before: binary,
    so the extension's Excel kind stood and the Excel reader failed on it)."""
    assert detect_kind("report.xls", (ROWS["cp1251"] * 50).encode("cp1251")).name == "csv"
