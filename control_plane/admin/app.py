"""The control plane's admin REST app (FastAPI), with OpenAPI docs at /admin/docs.

Edge layer, wiring only: routers, the admin-token check on every API route,
and the error handlers. Other routers (usage) join through `extra_routers`
and get the same token check and error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from control_plane.admin import keys
from control_plane.admin.auth import require_admin_token, token_matcher
from control_plane.admin.errors import install_error_handlers, invalid_admin_token
from frugal.keys import KeyStore

DOCS_URL = "/admin/docs"
OPENAPI_URL = "/admin/openapi.json"
# The pages that hold no data and need no token.
OPEN_PATHS = frozenset({DOCS_URL, DOCS_URL + "/oauth2-redirect", OPENAPI_URL})


def create_admin_app(
    store: KeyStore, admin_token: str, extra_routers: Iterable[APIRouter] = ()
) -> FastAPI:
    """The admin API over `store`. The docs pages themselves need no token (they hold no
    data); every API route, including those of `extra_routers`, answers 401 without it."""
    app = FastAPI(
        title="Frugal admin API",
        version="1",
        description="API keys (and, through extra routers, usage) of a Frugal gateway.",
        docs_url=DOCS_URL,
        redoc_url=None,
        openapi_url=OPENAPI_URL,
        dependencies=[Depends(require_admin_token(admin_token))],
    )
    matches = token_matcher(admin_token)

    # The token is checked before FastAPI reads a body: found by fuzzing, a malformed
    # body sent without the token was answered 400/422 (the dependency runs after the
    # body is parsed), telling a caller without the token how its request would be read.
    @app.middleware("http")
    async def token_first(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path in OPEN_PATHS or matches(request.headers.get("authorization")):
            return await call_next(request)
        return invalid_admin_token().response()

    app.state.key_store = store
    install_error_handlers(app)
    app.include_router(keys.router)
    for router in extra_routers:
        app.include_router(router)
    return app
