"""The Executor seam: how the engine and the front ends run code, wherever it runs.

``CodeInterpreter`` (sessions on this machine, the default) and
``labbot.remote.executor.RemoteExecutor`` (sessions on worker machines over NATS) both pass
``tests/remote/test_executor_contract.py``.
"""

from __future__ import annotations

from typing import Protocol

from labbot.config import Settings
from labbot.files import FileStore
from labbot.sandbox.interpreter import CodeInterpreter, ExecutionResult, OutputHandler


class Executor(Protocol):
    """Runs a conversation's code in its own stateful session."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def run(
        self, user: str, conversation: str, code: str, *, on_output: OutputHandler | None = None
    ) -> ExecutionResult: ...

    async def stop(self, user: str, conversation: str) -> bool: ...

    async def reset(self, user: str, conversation: str) -> bool: ...


def create_executor(settings: Settings, store: FileStore) -> Executor:
    """The executor LABBOT_EXECUTOR names (not started)."""
    if settings.LABBOT_EXECUTOR == "nats":
        from labbot.remote.executor import RemoteExecutor

        return RemoteExecutor(settings, store)
    return CodeInterpreter(settings, store)
