"""What a tool-call parser gives the chat serving: the calls in a whole answer, or per stream chunk the
content and call fragments the growing answer adds.

A diffusion answer streams as a growing prefix (the commit frontier only advances), so a streaming parser
re-reads the whole text so far and sends only what it has not sent; one parser instance per choice."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str
    """JSON text."""


@dataclass(frozen=True, slots=True)
class ExtractedToolCalls:
    tools_called: bool
    calls: list[ParsedCall]
    content: str | None
    """The text that is not a call (None when there is none)."""


@dataclass(frozen=True, slots=True)
class CallDelta:
    index: int
    name: str | None = None
    """Set on a call's first fragment only."""
    arguments: str | None = None


@dataclass(slots=True)
class StreamDelta:
    content: str | None = None
    calls: list[CallDelta] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.content and not self.calls


class ToolParser(ABC):
    """Stateful per choice: extract() reads a whole answer, stream() the answer so far."""

    @abstractmethod
    def extract(self, text: str) -> ExtractedToolCalls: ...

    @abstractmethod
    def stream(self, text: str, *, finished: bool) -> StreamDelta: ...


def partial_tag_overlap(text: str, tag: str) -> int:
    """The length of the longest proper prefix of `tag` that ends `text` (vLLM's parser utility)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ArgumentStreams:
    """Per call index: whether its name went out, and which of its arguments text."""

    def __init__(self) -> None:
        self.named: set[int] = set()
        self.sent: dict[int, str] = {}

    def delta(self, index: int, name: str | None, arguments: str | None) -> list[CallDelta]:
        """A call's fragments: its name once known (never arguments before it), then the argument text
        that extends what was sent (a text that does not extend it waits: what went out stays valid)."""
        deltas = []
        if index not in self.named:
            if name is None:
                return []
            self.named.add(index)
            deltas.append(CallDelta(index, name=name))
        sent = self.sent.get(index, "")
        if arguments is not None and len(arguments) > len(sent) and arguments.startswith(sent):
            deltas.append(CallDelta(index, arguments=arguments[len(sent) :]))
            self.sent[index] = arguments
        return deltas
