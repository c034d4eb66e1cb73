"""Every error of the service is ``{"detail": "<one line>"}``: request validation is a 400 (not FastAPI's 422),
unexpected exceptions a 500 that names only the exception type; the OpenAPI schema says so."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

ERROR_SCHEMA = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
BAD_REQUEST = {"description": "Bad request",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_LOCATION_KINDS = {"body", "query", "path", "header", "cookie"}


def validation_detail(exc: RequestValidationError) -> str:
    """``"field: message; ..."`` of a validation error, e.g. ``score_threshold: Input should be a valid number``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in _LOCATION_KINDS)
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors -> 400, unexpected exceptions -> 500, both with ``detail``; 400 in the OpenAPI schema."""

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error", exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            for item in schema.get("paths", {}).values():
                for op in item.values():
                    responses = op.get("responses", {}) if isinstance(op, dict) else {}
                    if responses.pop("422", None) is not None:
                        responses["400"] = BAD_REQUEST
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas["Error"] = ERROR_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
