"""A job's event stream: server-sent events (the WHATWG format) decoded line by line, without I/O,
and the signal that a service streams none."""

from __future__ import annotations

from dataclasses import dataclass


class NoEventStream(Exception):
    """The service answered a request for a job's events with something other than a stream: poll instead."""


@dataclass(frozen=True)
class ServerSentEvent:
    """One event: its type (``message`` unless named), its data lines joined by newlines, and its id."""

    event: str
    data: str
    id: str | None = None


class SSEDecoder:
    """Feed it the lines of a ``text/event-stream`` (without line endings); it returns each complete event."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Consume one line; a blank line completes the pending event and returns it."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, e.g. a keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        # Unlike a browser, keep a named event without data lines: ``event: end`` alone still ends.
        if not self._data and not self._event:
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
        self._event, self._data = "", []
        return event
