"""The admin tokens come from the environment (SPEC §10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.admin.auth import TokenVerifier
from services.admin.config import AdminConfig
from sms_gateway.config import load_config
from sms_gateway.errors import ConfigurationError

URL = "postgresql://sms_admin:Zq8vN3x7Lr2pW5tY@127.0.0.1:6432/sms_gateway"
STRONG = "q7Vt2mR9xL4pW8sZ3nB6"
OTHER = "H5kD8wQ2zN7cV4xJ9mT1"


@pytest.fixture(autouse=True)
def only_a_database_url(clean_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSGW_DATABASE_URL", URL)


def test_several_named_tokens_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSGW_ADMIN_TOKENS", f"alice:{STRONG}, ci-bot:{OTHER}")
    config = load_config(AdminConfig)
    assert config.operator_tokens() == {"alice": STRONG, "ci-bot": OTHER}
    assert config.port == 8082


def test_tokens_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="SMSGW_ADMIN_TOKENS: Field required"):
        load_config(AdminConfig)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (STRONG, "pair 1 is not name:token"),
        (f"alice:{STRONG},{OTHER}", "pair 2 is not name:token"),
        (f"al ice:{STRONG}", "pair 1 has a bad name"),
        ("alice:", "the token of 'alice' is empty"),
        (f"alice:{STRONG},alice:{OTHER}", "the name 'alice' is given twice"),
        (f"alice:{STRONG},bob:{STRONG}", "'bob' reuses another name's token"),
        ("alice:short", "shorter than 16 characters: alice"),
        (f"alice:{STRONG},bob:dev-only-admin-token", r"placeholder secret.*admin_tokens \(bob\)"),
    ],
)
def test_bad_tokens_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("SMSGW_ADMIN_TOKENS", value)
    with pytest.raises(ConfigurationError, match=problem) as raised:
        load_config(AdminConfig)
    for secret in (STRONG, OTHER, "dev-only-admin-token"):
        assert secret not in str(raised.value)


def test_development_allows_placeholder_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSGW_ADMIN_TOKENS", "operator:dev-only-admin-token")
    with pytest.raises(ConfigurationError, match="placeholder"):
        load_config(AdminConfig)
    monkeypatch.setenv("SMSGW_ENVIRONMENT", "development")
    assert load_config(AdminConfig).operator_tokens() == {"operator": "dev-only-admin-token"}


def test_tokens_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "admin_tokens"
    path.write_text(f"alice:{STRONG}\n")
    monkeypatch.setenv("SMSGW_ADMIN_TOKENS_FILE", str(path))
    assert load_config(AdminConfig).operator_tokens() == {"alice": STRONG}


def test_the_verifier_names_the_token_and_refuses_others() -> None:
    verifier = TokenVerifier({"alice": STRONG, "bob": OTHER})
    assert verifier.operator_of(STRONG) == "alice"
    assert verifier.operator_of(OTHER) == "bob"
    assert verifier.operator_of(STRONG[:-1]) is None
    assert verifier.operator_of(STRONG + "x") is None
    assert verifier.operator_of("") is None
