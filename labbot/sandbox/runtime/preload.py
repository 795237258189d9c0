"""The warm start of a kernel: the data stack imported once, then kept still so that sessions can
share its pages.

With ``share`` (SANDBOX_SHARE_MEMORY), every private writable mapping that exists once the
preload is done is marked MADV_MERGEABLE: the kernel's same-page merging (KSM) may then keep one
copy of each page that is identical in every session. Pages are identical because the launcher
starts Python with address randomisation off and every session of one bot with the same hash
seed, and because ``gc.freeze()`` keeps the collector from rewriting the preloaded objects.
Memory mapped later (the user's data, in new arenas) is never marked.
"""

from __future__ import annotations

import ctypes
import gc

MADV_MERGEABLE = 12
SKIPPED = ("[stack]", "[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]")


def preload(*, imports: bool, share: bool) -> int:
    """Import the data stack (when ``imports``), freeze the collector's view of it, and (when
    ``share``) mark what is mapped for merging; returns the bytes marked."""
    if imports:
        import matplotlib.pyplot  # noqa: F401 - the kernel's hook prepares it on import
        import numpy  # noqa: F401
        import pandas  # noqa: F401
    # Collect the import's garbage once, then move every survivor to the permanent generation:
    # later collections never walk (or write to) the preloaded objects' pages again.
    gc.collect()
    gc.freeze()
    return mark_mergeable() if share else 0


def mark_mergeable() -> int:
    """madvise(MADV_MERGEABLE) every private writable mapping but the stacks; the bytes marked
    (a mapping the kernel refuses is left as it is)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    marked = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            perms, name = fields[1], (fields[5] if len(fields) > 5 else "")
            if perms[1] != "w" or perms[3] != "p" or name in SKIPPED:
                continue
            low, high = (int(part, 16) for part in fields[0].split("-"))
            if libc.madvise(low, high - low, MADV_MERGEABLE) == 0:
                marked += high - low
    return marked
