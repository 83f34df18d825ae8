"""output_checks: the checks the safety filter hands the worker for an answer, and the
worker's check of a unary answer as a whole (engine_workers/output_guard.py; streams in
tests/unit/test_answer_events.py).
"""

from __future__ import annotations

from engine_workers.output_guard import OutputGuard
from frugal.content_checks import DEFAULT_POLICY, ContentPolicy, merge
from safety_filter.extproc.output_filter import output_checks

EMAIL = "jane.doe@example.com"
BLOCKING = DEFAULT_POLICY.model_copy(update={"output_action": "block"})


def test_output_checks_state_the_policy_for_the_worker() -> None:
    strict = ContentPolicy(detectors=("EMAIL", "BLOCKLIST"), output_action="block",
                           blocklist=("Project Zeus",))  # fmt: skip
    assert output_checks(strict) == {
        "detectors": ["EMAIL", "BLOCKLIST"], "action": "block", "blocklist": ["Project Zeus"],
    }  # fmt: skip
    assert output_checks(ContentPolicy(detectors=())) is None


def guard(action: str = "redact") -> OutputGuard:
    found = OutputGuard.for_checks(["EMAIL"], action, [])
    assert found is not None
    return found


def test_a_unary_answer_is_redacted_whole() -> None:
    checked = guard()
    assert checked.check_whole(f"Grüße, {EMAIL}!") == "Grüße, [REDACTED:EMAIL]!"
    assert checked.redacted == ["EMAIL"]


def test_a_blocked_unary_answer_is_withheld_whole() -> None:
    checked = guard("block")
    assert checked.check_whole(f"the text before {EMAIL} is withheld too") is None
    assert checked.blocked == "EMAIL"


def test_a_clean_unary_answer_passes_unchanged() -> None:
    checked = guard("block")
    assert checked.check_whole("nothing to see here") == "nothing to see here"
    assert (checked.blocked, checked.redacted) == (None, [])


def test_a_policy_may_leave_output_unchecked_and_a_key_may_not_loosen_it() -> None:
    quiet = DEFAULT_POLICY.model_copy(update={"check_output": False})
    assert output_checks(quiet) is None
    strict_key = ContentPolicy(detectors=("EMAIL",), check_output=True)
    assert merge(quiet, strict_key).check_output is True
    assert merge(DEFAULT_POLICY, ContentPolicy(check_output=False)).check_output is True
