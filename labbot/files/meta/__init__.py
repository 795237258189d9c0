"""File metadata backends behind one contract."""

from labbot.files.meta.base import FileRecord, MetadataStore, Source
from labbot.files.meta.sqlite import SqliteMetadataStore

__all__ = ["FileRecord", "MetadataStore", "SqliteMetadataStore", "Source"]
