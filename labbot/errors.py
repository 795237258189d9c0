"""Every error labbot raises on purpose; ``str(error)`` is a sentence fit for the user.

LabbotError
├── ConfigError                  a setting is missing or invalid
├── FileError
│   ├── FileTooLarge             over MAX_FILE_SIZE_MB, or can never fit the user's quota
│   ├── FileNotFound             no such file for this user (also a LookupError)
│   ├── InvalidUser              a user id that cannot name a store
│   ├── InvalidFileId            a file id labbot never gives out (never reaches a path)
│   └── QuotaInUse               the user's quota is taken by uploads still streaming
├── StorageError                 the metadata database or the disk failed
├── SandboxError                 code cannot run at all (its own failures are results)
│   └── SandboxUnavailable       no sandbox here, no room for a session, no worker
└── LLMError                     the model API refused or failed
    ├── LLMUnavailable           it cannot be reached or failed (after retries)
    ├── LLMAuthError             the key was refused
    ├── LLMRateLimited           too many requests or no quota left
    ├── LLMRequestTooLarge       the request is too large (HTTP 413)
    └── ModelNotAllowed          a model that is not on the operator's list
"""

from __future__ import annotations

from humanize import naturalsize


class LabbotError(Exception):
    """Base class; the message is for the user and ``hint`` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(LabbotError):
    """A setting is missing or has a value labbot cannot use."""


class FileError(LabbotError):
    """A file could not be stored or found."""


class FileTooLarge(FileError):
    """The file is over the per-file limit or can never fit the user's storage quota."""

    def __init__(self, *, limit_bytes: int, what: str = "the per-file limit") -> None:
        super().__init__(
            f"That file is too large: {what} is {naturalsize(limit_bytes, binary=True)}.",
            hint="Split it or compress it, then try again.",
        )
        self.limit_bytes = limit_bytes


class FileNotFound(FileError, LookupError):
    """No live file with this id belongs to this user."""

    def __init__(self, file_id: str) -> None:
        super().__init__(
            f"No file with id {file_id!r}: it may have expired, been evicted or deleted.",
            hint="List your files to see what is there.",
        )
        self.file_id = file_id


class InvalidUser(FileError):
    """A user id that cannot be used to name a store."""

    def __init__(self, user: str) -> None:
        super().__init__(
            f"Invalid user id {user[:80]!r}: use 1 to 64 letters, digits, '.', '_' or '-'."
        )


class InvalidFileId(FileError):
    """A file id that labbot never gives out; it never reaches a path or an object key."""

    def __init__(self, file_id: object) -> None:
        shown = file_id[:80] if isinstance(file_id, str) else type(file_id).__name__
        super().__init__(
            f"Invalid file id {shown!r}: file ids are the 26 letters and digits labbot gives."
        )


class QuotaInUse(FileError):
    """The user's other uploads, still streaming, already take the whole storage quota."""

    def __init__(self, *, limit_bytes: int) -> None:
        super().__init__(
            "Your other uploads in progress already take your storage quota"
            f" ({naturalsize(limit_bytes, binary=True)}), so this one was not saved.",
            hint="Try again when they have finished.",
        )
        self.limit_bytes = limit_bytes


class SymlinkRefused(FileError):
    """A local file to store is a symbolic link, and links are not followed."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(
            f"{name} is a symbolic link (to {target}); links are not followed, so nothing was"
            " stored.",
            hint="Name the real file (files add and /upload take --follow-symlinks to store"
            " what a link points to).",
        )
        self.target = target


class StorageError(LabbotError):
    """The metadata database or the disk failed; nothing was half-saved."""


class FileIdTaken(StorageError):
    """A record with this file id exists already (any user's); nothing was changed."""

    def __init__(self, file_id: str) -> None:
        super().__init__(f"The file id {file_id} is in use already; nothing was changed.")
        self.file_id = file_id


class SandboxError(LabbotError):
    """The code interpreter could not do what was asked."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot run here; the hint names the fix."""


class LLMError(LabbotError):
    """The model API refused or failed the request."""


class LLMUnavailable(LLMError):
    """The model API could not be reached, timed out, or kept failing."""


class LLMAuthError(LLMError):
    """The model API refused the credentials."""


class LLMRateLimited(LLMError):
    """The model API is rate limiting us or the quota is used up."""


class LLMRequestTooLarge(LLMError):
    """The model API refused the request as too large (HTTP 413)."""


class ModelNotAllowed(LLMError):
    """A model name that is not on the operator's allow-list (ALLOWED_MODELS)."""

    SHOWN = 25  # names listed in the message at most

    def __init__(self, name: str, allowed: list[str]) -> None:
        shown = ", ".join(allowed[: self.SHOWN])
        more = f" and {len(allowed) - self.SHOWN} more" if len(allowed) > self.SHOWN else ""
        super().__init__(
            f"The model {name[:100]!r} is not offered here.",
            hint=f"Pick one of: {shown}{more}.",
        )
        self.name = name
