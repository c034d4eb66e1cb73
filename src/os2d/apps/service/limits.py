"""Request body limit of the service: an ASGI middleware that counts the bytes while they arrive.

A body larger than its route's limit gets ``413 {"detail": ...}`` as soon as the count passes the limit, for a
``Content-Length`` body (before reading anything) and for a chunked one (while reading), so nothing larger
than the limit is ever spooled.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from os2d.apps.service.settings import MB

FORM_SLACK = MB  # multipart headers and form fields on top of the files


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit; FastAPI's body parsing lets HTTPException through,
    so the app answers it like any 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit / MB:.4g} MB (the limit of this endpoint)")


class BodyLimit:
    """Refuse request bodies over ``limits[path]`` bytes (``default`` for other paths) with 413 + ``detail``.

    Args:
        app: the wrapped ASGI app.
        limits: body limit in bytes per exact request path.
        default: the limit of every other path.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope.get("path", ""), self.default)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await JSONResponse({"detail": "invalid Content-Length"}, status_code=400)(scope, receive, send)
                return
            if int(length) > limit:
                await JSONResponse({"detail": BodyTooLarge(limit).detail}, status_code=413)(scope, receive, send)
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as e:  # read outside FastAPI's body parsing: answer here
            if started:
                raise
            await JSONResponse({"detail": e.detail}, status_code=413)(scope, receive, send)
