"""The code interpreter: a bubblewrap sandbox, stateful sessions, and load_file for every kind."""

from labbot.sandbox.executor import Executor, create_executor
from labbot.sandbox.interpreter import CodeInterpreter, ExecutionResult
from labbot.sandbox.jail import Jail, SandboxLimits
from labbot.sandbox.packages import Allowlist, Package

__all__ = [
    "Allowlist",
    "CodeInterpreter",
    "ExecutionResult",
    "Executor",
    "Jail",
    "Package",
    "SandboxLimits",
    "create_executor",
]
