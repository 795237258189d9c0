"""The kernel's same-page merging (KSM), which lets idle sessions share their preloaded pages
(SANDBOX_SHARE_MEMORY): its state, and starting it when the bot is root.

Only memory a process marks (MADV_MERGEABLE: the kernel marks what its preload mapped) is ever
scanned, so starting KSM changes nothing for any other process of the machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KSM_DIR = Path("/sys/kernel/mm/ksm")
PAGE = 4096
ENABLE_HINT = "as root, `echo 1 > /sys/kernel/mm/ksm/run` (`make setup` does it)"


@dataclass(frozen=True, slots=True)
class MergingState:
    """What KSM does now: ``run`` 0 stopped, 1 merging, 2 unmerging; None without KSM."""

    run: int | None
    pages_sharing: int = 0  # pages that point at a merged copy: the pages saved

    @property
    def running(self) -> bool:
        """True when KSM merges marked pages."""
        return self.run == 1

    @property
    def saved_bytes(self) -> int:
        """Memory the merging saves now, machine-wide."""
        return self.pages_sharing * PAGE


def merging_state(root: Path = KSM_DIR) -> MergingState:
    """KSM's state, from sysfs (run None when the kernel has no KSM)."""
    try:
        run = int((root / "run").read_text())
    except (OSError, ValueError):
        return MergingState(run=None)
    try:
        sharing = int((root / "pages_sharing").read_text())
    except (OSError, ValueError):
        sharing = 0
    return MergingState(run=run, pages_sharing=sharing)


def start_merging(root: Path = KSM_DIR) -> bool:
    """Start KSM if it is stopped (needs root); True if it runs afterwards. An operator's
    ``run=2`` (unmerge everything) is left alone."""
    state = merging_state(root)
    if state.run != 0:
        return state.running
    try:
        (root / "run").write_text("1")
    except OSError as exc:
        log.warning("ksm.start_failed errno=%s", exc.errno)
        return False
    log.info("ksm.started: idle sessions now share their preloaded pages")
    return True
