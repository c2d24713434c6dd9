"""Request limits as pure ASGI middleware: 413 before the body is read in full; NUL bytes in
the path or query and too deeply nested JSON refused before a route runs."""

from __future__ import annotations

import json

from service.api.errors import PROBLEM_JSON, BodyTooLarge
from service.domain.schemas import json_depth_exceeds


class BodySizeLimitMiddleware:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0
        too_large = False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await self._reject(scope, send)

    async def _reject(self, scope, send) -> None:
        body = json.dumps({
            "type": "about:blank",
            "title": "Content Too Large",
            "status": 413,
            "detail": str(BodyTooLarge(self.max_bytes)),
            "instance": scope.get("path"),
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", PROBLEM_JSON.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})



def _problem_message(status: int, title: str, detail: str, path: str | None, **extra) -> tuple:
    problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if path is not None:  # not echoed when it holds the NUL
        problem["instance"] = path
    body = json.dumps({**problem, **extra}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", PROBLEM_JSON.encode()),
                         (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


def _is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class RequestShapeMiddleware:
    """Refuses, before any route runs, request shapes the routes cannot store or parse:

    - a NUL character in the path (404: no resource has one) or in the query string (422):
      PostgreSQL text cannot hold NUL, so it would fail inside a query;
    - a JSON body nested more than ``max_depth`` deep (422): parsing and validating it
      recurse, and Python's recursion limit is a 500 waiting to happen.
    """

    def __init__(self, app, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        if "\x00" in path:
            await self._send(send, 404, "Not Found", "the path contains a NUL character; "
                             "no resource has one", None)
            return
        query = scope.get("query_string") or b""
        if b"\x00" in query or b"%00" in query.lower():
            await self._send(send, 422, "Unprocessable Content",
                             "query: contains a NUL character (%00); send text without one",
                             path, errors=[{"field": "query",
                                            "message": "contains a NUL character"}])
            return
        headers = dict(scope.get("headers") or [])
        if scope.get("method") in ("GET", "HEAD") or not _is_json(headers.get(b"content-type")):
            await self.app(scope, receive, send)
            return
        # buffer the body (already capped by BodySizeLimitMiddleware around this one) and
        # hand the same bytes on
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth_exceeds(body, self.max_depth):
            detail = (f"body: JSON nested more than {self.max_depth} levels deep; "
                      "flatten it")
            await self._send(send, 422, "Unprocessable Content", detail, path,
                             errors=[{"field": "body", "message": detail[6:]}])
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _send(send, status: int, title: str, detail: str, path: str | None,
                    **extra) -> None:
        start, body = _problem_message(status, title, detail, path, **extra)
        await send(start)
        await send(body)
