"""A request-body size limit enforced while the body streams in, never after buffering it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fpf_client.errors import PayloadTooLarge
from service.gateway.problems import problem_response


class BodySizeLimit:
    """ASGI middleware: 413 ``payload_too_large`` for a body over ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before any byte is read;
    a chunked body is counted as it arrives and refused at the first byte too many
    (the error is raised from ``receive`` inside the route, where the problem
    handlers turn it into a response).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(self._error(), scope.get("path"), headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, counting_receive, send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes", limit=self.max_bytes)
