"""Admin API errors in OpenAI's shape `{"error": {"message", "type", "code", "param"}}`.

Edge layer: domain errors from the key store (frugal.keys) and request
validation errors are turned into HTTP responses here, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from frugal.keys import KeyNotFoundError, KeyStateError, KeyStoreUnavailable


# Not frozen: Starlette's middleware assigns __traceback__ on the way out.
@dataclass
class AdminError(Exception):
    status: int
    type: str
    code: str
    message: str
    param: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": self.message, "type": self.type, "code": self.code,
                       "param": self.param}},
            status_code=self.status,
            headers=dict(self.headers),
        )  # fmt: skip


def invalid_admin_token() -> AdminError:
    return AdminError(
        401,
        "authentication_error",
        "invalid_admin_token",
        "Missing or incorrect admin token: send `Authorization: Bearer <admin token>`.",
        headers=(("www-authenticate", "Bearer"),),
    )


def key_not_found(key_id: str) -> AdminError:
    return AdminError(
        404, "invalid_request_error", "key_not_found", f"No API key with id '{key_id}'.", "id"
    )


# Starlette's own errors (a body that is not JSON, unknown path, wrong method) -> OpenAI
# type and code.
_HTTP_ERRORS = {
    400: ("invalid_request_error", "invalid_json"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
}


def _field(loc: Sequence[Any]) -> str:
    """("body", "models", 0) -> "models.0"; the request part ("body", "path") is dropped."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:]
    return ".".join(parts)


def _reason(error: Any) -> str:
    reason = str(error.get("msg", "invalid"))
    detail = (error.get("ctx") or {}).get("error")
    return f"{reason} ({detail})" if error.get("type") == "json_invalid" and detail else reason


def validation_error(errors: Sequence[Any]) -> AdminError:
    # A body that is not JSON is located at ("body", <offset>): name the body, not "0".
    fields = [
        "body" if error.get("type") == "json_invalid" else _field(error.get("loc", ()))
        for error in errors
    ]
    message = "; ".join(
        f"{field}: {_reason(error)}" for field, error in zip(fields, errors, strict=True)
    )
    return AdminError(422, "invalid_request_error", "invalid_value", message, fields[0] or None)


def install_error_handlers(app: FastAPI) -> None:
    async def on_admin_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, AdminError)
        return error.response()

    async def on_validation(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return validation_error(error.errors()).response()

    async def on_not_found(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, KeyNotFoundError)
        return key_not_found(error.key_id).response()

    async def on_conflict(request: Request, error: Exception) -> JSONResponse:
        return AdminError(409, "invalid_request_error", "key_state_conflict", str(error)).response()

    async def on_unavailable(request: Request, error: Exception) -> JSONResponse:
        return AdminError(
            503, "server_error", "service_unavailable", "The key store is unavailable."
        ).response()

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        kind, code = _HTTP_ERRORS.get(error.status_code, ("server_error", "internal_error"))
        return AdminError(error.status_code, kind, code, str(error.detail)).response()

    app.add_exception_handler(AdminError, on_admin_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(KeyNotFoundError, on_not_found)
    app.add_exception_handler(KeyStateError, on_conflict)
    app.add_exception_handler(KeyStoreUnavailable, on_unavailable)
    app.add_exception_handler(StarletteHTTPException, on_http)
