"""The limits of one session, as one value the jail, the kernel client and the kernel share."""

from __future__ import annotations

from dataclasses import dataclass

from labbot.config import MIB, Settings
from labbot.sandbox.runtime.protocol import CellLimits


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per-session limits: the kernel enforces the first group (cgroups, rlimits, tmpfs sizes),
    the host enforces the output limits again on everything the sandbox sends back."""

    memory_bytes: int
    cpu_seconds: float
    cpus: float
    processes: int
    disk_bytes: int
    open_files: int
    wall_seconds: float
    output_bytes: int
    max_file_bytes: int
    max_output_files: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        """The limits the settings describe."""
        return cls(
            memory_bytes=settings.SANDBOX_MEMORY_MB * MIB,
            cpu_seconds=settings.SANDBOX_CPU_SECONDS,
            cpus=settings.SANDBOX_CPUS,
            processes=settings.SANDBOX_MAX_PROCESSES,
            disk_bytes=settings.SANDBOX_DISK_MB * MIB,
            open_files=settings.SANDBOX_OPEN_FILES,
            wall_seconds=settings.CODE_EXECUTION_TIMEOUT,
            output_bytes=settings.SANDBOX_OUTPUT_KB * 1024,
            max_file_bytes=settings.max_file_bytes,
            max_output_files=settings.SANDBOX_MAX_OUTPUT_FILES,
        )

    @property
    def output_head(self) -> int:
        """Characters of a stream kept (and streamed live) from its start."""
        return self.output_bytes * 3 // 4

    @property
    def output_tail(self) -> int:
        """Characters of a stream kept from its end."""
        return self.output_bytes - self.output_head

    @property
    def output_files_bytes(self) -> int:
        """The bytes of files one execution may return: its output folder's size, plus room
        for the figures it drew."""
        return self.disk_bytes + 64 * MIB

    def cell(self) -> CellLimits:
        """What each cell's request tells the kernel (the host checks the same again)."""
        return CellLimits(
            cpu_seconds=self.cpu_seconds,
            output_head=self.output_head,
            output_tail=self.output_tail,
            max_file_bytes=self.max_file_bytes,
            max_output_files=self.max_output_files,
            output_files_bytes=self.output_files_bytes,
        )
