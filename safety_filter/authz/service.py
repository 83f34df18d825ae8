"""The ext_authz gRPC service (envoy.service.auth.v3.Authorization/Check).

I/O edge: converts a CheckRequest to credentials, asks the shared KeyStore
(frugal.keys) and converts the decision back, counting each outcome in
`frugal_auth_decisions_total{outcome}`. Keys never reach the log; a key id's
fingerprint may.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from prometheus_client import CollectorRegistry, Counter

from frugal.keys import AuthDecision, AuthOutcome, KeyStore, KeyStoreUnavailable, fingerprint
from frugal.request_log import bind_request_id
from safety_filter.authz import responses
from safety_filter.authz.credentials import find_credentials, request_headers

log = logging.getLogger(__name__)

ERROR_OUTCOME = "error"  # the key store did not answer


class AuthorizationService(auth_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, store: KeyStore, registry: CollectorRegistry) -> None:
        self._store = store
        self._decisions = Counter(
            "frugal_auth_decisions_total",
            "ext_authz decisions on API keys, by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in [*AuthOutcome, ERROR_OUTCOME]:
            self._decisions.labels(outcome=str(outcome))

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        bind_request_id(request.attributes.request.http.id)
        try:
            decision = await self.decide(request)
        except KeyStoreUnavailable as error:
            log.error("refusing the request: %s", error)
            self._decisions.labels(outcome=ERROR_OUTCOME).inc()
            return responses.unavailable()
        self._decisions.labels(outcome=decision.outcome.value).inc()
        if decision.outcome is AuthOutcome.OK and decision.record is not None:
            return responses.allowed(decision.record)
        if decision.record is not None:
            log.info("refused key %s: %s", fingerprint(decision.record.id), decision.outcome.value)
        return responses.unauthenticated()

    async def decide(self, request: Any) -> AuthDecision:
        credentials = find_credentials(request_headers(request.attributes.request.http))
        if credentials.key is None:
            outcome = AuthOutcome.MISSING if credentials.missing else AuthOutcome.MALFORMED
            return AuthDecision(outcome)
        return await self._store.check(credentials.key)


def add_authorization_servicer(
    server: grpc.aio.Server, store: KeyStore, registry: CollectorRegistry
) -> AuthorizationService:
    """Serve ext_authz Check on `server` (the safety filter's gRPC server)."""
    service = AuthorizationService(store, registry)
    auth_grpc.add_AuthorizationServicer_to_server(service, server)
    return service
