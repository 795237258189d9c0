"""The per-user file store: ids, limits, expiry, eviction and clean-up."""

from __future__ import annotations

from labbot.files.blobs import BlobStore, LocalBlobStore, file_chunks
from labbot.files.kinds import FileKind, detect_kind, kind_by_name
from labbot.files.meta import FileRecord, MetadataStore, SqliteMetadataStore
from labbot.files.receipt import render_upload_confirmation
from labbot.files.store import (
    FileStore,
    Limits,
    ReconcileResult,
    SaveResult,
    SweepResult,
)

__all__ = [
    "BlobStore",
    "FileKind",
    "FileRecord",
    "FileStore",
    "Limits",
    "LocalBlobStore",
    "MetadataStore",
    "ReconcileResult",
    "SaveResult",
    "SqliteMetadataStore",
    "SweepResult",
    "detect_kind",
    "file_chunks",
    "kind_by_name",
    "render_upload_confirmation",
]
