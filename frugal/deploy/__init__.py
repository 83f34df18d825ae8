"""The container deployment's helpers: what the images install, how their health is probed,
and the files `docker compose` needs (secrets, Envoy's bootstrap).

Shared-library layer: none of it imports a service, so the images can run it before or
beside any of them (the probe runs in every container's health check).
"""
