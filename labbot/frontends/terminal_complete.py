"""What the Python console asks the user's session, and how it reads the answer: Tab completion
(names, attributes, the user's file names inside a string), /vars, and the width DataFrames are
shown at. Each question is one short cell of the runtime's ``console_help`` (the session is idle
at the prompt); its answer is the cell's value, parsed with ``ast.literal_eval`` and checked
here again: the host trusts nothing that comes out of the sandbox.

    session = SessionQuestions(executor, user, conversation)
    names = await session.complete("df.co")       # ["df.columns", "df.copy", ...]
    rows = await session.variables()              # [Variable("df", "DataFrame", "3 x 2", 192)]
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

if TYPE_CHECKING:
    from labbot.sandbox import Executor

ANSWER_SECONDS = 3.0  # a question not answered by then is dropped (it finishes in the session)
MAX_ITEMS = 200
MAX_TEXT = 200
_WORD = re.compile(r"(?<![\w.])[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?$")
_IN_STRING = re.compile(r"""(['"])([^'"\\]*)$""")  # an open string: a file name is typed
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True, slots=True)
class Variable:
    """One row of /vars."""

    name: str
    type: str
    shape: str
    bytes: int


def parse_answer(value: str | None) -> list[Any]:
    """The cell's value as a list, or [] when it is anything else (never evaluated)."""
    if value is None or len(value) > 6000:
        return []
    try:
        answer = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    return answer[:MAX_ITEMS] if isinstance(answer, list) else []


class SessionQuestions:
    """Short questions to one conversation's session, through the executor like any cell."""

    def __init__(self, executor: Executor, user: str, conversation: str) -> None:
        self.executor, self.user, self.conversation = executor, user, conversation
        self._width: int | None = None  # the width pandas was given, once it took it
        # What a question's cell said of the session (restarted, variables restored): shown
        # with the next cell's result, as the question's own result is not shown.
        self.notes: list[str] = []

    async def _ask(self, expression: str) -> str | None:
        run = self.executor.run(self.user, self.conversation, expression)
        task = asyncio.ensure_future(run)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a late one is heard
        try:  # shielded: a cell cut off would cost the session; a late one just finishes
            result = await asyncio.wait_for(asyncio.shield(task), ANSWER_SECONDS)
        except TimeoutError:
            return None
        if result.session_restarted:
            self.notes.extend(result.notes[:1])
        return result.value if result.status == "ok" else None

    async def complete(self, text: str) -> list[str]:
        """Completions of a dotted name (``df.co``): each the whole dotted text."""
        if not _NAME.fullmatch(text.rstrip(".")) or len(text) > MAX_TEXT:
            return []
        question = f"__import__('console_help').complete({text!r}, globals())"
        answer = parse_answer(await self._ask(question))
        return [a for a in answer if isinstance(a, str) and _NAME.fullmatch(a)]

    async def variables(self) -> list[Variable]:
        """The session's variables: name, type, shape and memory."""
        rows = parse_answer(await self._ask("__import__('console_help').variables(globals())"))
        return [
            Variable(*row)
            for row in rows
            if isinstance(row, tuple)
            and len(row) == 4
            and all(isinstance(x, str) and len(x) <= MAX_TEXT for x in row[:3])
            and isinstance(row[3], int)
        ]

    async def show_width(self, width: int) -> None:
        """Tell the session the terminal's width (again only when it changed or pandas was not
        imported yet), so DataFrames fill the terminal."""
        if width == self._width:
            return
        taken = await self._ask(f"__import__('console_help').set_width({int(width)})")
        self._width = width if taken == "True" else None


class SessionCompleter(Completer):
    """Tab completion in the console: names and attributes from the session; inside a string,
    the user's stored file names (``load_file('sa<Tab>``)."""

    def __init__(
        self,
        questions: SessionQuestions,
        file_names: Callable[[], Awaitable[Iterable[str]]],
    ) -> None:
        self.questions, self.file_names = questions, file_names

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Any:
        """Completion runs only asynchronously (it asks the session)."""
        return iter(())

    async def get_completions_async(
        self, document: Document, complete_event: CompleteEvent
    ) -> AsyncGenerator[Completion, None]:
        """Completions for the text before the cursor."""
        before = document.current_line_before_cursor
        if opened := _IN_STRING.search(before):
            typed = opened[2]
            for name in sorted(await self.file_names()):
                if name.startswith(typed) and name != typed:
                    yield Completion(name, start_position=-len(typed))
            return
        word = _WORD.search(before)
        if word is None:
            return
        typed = word.group()
        for option in await self.questions.complete(typed):
            if option.startswith(typed) and option != typed:
                yield Completion(option, start_position=-len(typed))
