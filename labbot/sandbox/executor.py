"""The Executor seam: how the engine and the front ends run code, wherever it runs.

``CodeInterpreter`` (sessions on this machine, the default) and
``labbot.remote.executor.RemoteExecutor`` (sessions on worker machines over NATS) both pass
``tests/remote/test_executor_contract.py``; ``labbot.app`` picks one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from labbot.core import ExecutionResult

OutputHandler = Callable[[str, str], Awaitable[None]]


class Executor(Protocol):
    """Runs a conversation's code in its own stateful session."""

    async def start(self) -> None:
        """Get ready to run code (warm pools, connections)."""
        ...

    async def close(self) -> None:
        """End every session and release everything."""
        ...

    async def run(
        self, user: str, conversation: str, code: str, *, on_output: OutputHandler | None = None
    ) -> ExecutionResult:
        """Run ``code`` in the (user, conversation) session; failures of the code are results.

        :raises SandboxError: the code cannot run at all (no sandbox, no room, no worker).
        """
        ...

    async def stop(self, user: str, conversation: str) -> bool:
        """Interrupt the conversation's running code; True if something was running."""
        ...

    async def reset(self, user: str, conversation: str) -> bool:
        """Forget the conversation's variables (files stay); True if a session was live."""
        ...
