"""Bootstrap configuration from the environment (SPEC §10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sms_gateway.config import BootstrapConfig, load_config
from sms_gateway.errors import ConfigurationError

GOOD_URL = "postgresql://sms_receiver:Zq8vN3x7Lr2pW5tY@127.0.0.1:6432/sms_gateway"


pytestmark = pytest.mark.usefixtures("clean_environment")


def test_a_complete_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSGW_DATABASE_URL", GOOD_URL)
    config = load_config(BootstrapConfig)
    assert config.database_url.get_secret_value() == GOOD_URL
    assert config.environment == "production"


def test_missing_database_url_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="SMSGW_DATABASE_URL: Field required"):
        load_config(BootstrapConfig)


@pytest.mark.parametrize("secret", ["change-me", "CHANGEME-please", "password", ""])
def test_placeholder_secrets_are_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("SMSGW_DATABASE_URL", GOOD_URL)
    monkeypatch.setenv("SMSGW_REDIS_PASSWORD", secret)
    with pytest.raises(ConfigurationError, match=r"placeholder secret.*redis_password"):
        load_config(BootstrapConfig)
    monkeypatch.setenv("SMSGW_ENVIRONMENT", "development")
    assert load_config(BootstrapConfig).development


def test_the_database_password_counts_as_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSGW_DATABASE_URL", "postgresql://u:change-me@h:6432/db")
    with pytest.raises(ConfigurationError) as raised:
        load_config(BootstrapConfig)
    assert "database_url (password)" in str(raised.value)
    assert "change-me" not in str(raised.value)  # the error never echoes a secret


def test_file_variants_read_docker_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(GOOD_URL + "\n")
    monkeypatch.setenv("SMSGW_DATABASE_URL_FILE", str(url_file))
    assert load_config(BootstrapConfig).database_url.get_secret_value() == GOOD_URL
    monkeypatch.setenv("SMSGW_REDIS_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="SMSGW_REDIS_PASSWORD_FILE: cannot read"):
        load_config(BootstrapConfig)
