"""API-key authentication of a request, inside the request processor (no ext_authz call)."""
