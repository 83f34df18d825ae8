"""The detector registry: every content category the content checks know.

Pure layer of the shared library. Each module below is one detector; it registers
its factory under the category it reports. Adding a category is adding a
module and one line here.
"""

from __future__ import annotations

from frugal.content_checks.detectors import (
    blocklist,
    credit_card,
    email,
    iban,
    ip_address,
    phone,
    secret,
    us_ssn,
)
from frugal.content_checks.registry import DetectorRegistry

DETECTORS = DetectorRegistry()
for _module in (email, phone, credit_card, us_ssn, iban, ip_address, secret, blocklist):
    DETECTORS.register(_module.CATEGORY, _module.build)

__all__ = ["DETECTORS"]
