"""Loaders for structured text (YAML, XML, HTML) and documents and media (images, PDF, docx).

Part of the sandbox loaders (see ``loaders``); heavy libraries are imported inside each loader.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

from load_raw import LoadError, read_bytes, read_text
from load_tables import is_empty

# --- structured text -------------------------------------------------------------------------


def _load_yaml(path: str, name: str, encoding: str | None = None) -> Any:
    import yaml

    class TolerantLoader(yaml.SafeLoader):
        """SafeLoader that builds the plain mapping, sequence or scalar of any unknown tag."""

    def plain(loader: Any, suffix: str, node: Any) -> Iterator[Any]:
        if isinstance(node, yaml.MappingNode):
            data: dict = {}
            yield data
            data.update(loader.construct_mapping(node))
        elif isinstance(node, yaml.SequenceNode):
            items: list = []
            yield items
            items.extend(loader.construct_sequence(node))
        else:
            yield loader.construct_scalar(node)

    TolerantLoader.add_multi_constructor("", plain)
    docs = list(yaml.load_all(read_text(path, encoding), Loader=TolerantLoader))  # noqa: S506
    if not docs:
        return None
    return docs[0] if len(docs) == 1 else docs


def _etree_to_dict(el: Any) -> Any:
    tag = el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else str(el.tag)
    node: dict[str, Any] = {f"@{k.rsplit('}', 1)[-1]}": v for k, v in el.attrib.items()}
    for child in el:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        key, value = next(iter(_etree_to_dict(child).items()))
        if key in node:
            node[key] = node[key] if isinstance(node[key], list) else [node[key]]
            node[key].append(value)
        else:
            node[key] = value
    text = (el.text or "").strip()
    if text:
        node["#text"] = text
    if list(node) == ["#text"]:
        return {tag: text}
    return {tag: node or None}


def _load_xml(path: str, name: str, encoding: str | None = None, **opts: Any) -> Any:
    import pandas as pd
    from lxml import etree

    raw = read_bytes(path)
    if encoding:
        opts["encoding"] = encoding
    try:
        df = pd.read_xml(io.BytesIO(raw), **opts)
        if len(df) and not is_empty(df):
            return df
    except (ValueError, etree.XMLSyntaxError, SyntaxError):
        if "xpath" in opts:
            raise
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    return _etree_to_dict(etree.fromstring(raw, parser))


def _load_html(path: str, name: str, encoding: str | None = None, **opts: Any) -> Any:
    import pandas as pd

    text = read_text(path, encoding)
    try:
        ours = {k: opts.pop(k) for k in ("decimal", "thousands", "dayfirst", "convert",
                                         "keep_totals", "dates") if k in opts}  # fmt: skip
        opts["thousands"] = None  # decided per column below, never per cell
        tables = pd.read_html(io.StringIO(text), **opts)
    except ValueError:  # no <table>: give the readable text
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(text, "lxml")
        for tag in soup(["script", "style"]):
            tag.decompose()
        return re.sub(r"\n\s*\n+", "\n\n", soup.get_text("\n")).strip()
    import text_tables

    # A table with a header row was laid out by hand: notes under it may go.
    tables = [
        text_tables.finish(t, {}, {**ours, "_by_hand": not isinstance(t.columns, pd.RangeIndex)})
        for t in tables
    ]
    return tables[0] if len(tables) == 1 else tables


# --- documents and media ---------------------------------------------------------------------


def _load_image(path: str, name: str) -> Any:
    from PIL import Image

    img = Image.open(path)
    img.load()
    return img


def _load_pdf(path: str, name: str, password: str | None = None) -> str:
    import pypdf

    reader = pypdf.PdfReader(path)
    if reader.is_encrypted:
        if not reader.decrypt(password or ""):
            hint = "the password given is wrong" if password else "it needs a password"
            raise LoadError(
                f"{name} is an encrypted PDF and {hint}; ask the user for the password and "
                "pass password='...', or for an unprotected copy."
            )
    return "\f".join((page.extract_text() or "").strip() for page in reader.pages)


def _load_docx(path: str, name: str) -> str:
    import docx
    from docx.table import Table

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    parts: list[str] = []
    for block in docx.Document(path).iter_inner_content():
        if isinstance(block, Table):
            rows = ["| " + " | ".join(cell(c.text) for c in r.cells) + " |" for r in block.rows]
            parts.append("\n" + "\n".join(rows) + "\n")
        else:
            parts.append(block.text)
    return "\n".join(parts).strip("\n")
