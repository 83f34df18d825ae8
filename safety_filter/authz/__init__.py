"""ext_authz: API-key authentication for Envoy, answering from the shared key store."""

from safety_filter.authz.service import AuthorizationService, add_authorization_servicer

__all__ = ["AuthorizationService", "add_authorization_servicer"]
