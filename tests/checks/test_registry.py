"""The registry: every check file registered, in the seed order, loud on bad names."""

from __future__ import annotations

from pathlib import Path

import pytest

import checks
from checks import REGISTRY, build_registry, configuration_problems, get_check
from checks.base import Check, CheckSecrets
from checks.duplicate import DuplicateCheck
from checks.errors import (
    ChecksError,
    DuplicateCheckError,
    InvalidCheckNameError,
    UnknownCheckError,
)
from sms_gateway.errors import GatewayError
from sms_gateway.settings import validate_setting
from tests.checks.support import AES_KEY, HASH_KEY, settings

# Modules of checks/ that are not checks.
NOT_CHECKS = {"__init__", "base", "errors", "phone_numbers"}
CHECKS_DIR = Path(checks.__file__).parent


def test_every_check_file_is_registered_under_its_file_name() -> None:
    files = {path.stem for path in CHECKS_DIR.glob("*.py")} - NOT_CHECKS
    assert files == set(REGISTRY)
    for name in files:
        module = __import__(f"checks.{name}", fromlist=["check"])
        assert REGISTRY[name] is module.check


# The SPEC's seed order (SPEC §3, §5.3), which the default check_sequence follows.
SEED_ORDER = ("blacklist", "duplicate", "header", "hash_length", "mobile", "time_window")


def test_registry_is_in_the_seed_order_of_the_settings() -> None:
    assert tuple(REGISTRY) == SEED_ORDER
    assert checks.CHECK_NAMES == SEED_ORDER
    assert checks.DEFAULT_SETTINGS.check_sequence == SEED_ORDER
    assert checks.DEFAULT_SETTINGS.check_enabled == dict.fromkeys(SEED_ORDER, True)
    assert checks.result_columns() == tuple(f"{name}_check" for name in SEED_ORDER)


def test_registry_is_read_only() -> None:
    assert not hasattr(REGISTRY, "__setitem__")
    assert not hasattr(REGISTRY, "pop")
    with pytest.raises(TypeError):
        REGISTRY["seventh"] = REGISTRY["header"]  # type: ignore[index]


def test_every_registered_object_is_a_check_named_as_registered() -> None:
    for name, check in REGISTRY.items():
        assert check.name == name
        assert callable(check)


def test_unknown_name_is_a_clear_error_that_is_also_a_key_error() -> None:
    with pytest.raises(UnknownCheckError) as raised:
        get_check("spam")
    assert str(raised.value) == (
        "unknown check 'spam' (known: blacklist, duplicate, header, hash_length, mobile, "
        "time_window)"
    )
    assert isinstance(raised.value, ChecksError)
    assert isinstance(raised.value, GatewayError)
    assert isinstance(raised.value, KeyError)
    assert "spam" not in REGISTRY
    assert REGISTRY.get("spam") is None


def test_a_repeated_name_is_refused() -> None:
    with pytest.raises(DuplicateCheckError, match="'duplicate' is registered twice"):
        build_registry([DuplicateCheck(), REGISTRY["header"], DuplicateCheck()])


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, sms: object, context: object) -> object:
        raise AssertionError("never called")


@pytest.mark.parametrize(
    "name", ["", "Header", "1st", "drop table", "a-b", "é", "x" * 21, "time_window;--"]
)
def test_a_name_unfit_for_a_column_is_refused(name: str) -> None:
    check: Check = _Named(name)  # type: ignore[assignment]
    with pytest.raises(InvalidCheckNameError):
        build_registry([check])


def test_a_name_of_twenty_characters_fits() -> None:
    check: Check = _Named("a" * 20)  # type: ignore[assignment]
    assert list(build_registry([check])) == ["a" * 20]


def test_settings_validation_uses_the_registry_names() -> None:
    assert validate_setting("check_sequence", '["mobile", "header"]', known_checks=REGISTRY) == (
        "mobile",
        "header",
    )
    with pytest.raises(GatewayError, match="unknown check"):
        validate_setting("check_sequence", '["mobile", "spam"]', known_checks=REGISTRY)


def test_configuration_problems_name_the_setting_and_secret() -> None:
    assert configuration_problems(settings(), CheckSecrets()) == ()
    aes = settings(mobile_encoding="aes-gcm")
    (problem,) = configuration_problems(aes, CheckSecrets())
    assert "mobile_encoding aes-gcm" in problem
    assert "SMSGW_MOBILE_AES_KEY" in problem
    assert configuration_problems(aes, CheckSecrets(mobile_aes_key=AES_KEY)) == ()
    (short_key,) = configuration_problems(aes, CheckSecrets(mobile_aes_key=b"k" * 16))
    assert "must be 32 bytes; it is 16 bytes" in short_key
    # Only the checks asked about.
    assert configuration_problems(aes, CheckSecrets(), names=["header", "hash_length"]) == ()
    long_hash = settings(hash_length=65, hash_encoding="hex")
    assert configuration_problems(long_hash, CheckSecrets()) == ()
    (too_long,) = configuration_problems(long_hash, CheckSecrets(hash_key=HASH_KEY))
    assert "hash_length 65" in too_long
    assert "64 characters" in too_long
