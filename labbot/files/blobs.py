"""Where file contents live, behind one small seam (``BlobStore``).

``LocalBlobStore`` (the default) keeps one folder per user under the data dir, written atomically;
``labbot.files.objects.ObjectBlobStore`` keeps the same layout in S3-compatible storage. Blobs are
immutable and keyed by ``<user>/<file_id>``; a writer never replaces a blob that exists (an id
is fresh, and a worker that reports an existing one must not destroy its bytes).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from labbot.errors import InvalidFileId, InvalidUser, SymlinkRefused
from labbot.files.names import is_file_id
from labbot.private import private_dir

log = logging.getLogger(__name__)

USER_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}"  # a folder name, never "." or ".."
_USER_RE = re.compile(USER_PATTERN)
TMP_DIR = ".tmp"
# Blob files are readable by others ON PURPOSE: the sandbox runs user code as a separate
# unprivileged uid and reads the user's files through hard links to these blobs. What keeps
# other local users out is the folders: the data dir, the blob root, .tmp and every user's
# folder are 0700 (the owner's alone), so a 0644 blob cannot be reached from outside.
BLOB_MODE = 0o644
READ_CHUNK = 1024 * 1024


async def file_chunks(
    path: Path, chunk_size: int = READ_CHUNK, *, follow_symlinks: bool = False
) -> AsyncGenerator[bytes, None]:
    """Stream a local file in chunks without blocking the event loop.

    :raises IsADirectoryError: ``path`` is no regular file (a folder, a pipe, a socket, a
        device): a FIFO would wait for ever for a writer, ``/dev/zero`` never ends.
    :raises SymlinkRefused: ``path`` is a symbolic link and ``follow_symlinks`` is False.
    """
    local = await open_local_file(path, follow_symlinks=follow_symlinks)
    async for chunk in local.chunks(chunk_size):
        yield chunk


@dataclass(slots=True)
class LocalFile:
    """An opened local file and the real path of what was opened (read from the open
    descriptor, so it names exactly the file whose bytes are read)."""

    handle: BinaryIO
    real_path: Path
    linked: bool  # the path given was a symbolic link (followed on request)

    async def chunks(self, chunk_size: int = READ_CHUNK) -> AsyncGenerator[bytes, None]:
        """The file's bytes in chunks; the file is closed at the end."""
        try:
            while chunk := await asyncio.to_thread(self.handle.read, chunk_size):
                yield chunk
        finally:
            await asyncio.to_thread(self.handle.close)


async def open_local_file(path: Path, *, follow_symlinks: bool = False) -> LocalFile:
    """Open a regular local file; a symbolic link is refused unless ``follow_symlinks``.

    :raises SymlinkRefused: ``path`` is a link (O_NOFOLLOW on the open itself: no check that
        a swap could slip past). Folders on the way to it are followed.
    :raises IsADirectoryError: not a regular file.
    """
    return await asyncio.to_thread(_open_local, path, follow_symlinks)


def _open_local(path: Path, follow_symlinks: bool) -> LocalFile:
    handle = _open_regular(path, follow_symlinks=follow_symlinks)
    real = Path(os.readlink(f"/proc/self/fd/{handle.fileno()}"))
    named = Path(os.path.realpath(path.parent)) / path.name
    return LocalFile(handle, real, linked=real != named)


def _open_regular(path: Path, *, follow_symlinks: bool = False) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file. O_NONBLOCK, so opening a FIFO does not
    wait for a writer; the check is on the opened file, so a swap after a check cannot fool it."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise SymlinkRefused(path.name, os.readlink(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            why = "it is not a regular file: a folder, a pipe or a device"
            raise IsADirectoryError(errno.EISDIR, why)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_user(user: str) -> str:
    """Return ``user`` if it can name a folder (Discord ids, CLI names), else raise InvalidUser."""
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise InvalidUser(str(user))
    return user


def check_file_id(file_id: str) -> str:
    """Return ``file_id`` if it is one labbot gives out, else raise InvalidFileId."""
    if not is_file_id(file_id):
        raise InvalidFileId(file_id)
    return file_id


def check_blob(user: str, file_id: str) -> tuple[str, str]:
    """The one gate of every blob path and object key: a user id that can name a folder and a
    well-formed file id (no separator, no dot, nothing a caller made up)."""
    return check_user(user), check_file_id(file_id)


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A stored blob found by ``scan``: its owner, its id, its age in seconds and where it is
    (a path or an object key, meaningful only to the store that found it)."""

    user: str
    file_id: str
    ref: str
    age: float


class Writer(Protocol):
    """One blob being written: ``write`` chunks, then ``commit`` (visible) or ``abort`` (gone)."""

    size: int
    head: bytes

    @property
    def sha256(self) -> str: ...

    @property
    def local_path(self) -> Path | None: ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    """Where the bytes of users' files live. Every implementation passes
    ``tests/files/test_blob_contract.py``; every method taking (user, file_id) checks both with
    ``check_blob`` before it builds a path or a key."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def writer(self, user: str, file_id: str, *, head_bytes: int) -> Writer: ...

    def read(self, user: str, file_id: str) -> AsyncGenerator[bytes, None]: ...

    async def size(self, user: str, file_id: str) -> int: ...

    def local_path(self, user: str, file_id: str) -> Path | None: ...

    async def delete(self, user: str, file_id: str) -> None: ...

    async def delete_many(self, blobs: list[tuple[str, str]]) -> None: ...

    async def scan(self) -> tuple[list[StoredBlob], list[StoredBlob]]: ...

    async def remove(self, blobs: list[StoredBlob]) -> None: ...


