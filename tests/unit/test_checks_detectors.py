"""Content detectors, overlap resolution, redaction and policies (frugal.content_checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from frugal.content_checks import (
    DEFAULT_POLICY,
    DETECTORS,
    ContentPolicy,
    DetectorOptions,
    Match,
    UnknownDetectorError,
    detectors_for,
    load_blocklist,
    merge,
    redact,
    resolve_overlaps,
    scan,
)
from frugal.content_checks.detectors.credit_card import known_issuer, luhn_valid
from frugal.content_checks.detectors.iban import mod97_valid
from frugal.policy_store import PolicySpec

TERMS = ("project nightingale", "bluefalcon", "orion-7")
ALL = ContentPolicy(detectors=DETECTORS.names(), blocklist=TERMS)

# Fake credentials, assembled so that this file does not look like it leaks any.
GITHUB = "gh" + "p_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
AWS_ID = "AK" + "IA" + "Z7X6C5V4B3N2M1Q0"
OPENAI = "s" + "k-" + "Abc123Def456Ghi789Jkl012Mno345"
FRUGAL = "s" + "k-frugal-" + "AbCdEfGhIjKl_" + "x" * 49
GOOGLE = "AI" + "za" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
SLACK = "xo" + "xb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
# {"alg":"HS256","typ":"JWT"} . {"sub":"1234567890"} . signature
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = "\n".join(
    [
        "-----BEGIN " + "RSA PRIVATE KEY-----",
        "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu",
        "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==",
        "-----END " + "RSA PRIVATE KEY-----",
    ]
)

POSITIVES = [
    ("EMAIL", "mail jane.doe+news@mail.example.co.uk today", "jane.doe+news@mail.example.co.uk"),
    ("EMAIL", "End of sentence: a_b@example.com.", "a_b@example.com"),
    ("PHONE", "call +1 (415) 555-2671 now", "+1 (415) 555-2671"),
    ("PHONE", "E.164: +447911123456.", "+447911123456"),
    ("PHONE", "Tel. 020 7946 0958, ask for Ana", "020 7946 0958"),
    ("PHONE", "FR 06 12 34 56 78", "06 12 34 56 78"),
    ("PHONE", "(415) 555-2671", "(415) 555-2671"),
    ("PHONE", "call 415.555.2671", "415.555.2671"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "amex 3782-822463-10005.", "3782-822463-10005"),
    ("CREDIT_CARD", "5555555555554444", "5555555555554444"),
    ("CREDIT_CARD", "paid with 4111 1111 1111 1111 2024", "4111 1111 1111 1111"),
    ("US_SSN", "SSN 123-45-6789.", "123-45-6789"),
    ("IBAN", "IBAN DE89 3704 0044 0532 0130 00 EUR", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "to GB82WEST12345698765432!", "GB82WEST12345698765432"),
    ("IBAN", "NO9386011117947", "NO9386011117947"),
    ("IP_ADDRESS", "ping 192.168.0.1.", "192.168.0.1"),
    ("IP_ADDRESS", "host 10.0.0.255:8080", "10.0.0.255"),
    ("IP_ADDRESS", "v6 [2001:db8::8a2e:370:7334]:443", "2001:db8::8a2e:370:7334"),
    ("IP_ADDRESS", "loopback ::1 and", "::1"),
    ("IP_ADDRESS", "mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
    ("SECRET", f"token {GITHUB} end", GITHUB),
    ("SECRET", f"id={AWS_ID}", AWS_ID),
    ("SECRET", f"key: {OPENAI}", OPENAI),
    ("SECRET", f"use {FRUGAL}.", FRUGAL),
    ("SECRET", f"google {GOOGLE}", GOOGLE),
    ("SECRET", f"slack {SLACK}", SLACK),
    ("SECRET", f"Bearer {JWT}", JWT),
    ("SECRET", f"key:\n{PEM}\nbye", PEM),
    (
        "SECRET",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("BLOCKLIST", "about Project NIGHTINGALE.", "Project NIGHTINGALE"),
    ("BLOCKLIST", "bluefalcon", "bluefalcon"),
    ("BLOCKLIST", "the orion-7 launch", "orion-7"),
]

LOOK_ALIKES = [
    "user@localhost and @mentions and name@example",
    "dates 2024-03-15, 15.03.2024, 03/15/2024 and 12:30:45",
    "versions v10.2.3 and build 10.0.19041.1",
    "order 4155552671 and ISBN 978-3-16-148410-0",
    "4111 1111 1111 1112 fails Luhn",
    "1234 5678 9012 3456 has no issuer",  # Luhn-valid? irrelevant: issuer 1 is unknown
    "4111 11 11 1111 1111 is grouped oddly",
    "SSNs 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000, 078-05-1120",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
    "XQ89 3704 0044 0532 0130 00 is no country",
    "300.1.1.1 and 1.2.3.4.5 and 01.02.03.04 and 192.168.1",
    "MAC 00:1A:2B:3C:4D:5E, std::vector, Foo :: Bar",
    "uuid 123e4567-e89b-12d3-a456-426614174000 sha 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "sk-learn and sk-this-is-not-a-real-key-at-all",
    "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJl has no alg",
    "aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYSB0b2tlbg==",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "bluefalcons, projectnightingale, nightingale, orion-75, bluefalcon_v2",
]


@pytest.mark.parametrize(("category", "text", "value"), POSITIVES)
def test_detects_value_in_context(category: str, text: str, value: str) -> None:
    start = text.index(value)
    assert scan(text, ALL) == [Match(category, start, start + len(value))]


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert scan(text, ALL) == []


def test_every_detector_is_registered_and_reports_its_own_name() -> None:
    names = DETECTORS.names()
    assert set(names) == {
        "EMAIL",
        "PHONE",
        "CREDIT_CARD",
        "US_SSN",
        "IBAN",
        "IP_ADDRESS",
        "SECRET",
        "BLOCKLIST",
    }
    for name in names:
        detector = DETECTORS.build(name, DetectorOptions(blocklist=TERMS))
        assert detector.name == name
        assert detector.max_match_length is not None and detector.max_match_length > 0
    with pytest.raises(UnknownDetectorError):
        DETECTORS.build("NOPE", DetectorOptions())


def test_luhn_and_issuer_checks() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert known_issuer("4111111111111111")
    assert known_issuer("2221000000000009")
    assert not known_issuer("1111111111111117")
    assert not known_issuer("411111111111111")  # Visa has no 15-digit cards


def test_mod97_check() -> None:
    assert mod97_valid("DE89370400440532013000")
    assert mod97_valid("GB82WEST12345698765432")
    assert not mod97_valid("DE89370400440532013001")


def test_match_keeps_only_category_and_span() -> None:
    (match,) = scan("write to jane@example.com", DEFAULT_POLICY)
    assert vars(match) == {"category": "EMAIL", "start": 9, "end": 25}
    with pytest.raises(ValueError, match="empty"):
        Match("EMAIL", 3, 3)


def test_overlaps_keep_the_longest_then_the_earliest() -> None:
    matches = [Match("A", 0, 5), Match("B", 3, 12), Match("C", 10, 14), Match("D", 20, 22)]
    assert resolve_overlaps(matches) == [Match("B", 3, 12), Match("D", 20, 22)]
    assert resolve_overlaps([Match("A", 4, 8), Match("B", 0, 4), Match("C", 2, 6)]) == [
        Match("B", 0, 4),
        Match("A", 4, 8),
    ]


def test_ipv4_inside_mapped_ipv6_is_one_match() -> None:
    assert scan("::ffff:10.1.2.3", DEFAULT_POLICY) == [Match("IP_ADDRESS", 0, 15)]


def test_redaction_format() -> None:
    text = "mail jane@example.com or call +1 415 555 2671, card 4111-1111-1111-1111."
    assert redact(text, scan(text, DEFAULT_POLICY)) == (
        "mail [REDACTED:EMAIL] or call [REDACTED:PHONE], card [REDACTED:CREDIT_CARD]."
    )
    assert redact("nothing here", []) == "nothing here"


def test_blocklist_is_whole_word_and_case_insensitive() -> None:
    policy = ContentPolicy(detectors=("BLOCKLIST",), blocklist=("acme", "acme rocket"))
    text = "ACME Rocket, acme, acmes and notacme"
    assert redact(text, scan(text, policy)) == (
        "[REDACTED:BLOCKLIST], [REDACTED:BLOCKLIST], acmes and notacme"
    )
    assert scan("İstanbul acme", policy) == [Match("BLOCKLIST", 9, 13)]


def test_blocklist_automaton_is_built_once_per_policy() -> None:
    policy = ContentPolicy(detectors=("BLOCKLIST",), blocklist=("alpha",))
    same = ContentPolicy(detectors=["BLOCKLIST"], blocklist=["alpha"])  # type: ignore[arg-type]
    assert detectors_for(policy)[0] is detectors_for(same)[0]


def test_policy_validation() -> None:
    with pytest.raises(ValidationError, match="unknown detectors"):
        ContentPolicy(detectors=("EMAIL", "DNA"))
    with pytest.raises(ValidationError):
        ContentPolicy.model_validate({"output_action": "log"})
    with pytest.raises(ValidationError):
        ContentPolicy.model_validate({"prompt_action": "shout"})
    policy = ContentPolicy.model_validate(
        {
            "detectors": ["SECRET", "EMAIL", "EMAIL"],
            "prompt_action": "block",
            "blocklist": [" x ", ""],
        }
    )
    assert policy.detectors == ("EMAIL", "SECRET")
    assert policy.blocklist == ("x",)


def test_merge_takes_the_stricter_action_and_unites_sets() -> None:
    model = ContentPolicy(detectors=("EMAIL",), prompt_action="log", output_action="block")
    key = ContentPolicy(
        detectors=("SECRET", "BLOCKLIST"), prompt_action="redact", blocklist=("Alpha",)
    )
    merged = merge(model, key)
    assert merged.detectors == ("EMAIL", "SECRET", "BLOCKLIST")
    assert merged.prompt_action == "redact"
    assert merged.output_action == "block"
    assert merged.blocklist == ("Alpha",)
    assert merge(key, model) == merged
    strict = ContentPolicy(prompt_action="block")
    assert merge(merged, strict).prompt_action == "block"


def test_default_policy_redacts_pii_and_secrets() -> None:
    assert "BLOCKLIST" not in DEFAULT_POLICY.detectors
    assert len(DEFAULT_POLICY.detectors) == len(DETECTORS.names()) - 1
    assert DEFAULT_POLICY.prompt_action == "redact"
    assert DEFAULT_POLICY.output_action == "redact"
    assert DEFAULT_POLICY.blocklist == ()


def test_load_blocklist(tmp_path: Path) -> None:
    path = tmp_path / "terms.txt"
    path.write_text("# comment\nAlpha\n\n beta gamma \nALPHA\n", encoding="utf-8")
    assert load_blocklist(path) == ("Alpha", "beta gamma")


def test_unsettled_from_points_at_what_could_still_grow() -> None:
    email = DETECTORS.build("EMAIL", DetectorOptions())
    text = "write to jane@exa"
    assert email.unsettled_from(text) == text.index("jane")
    assert email.unsettled_from("done. ") == len("done. ")
    secret = DETECTORS.build("SECRET", DetectorOptions())
    assert secret.unsettled_from("plain word") == len("plain word")
    assert secret.unsettled_from("plain words") == len("plain word")  # "s" may begin "sk-"
    assert secret.unsettled_from("my key is s") == len("my key is ")
    held = "-----BEGIN " + "EC PRIVATE KEY-----\nMHcCAQEE"
    assert secret.unsettled_from("x " + held) == 2
    blocklist = DETECTORS.build("BLOCKLIST", DetectorOptions(blocklist=("orion-7",)))
    assert blocklist.unsettled_from("see orion-") == 4
    assert blocklist.unsettled_from("see orion-7") == 4
    assert blocklist.unsettled_from("see orion-7 ") == len("see orion-7 ")


def test_override_policies_know_every_registered_detector() -> None:
    """The admin REST validates override policies against the detector registry."""
    assert PolicySpec(detectors=list(DETECTORS.names())).detectors == list(DETECTORS.names())
    with pytest.raises(ValidationError, match="unknown detectors"):
        PolicySpec(detectors=["EMAIL", "DNA"])
