"""How far an xlsx sheet reaches, read from its XML before any reader builds it: a 1 KB file
with cells at A1 and XFD1048576 makes calamine allocate the whole bounding box (17 billion
cells, 512 GiB), which ends the session. One linear pass over each sheet's XML, in chunks."""

from __future__ import annotations

import re
import zipfile

from load_raw import LoadError

MAX_CELLS = 50_000_000  # a bounding box beyond this is refused, however full
SPARSE_BOX = 2_000_000  # beyond this, refused when the box is mostly empty ...
SPARSE_RATIO = 100  # ... more than this many boxed cells per value
CHUNK = 1 << 20
# A cell's reference (a bounded look past the tag name: linear). The reader sizes its table by
# the cells, not by the sheet's <dimension>, which is not trusted here either.
_REF = re.compile(rb"<(?:\w{1,20}:)?(c)\s[^>]{0,400}?\br=\"([A-Z]{1,3})(\d{1,7})()()\"")


def _column(letters: bytes) -> int:
    number = 0
    for char in letters:
        number = number * 26 + char - 64
    return number


def _cell_name(column: int, row: int) -> str:
    letters = ""
    while column:
        column, rest = divmod(column - 1, 26)
        letters = chr(65 + rest) + letters
    return f"{letters}{row}"


def check_xlsx(path: str, name: str) -> None:
    """Raise LoadError when a worksheet's cells span a box too large to build."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not an xlsx container: the reader says what is wrong
    with archive:
        for info in archive.infolist():
            if info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml"):
                _check_sheet(archive, info, name)


def _check_sheet(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> None:
    low_row = low_col = 1 << 40
    high_row = high_col = cells = 0
    tail = b""
    with archive.open(info) as sheet:
        while chunk := sheet.read(CHUNK):
            data = tail + chunk
            end = 0
            for match in _REF.finditer(data):
                end = match.end()
                first_col, first_row = _column(match[2]), int(match[3])
                last_col = _column(match[4]) if match[4] else first_col
                last_row = int(match[5]) if match[5] else first_row
                low_row, low_col = min(low_row, first_row), min(low_col, first_col)
                high_row, high_col = max(high_row, last_row), max(high_col, last_col)
                cells += match[1] == b"c"
            tail = data[max(end, len(data) - 600) :]  # a reference cut by the chunk's end
    if not high_row:
        return
    box = (high_row - low_row + 1) * (high_col - low_col + 1)
    if box > MAX_CELLS or (box > SPARSE_BOX and box > SPARSE_RATIO * max(cells, 1)):
        span = f"{_cell_name(low_col, low_row)}:{_cell_name(high_col, high_row)}"
        sheet = info.filename.rsplit("/", 1)[-1].removesuffix(".xml")
        raise LoadError(
            f"{name}: {sheet} spans {span} ({box:,} cells) but holds {cells:,} values, too"
            " large a table to build. Read its cells with openpyxl instead:"
            " openpyxl.load_workbook(FILES[<id>], read_only=True)."
        )
