"""The terminal prompt (prompt_toolkit, the ``[console]`` extra): completion, history, and the feed
printed above the line being typed. Imported only when stdin is a terminal and the extra is installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from server.console.commands import completions
from server.console.model import Console


class App(Protocol):
    """What the prompt needs of the console's app (``shell.App``)."""

    console: Console

    async def execute(self, line: str) -> bool: ...


class ConsoleCompleter(Completer):
    """Command names, then each command's arguments: people, comment, poll or question ids, choices."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        for text, start, meta in completions(self.console, document.text_before_cursor):
            yield Completion(text, start_position=start, display_meta=meta)


async def prompt_loop(app: App, history_file: Path | None) -> None:
    """Lines from the terminal, with completion and history, while the feed prints above the prompt."""
    history: History = InMemoryHistory() if history_file is None else FileHistory(str(history_file))
    session: PromptSession[str] = PromptSession(history=history, completer=ConsoleCompleter(app.console))
    with patch_stdout(raw=True):
        while True:
            try:
                line = await session.prompt_async(lambda: f"{app.console.current}> ")
            except KeyboardInterrupt:
                continue  # Ctrl-C clears the line
            except EOFError:
                return
            if not await app.execute(line):
                return
