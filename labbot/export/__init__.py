"""A conversation as a Jupyter notebook, alone or bundled with the files it loads; reads
history and files only."""

from __future__ import annotations

from labbot.export.bundle import write_bundle
from labbot.export.notebook import Export, ExportedFile, ExportError, export_conversation

__all__ = ["Export", "ExportError", "ExportedFile", "export_conversation", "write_bundle"]
