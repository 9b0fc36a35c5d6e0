"""Request bodies are strict JSON, and errors about them are short.

Python's json module accepts NaN, Infinity and numbers too large for a float (1e999 -> inf);
none of them is JSON, and echoed back in an error they make the response itself invalid JSON.
They are refused as decode errors (422). Validation errors name the field and the rule, with at
most a short prefix of the bad value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

ECHO_LIMIT = 40  # characters of a bad value an error body may show


def short(value: object, limit: int = ECHO_LIMIT) -> str:
    """repr of a request value, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _cut(part: object) -> object:
    """A location part (a field name, a key the client sent, an index), cut like a value."""
    return part if not isinstance(part, str) or len(part) <= ECHO_LIMIT else part[:ECHO_LIMIT] + "..."


def _not_json(name: str) -> float:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"number {short(text)} is out of range", text, 0)
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_constant=_not_json,
                                    parse_float=_finite)
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose request bodies are parsed by StrictJSONRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field and its rule; the value is shown only as a short prefix."""
    errors = [{"type": e.get("type"), "loc": [_cut(part) for part in e.get("loc", ())],
               "msg": str(e.get("msg", "")),
               **({"input": short(e["input"])} if "input" in e else {}),
               **({"error": short(e["ctx"]["error"], 200)} if "error" in e.get("ctx", {}) else {})}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)
