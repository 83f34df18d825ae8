"""The control plane's admin REST API (API keys; usage joins via extra routers)."""

from control_plane.admin.app import create_admin_app
from control_plane.admin.auth import ensure_admin_token_file, load_admin_token

__all__ = ["create_admin_app", "ensure_admin_token_file", "load_admin_token"]
