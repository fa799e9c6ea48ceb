"""The deployment files stay honest without running them (SPEC §9): compose, Prometheus,
the Grafana dashboard and the Ansible playbook are read and checked against the code.

No containers, no network: each test reads files only.
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.admin.config import AdminConfig
from services.receiver.config import ReceiverConfig
from services.validator.config import ValidatorConfig
from sms_gateway.config import ENV_PREFIX, BootstrapConfig

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "deploy" / "ansible" / "roles"
CONFIGS: dict[str, type[BootstrapConfig]] = {
    "receiver": ReceiverConfig,
    "validator": ValidatorConfig,
    "admin": AdminConfig,
}
ONE_SHOT = {"migrate"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load(ROOT / "compose.yaml")
    return document


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {
        "postgres",
        "pgbouncer",
        "redis",
        "migrate",
        "receiver",
        "validator",
        "admin",
        "jaeger",
        "prometheus",
        "grafana",
    } <= set(services)
    missing = [
        name
        for name, service in services.items()
        if name not in ONE_SHOT and "test" not in service.get("healthcheck", {})
    ]
    assert missing == []


def test_services_wait_for_what_they_need(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in CONFIGS:
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["pgbouncer"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
    assert services["pgbouncer"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for name, service in services.items():
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }, name


def test_service_environment_names_exist_in_the_config_classes(compose: dict[str, Any]) -> None:
    overlays = [
        load(ROOT / "deploy" / "compose.secrets.yaml"),
        load(ROOT / "deploy" / "compose.offline.yaml"),
    ]
    for name, config in CONFIGS.items():
        fields = set(config.model_fields)
        variables = set(compose["services"][name]["environment"])
        for overlay in overlays:
            variables |= set(overlay["services"].get(name, {}).get("environment", {}))
        unknown = sorted(
            v
            for v in variables
            if not v.startswith(ENV_PREFIX)
            or v.removeprefix(ENV_PREFIX).removesuffix("_FILE").lower() not in fields
        )
        assert unknown == [], f"{name} is given variables its config does not read: {unknown}"
        assert f"{ENV_PREFIX}DATABASE_URL" in variables


def test_services_run_as_a_non_root_user() -> None:
    dockerfiles = [ROOT / "Dockerfile", *sorted((ROOT / "deploy" / "docker").glob("*/Dockerfile"))]
    for dockerfile in dockerfiles:
        users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
        assert users, f"{dockerfile} sets no USER"
        assert users[-1].split(":")[0] not in {"root", "0"}, dockerfile


def test_prometheus_scrapes_the_three_services_where_compose_runs_them(
    compose: dict[str, Any],
) -> None:
    config = load(ROOT / "observability" / "prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job.get("static_configs", [])
        for target in group["targets"]
    } | {
        # DNS discovery: every replica of a scaled service
        f"{name}:{discovery['port']}"
        for job in config["scrape_configs"]
        for discovery in job.get("dns_sd_configs", [])
        for name in discovery["names"]
    }
    expected = {
        f"{name}:{compose['services'][name]['environment']['SMSGW_HTTP_PORT']}" for name in CONFIGS
    }
    assert targets == expected


def _metric_names_in_code() -> set[str]:
    pattern = re.compile(r"(?:Counter|Histogram|Gauge)\(\s*\"(sms_[a-z0-9_]+)\"")
    names: set[str] = set()
    for package in ("sms_gateway", "services", "checks"):
        for source in (ROOT / package).rglob("*.py"):
            names.update(pattern.findall(source.read_text(encoding="utf-8")))
    return names


def test_every_metric_the_dashboard_queries_exists_in_the_code() -> None:
    dashboard = json.loads(
        (ROOT / "observability" / "grafana" / "dashboards" / "sms-gateway.json").read_text()
    )
    defined = _metric_names_in_code()
    # A Counter is exposed with _total; prometheus_client adds it when the name lacks it.
    exposed = defined | {f"{name}_total" for name in defined}
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried.update(re.findall(r"\bsms_[a-z0-9_]+", target["expr"]))
    assert queried, "the dashboard queries no gateway metric"
    series = {re.sub(r"_(bucket|count|sum)$", "", name) for name in queried}
    assert sorted(series - exposed) == []


def _tasks(document: Any) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for item in document or []:
        tasks.append(item)
        for key in ("block", "rescue", "always"):
            tasks.extend(_tasks(item.get(key)))
    return tasks


TASK_KEYWORDS = {
    "name",
    "become",
    "become_user",
    "environment",
    "register",
    "changed_when",
    "failed_when",
    "when",
    "loop",
    "loop_control",
    "notify",
    "no_log",
    "until",
    "retries",
    "delay",
    "tags",
    "listen",
    "block",
    "rescue",
    "always",
    "vars",
}


def test_every_play_and_task_is_named_and_uses_fqcn_modules() -> None:
    playbook = load(ROOT / "setup_sms_gateway.yml")
    assert all(play.get("name") for play in playbook)
    files = sorted(ROLES.glob("*/tasks/*.yml")) + sorted(ROLES.glob("*/handlers/*.yml"))
    assert files
    for path in files:
        for task in _tasks(load(path)):
            where = f"{path.relative_to(ROOT)}: {task.get('name')!r}"
            assert task.get("name"), f"{where}: unnamed task"
            modules = [key for key in task if key not in TASK_KEYWORDS]
            assert len(modules) == 1, f"{where}: modules {modules}"
            module = modules[0]
            assert module.count(".") >= 2, f"{where}: {module} is not fully qualified"
            arguments = task[module] if isinstance(task[module], dict) else {}
            assert arguments.get("state") != "latest", where
            assert "ignore_errors" not in task, where
            if "mode" in arguments:
                assert isinstance(arguments["mode"], str), f"{where}: unquoted mode"
            if module in {"ansible.builtin.command", "ansible.builtin.shell"}:
                assert "changed_when" in task or "creates" in arguments, where


def test_role_templates_are_marked_ansible_managed() -> None:
    templates = sorted(ROLES.glob("*/templates/*.j2"))
    assert templates
    for template in templates:
        assert "ansible_managed" in template.read_text().splitlines()[0], template


def test_roles_document_their_defaults() -> None:
    for role in sorted(path for path in ROLES.iterdir() if path.is_dir()):
        assert (role / "defaults" / "main.yml").exists(), role.name
        assert isinstance(load(role / "defaults" / "main.yml"), dict), role.name


def _roles() -> list[Path]:
    return sorted(path for path in ROLES.iterdir() if path.is_dir())


def _yaml_files(role: Path, *folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (role / folder).glob("*.yml"))


def _variables_defined_by(role: Path) -> list[tuple[Path, str]]:
    """Every variable a role defines: its defaults and vars, what it registers or sets as a fact."""
    defined = [
        (path, name) for path in _yaml_files(role, "defaults", "vars") for name in load(path) or {}
    ]
    for path in _yaml_files(role, "tasks", "handlers"):
        for task in _tasks(load(path)):
            if "register" in task:
                defined.append((path, task["register"]))
            facts = task.get("ansible.builtin.set_fact") or {}
            defined.extend((path, name) for name in facts if name != "cacheable")
    return defined


def test_role_variables_carry_their_role_prefix() -> None:
    # ansible-lint's var-naming[no-role-prefix], kept without installing Ansible: a role's
    # variables are named after it, so that two roles can never set each other's by accident.
    unprefixed = [
        f"{path.relative_to(ROOT)}: {name}"
        for role in _roles()
        for path, name in _variables_defined_by(role)
        if not name.startswith((f"{role.name}_", "ansible_"))
    ]
    assert unprefixed == []
    for play in load(ROOT / "setup_sms_gateway.yml"):
        for entry in play["roles"]:
            passed = entry.get("vars", {})
            assert all(name.startswith(f"{entry['role']}_") for name in passed), entry["role"]


def test_roles_read_only_their_own_variables() -> None:
    # What one role owns and another needs is handed over by the playbook, by name; a role that
    # read another's variable directly would depend on the order and visibility of roles.
    roles = [role.name for role in _roles()]
    for role in _roles():
        others = re.compile(
            r"\b(?:"
            + "|".join(f"{other}_" for other in roles if other != role.name)
            + r")[a-z0-9_]+"
        )
        for path in sorted(p for p in role.rglob("*") if p.suffix in {".yml", ".j2"}):
            lines = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if not line.lstrip().startswith("#")
            ]
            found = sorted(set(others.findall("\n".join(lines))))
            assert found == [], f"{path.relative_to(ROOT)} reads {found}"


def test_secrets_are_named_after_the_role_that_owns_them() -> None:
    secrets = load(ROOT / "deploy" / "ansible" / "secrets.example.yml")
    prefixes = tuple(f"{role.name}_" for role in _roles())
    assert secrets
    assert [name for name in secrets if not name.startswith(prefixes)] == []
    for name in secrets:
        owner = next(role for role in _roles() if name.startswith(f"{role.name}_"))
        defaults = (owner / "defaults" / "main.yml").read_text(encoding="utf-8")
        assert f"# {name}:" in defaults, f"{owner.name} does not document {name}"


def test_the_playbook_names_roles_that_ansible_cfg_finds() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "ansible.cfg")
    assert (ROOT / config["defaults"]["roles_path"]).resolve() == ROLES
    named = [
        entry["role"] for play in load(ROOT / "setup_sms_gateway.yml") for entry in play["roles"]
    ]
    assert sorted(named) == [role.name for role in _roles()]
    # Ansible and ansible-lint also look for a role in the playbook's directory: a role named
    # like a directory at the root (redis/, pgbouncer/) could resolve to that directory.
    assert [name for name in named if (ROOT / name).exists()] == []
