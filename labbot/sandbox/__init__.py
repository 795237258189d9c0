"""The code interpreter: a bubblewrap sandbox, stateful sessions, and load_file for every kind."""

from labbot.sandbox.executor import Executor, OutputHandler
from labbot.sandbox.files import SessionFiles, eviction_notes
from labbot.sandbox.interpreter import CodeInterpreter
from labbot.sandbox.jail import Jail, SandboxLimits
from labbot.sandbox.packages import Allowlist, Package

__all__ = [
    "Allowlist",
    "CodeInterpreter",
    "Executor",
    "Jail",
    "OutputHandler",
    "Package",
    "SandboxLimits",
    "SessionFiles",
    "eviction_notes",
]