class BlobWriter:
    """Streams one blob to a temporary file, hashing as it goes; ``commit`` renames it in place.

    Each chunk is written and hashed on a worker thread so the event loop never blocks.
    """

    def __init__(self, tmp_path: Path, final_path: Path, head_bytes: int) -> None:
        self.tmp_path = tmp_path
        self.final_path = final_path
        self.size = 0
        self.head = b""
        self._head_bytes = head_bytes
        self._hash = hashlib.sha256()
        self._fd = -1

    async def open(self) -> None:
        """Create the temporary file (exclusive, mode 0644: see ``BLOB_MODE``)."""
        self._fd = await asyncio.to_thread(self._open)

    def _open(self) -> int:
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BLOB_MODE)
        os.fchmod(fd, BLOB_MODE)  # whatever the umask
        return fd

    def _write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._hash.update(chunk)

    async def write(self, chunk: bytes) -> None:
        """Append a chunk."""
        if len(self.head) < self._head_bytes:
            self.head += chunk[: self._head_bytes - len(self.head)]
        self.size += len(chunk)
        await asyncio.to_thread(self._write, chunk)

    @property
    def sha256(self) -> str:
        """Hex digest of everything written so far."""
        return self._hash.hexdigest()

    @property
    def local_path(self) -> Path:
        """Where the committed blob is on disk (for content sniffing)."""
        return self.final_path

    def _commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        # link, not rename: it fails if the final path exists, so no blob is ever replaced
        os.link(self.tmp_path, self.final_path)
        self.tmp_path.unlink()

    async def commit(self) -> None:
        """Flush to disk and put the blob at its final path in one link.

        :raises FileExistsError: a blob with this id exists (it is left as it is).
        """
        await asyncio.to_thread(self._commit)

    def _abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp_path.unlink(missing_ok=True)

    async def abort(self) -> None:
        """Drop the partial file; safe to call twice."""
        await asyncio.to_thread(self._abort)


class LocalBlobStore:
    """Blobs in ``root/<user>/<file_id>``; partial writes live in ``root/.tmp`` until committed.

    Paths come only from validated user ids and generated file ids, never from file names.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def start(self) -> None:
        """Create the folders."""
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        private_dir(self.root)
        private_dir(self.root / TMP_DIR)

    async def close(self) -> None:
        """Nothing to release."""

    def local_path(self, user: str, file_id: str) -> Path:
        """The blob's path: local blobs are mounted into the sandbox as they are."""
        return self.path(user, file_id)

    def path(self, user: str, file_id: str) -> Path:
        """Where the blob ``file_id`` of ``user`` lives."""
        user, file_id = check_blob(user, file_id)
        return self.root / user / file_id

    async def writer(self, user: str, file_id: str, *, head_bytes: int) -> BlobWriter:
        """An open writer for a new blob.

        :raises FileExistsError: a blob with this id exists (``commit`` checks again).
        """
        final = self.path(user, file_id)
        await asyncio.to_thread(final.parent.mkdir, mode=0o700, exist_ok=True)
        if await asyncio.to_thread(os.path.lexists, final):
            raise FileExistsError(errno.EEXIST, "a blob with this id exists", str(final))
        writer = BlobWriter(
            self.root / TMP_DIR / f"{file_id}.{os.getpid()}.{secrets.token_hex(4)}.part",
            final,
            head_bytes,
        )
        await writer.open()
        return writer

    def read(self, user: str, file_id: str) -> AsyncGenerator[bytes, None]:
        """Stream a blob's bytes in chunks."""
        return file_chunks(self.path(user, file_id))

    async def size(self, user: str, file_id: str) -> int:
        """A stored blob's size in bytes; FileNotFoundError if there is none."""
        stat = await asyncio.to_thread(os.stat, self.path(user, file_id))
        return stat.st_size

    async def delete(self, user: str, file_id: str) -> None:
        """Remove a blob if it exists."""
        await asyncio.to_thread(self.path(user, file_id).unlink, missing_ok=True)

    async def delete_many(self, blobs: list[tuple[str, str]]) -> None:
        """Remove several blobs (user, file_id) in one trip to a worker thread."""

        paths = [self.path(user, file_id) for user, file_id in blobs]  # all checked first

        def delete_all() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        await asyncio.to_thread(delete_all)

    async def scan(self) -> tuple[list[StoredBlob], list[StoredBlob]]:
        """Every committed blob and every partial file, with their ages."""
        return await asyncio.to_thread(self._scan)

    def _scan(self) -> tuple[list[StoredBlob], list[StoredBlob]]:
        import time

        now = time.time()
        blobs: list[StoredBlob] = []
        partial: list[StoredBlob] = []
        if not self.root.exists():
            return blobs, partial
        with os.scandir(self.root) as users:
            for user in users:
                if not user.is_dir(follow_symlinks=False):
                    continue
                target = partial if user.name == TMP_DIR else blobs
                with os.scandir(user.path) as entries:
                    for entry in entries:
                        try:
                            age = now - entry.stat(follow_symlinks=False).st_mtime
                        except FileNotFoundError:  # deleted meanwhile (another process)
                            continue
                        target.append(
                            StoredBlob(user.name, entry.name.split(".")[0], entry.path, age)
                        )
        return blobs, partial

    async def remove(self, blobs: list[StoredBlob]) -> None:
        """Remove scanned blobs."""

        def remove_all() -> None:
            for blob in blobs:
                Path(blob.ref).unlink(missing_ok=True)

        await asyncio.to_thread(remove_all)
