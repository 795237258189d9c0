"""The per-user file store: ids, limits, expiry, eviction and clean-up."""

from __future__ import annotations

from labbot.config import Settings
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


def create_file_store(settings: Settings) -> FileStore:
    """The file store the settings describe (not started)."""
    from labbot.files.objects import open_blob_store

    meta = SqliteMetadataStore(settings.database_path)
    return FileStore(meta, open_blob_store(settings), Limits.from_settings(settings))


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
    "create_file_store",
    "detect_kind",
    "file_chunks",
    "kind_by_name",
    "render_upload_confirmation",
]
