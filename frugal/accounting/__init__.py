"""Per-key accounting shared by Frugal's services: request rate, token budget, usage ledger.

Redis-backed; each module's docstring gives its key layout. Nothing here knows about Envoy.
"""

from frugal.accounting.admission import Admission, AdmissionRequest, Admitted, Refused
from frugal.accounting.ledger import UsageRow, read_all_usage, read_usage
from frugal.accounting.request_rate import RateDecision, RequestRateLimiter
from frugal.accounting.settlements import Settlement, Settlements
from frugal.accounting.token_budget import TokenBudget, WindowUsage

__all__ = [
    "Admission",
    "AdmissionRequest",
    "Admitted",
    "RateDecision",
    "Refused",
    "RequestRateLimiter",
    "Settlement",
    "Settlements",
    "TokenBudget",
    "UsageRow",
    "WindowUsage",
    "read_all_usage",
    "read_usage",
]
