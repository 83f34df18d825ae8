"""The control plane's admin REST app (FastAPI), with OpenAPI docs at /admin/docs.

Edge layer, wiring only: routers, the admin-token check on every API route,
and the error handlers. Other routers (usage) join through `extra_routers`
and get the same token check and error shape.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends, FastAPI

from control_plane.admin import keys
from control_plane.admin.auth import require_admin_token
from control_plane.admin.errors import install_error_handlers
from frugal.keys import KeyStore


def create_admin_app(
    store: KeyStore, admin_token: str, extra_routers: Iterable[APIRouter] = ()
) -> FastAPI:
    """The admin API over `store`. The docs pages themselves need no token (they hold no
    data); every API route, including those of `extra_routers`, answers 401 without it."""
    app = FastAPI(
        title="Frugal admin API",
        version="1",
        description="API keys (and, through extra routers, usage) of a Frugal gateway.",
        docs_url="/admin/docs",
        redoc_url=None,
        openapi_url="/admin/openapi.json",
        dependencies=[Depends(require_admin_token(admin_token))],
    )
    app.state.key_store = store
    install_error_handlers(app)
    app.include_router(keys.router)
    for router in extra_routers:
        app.include_router(router)
    return app
