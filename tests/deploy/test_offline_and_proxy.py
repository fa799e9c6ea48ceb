"""The offline and proxy paths stay first-class: checked in the files, without running them.

CI deploys them for real (deploy/ci/deploy_test.py); these catch a regression in seconds.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load_deploy_test() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "deploy_test", ROOT / "deploy" / "ci" / "deploy_test.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


deploy_test = _load_deploy_test()


def _merged(*files: str) -> dict[str, Any]:
    env = dict.fromkeys(
        (
            "POSTGRES_PASSWORD",
            "OWNER_DB_PASSWORD",
            "RECEIVER_DB_PASSWORD",
            "VALIDATOR_DB_PASSWORD",
            "ADMIN_DB_PASSWORD",
            "REDIS_PASSWORD",
            "ADMIN_TOKENS",
            "GRAFANA_ADMIN_PASSWORD",
        ),
        "x",
    )
    merged: dict[str, Any] = {}
    for name in files:
        document = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
        merged = deploy_test._merge(merged, deploy_test._interpolate(document, env))
    return merged


def test_no_dockerfile_needs_a_frontend_image_from_a_registry() -> None:
    dockerfiles = [ROOT / "Dockerfile", *ROOT.glob("deploy/**/Dockerfile")]
    dockerfiles += list(ROOT.glob("deploy/**/Containerfile"))
    assert len(dockerfiles) >= 5
    for path in dockerfiles:
        assert not re.search(r"^#\s*syntax\s*=", path.read_text(), re.MULTILINE | re.I), path


def test_the_offline_override_starts_everything_it_can_build_and_pulls_nothing() -> None:
    merged = _merged("compose.yaml", "deploy/compose.offline.yaml")
    started = {name: spec for name, spec in merged["services"].items() if not spec.get("profiles")}
    assert {"postgres", "pgbouncer", "redis", "receiver", "validator", "admin", "prometheus"} <= (
        set(started)
    )
    pulled = [name for name, spec in started.items() if "build" not in spec]
    assert pulled == []
    # Without a collector on this machine the services are not pointed at one.
    assert started["receiver"]["environment"]["SMSGW_OTLP_ENDPOINT"] == ""


def test_every_python_image_build_can_be_given_a_proxy_ca() -> None:
    merged = _merged("compose.yaml")
    python = [
        spec
        for spec in merged["services"].values()
        if spec.get("image", "").startswith("sms-gateway:")
    ]
    assert python
    for spec in python:
        assert "extra_ca" in spec["build"]["secrets"]
    default = ROOT / merged["secrets"]["extra_ca"]["file"]
    assert default.read_text() == "", "the default extra CA must be empty (Debian's bundle only)"
    assert "id=extra_ca" in (ROOT / "Dockerfile").read_text()
    assert "SMSGW_EXTRA_CA" in (ROOT / "docs" / "deployment.md").read_text()


def test_healthchecks_probe_every_second_while_a_service_starts() -> None:
    merged = _merged("compose.yaml")
    for name in ("postgres", "pgbouncer", "redis", "receiver", "validator", "admin"):
        check = merged["services"][name]["healthcheck"]
        assert check["start_interval"] == "1s", name
        assert deploy_test._seconds(check["start_period"]) <= 30, name


def test_the_docs_start_with_up_wait_and_send_an_sms_of_now() -> None:
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    assert "docker compose up --wait" in deployment
    assert "up -d" not in deployment.split("## Run it", 1)[1].split("```", 2)[1]
    # A fixed timestamp ages into an `invalid` judgement at time_window.
    assert not re.search(r'"received_timestamp":\s*"\d{4}-', deployment)


def test_the_playbook_finds_its_roles_from_any_directory() -> None:
    # Ansible looks for roles/ beside the playbook whatever the working directory.
    assert (ROOT / "roles").resolve() == (ROOT / "deploy" / "ansible" / "roles").resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "a"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("$$A ${A}", "$A a"),
    ],
)
def test_the_ci_reads_compose_variables_as_compose_does(text: str, expected: str) -> None:
    assert deploy_test._interpolate(text, {"A": "a", "EMPTY": ""}) == expected


def test_the_ci_refuses_a_required_variable_that_is_unset() -> None:
    with pytest.raises(deploy_test.StepFailed, match="set X"):
        deploy_test._interpolate("${X:?set X}", {})
