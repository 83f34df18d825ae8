"""Who is calling: the API key in a request's headers, checked against the shared key store.

I/O edge over frugal.keys.KeyStore (records cached per process, so a key in steady use costs
no Redis round trip here). Every refusal of a key (missing, malformed, unknown, expired,
revoked) is the same 401 with the same message, so a caller learns nothing about which keys
exist; a key store that cannot answer is a 503 (fail closed). Keys never reach the log; a key
id's fingerprint may. Each outcome is counted in `frugal_auth_decisions_total{outcome}`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from frugal.keys import AuthOutcome, KeyRecord, KeyStore, KeyStoreUnavailable, fingerprint
from safety_filter.authz.credentials import find_credentials
from safety_filter.errors import ApiError, auth_unavailable, invalid_api_key

log = logging.getLogger(__name__)

ERROR_OUTCOME = "error"  # the key store did not answer


@dataclass(frozen=True)
class KeyGrant:
    """What an authenticated key may do."""

    key_id: str
    tenant: str
    models: frozenset[str] | None  # None: every model
    rpm: int | None  # None: unlimited
    tpm: int | None

    @classmethod
    def of(cls, record: KeyRecord) -> KeyGrant:
        models = None if record.models is None else frozenset(record.models)
        return cls(record.id, record.tenant, models, record.rpm, record.tpm)


class KeyCheck:
    def __init__(self, store: KeyStore, registry: CollectorRegistry) -> None:
        self._store = store
        self._decisions = Counter(
            "frugal_auth_decisions",
            "API key checks, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in [*AuthOutcome, ERROR_OUTCOME]:
            self._decisions.labels(outcome=str(outcome))

    async def grant(self, headers: Mapping[str, str]) -> KeyGrant:
        """The caller's grant, or the ApiError that refuses the request."""
        credentials = find_credentials(headers)
        if credentials.key is None:
            outcome = AuthOutcome.MISSING if credentials.missing else AuthOutcome.MALFORMED
            raise self._refused(outcome)
        try:
            decision = await self._store.check(credentials.key)
        except KeyStoreUnavailable as error:
            log.error("refusing the request: %s", error)
            self._decisions.labels(outcome=ERROR_OUTCOME).inc()
            raise auth_unavailable() from error
        if decision.outcome is AuthOutcome.OK and decision.record is not None:
            self._decisions.labels(outcome=AuthOutcome.OK.value).inc()
            return KeyGrant.of(decision.record)
        if decision.record is not None:
            log.info("refused key %s: %s", fingerprint(decision.record.id), decision.outcome.value)
        raise self._refused(decision.outcome)

    def _refused(self, outcome: AuthOutcome) -> ApiError:
        self._decisions.labels(outcome=outcome.value).inc()
        return invalid_api_key()
