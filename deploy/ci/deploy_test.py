"""CI's deployment stage: the compose stack and the Ansible playbook, each deployed for real.

Run by .ci/run after the tests (root, Debian 12; shared/recipes/containers.md has the machine's
quirks). Every step prints `==> name` when it starts; a failure ends with
`deploy-test: FAILED at step "name"`, what went wrong, and the containers' state and logs.

  compose   base image (debootstrap, cached), images built from compose.yaml, started in the order
            of its depends_on conditions with every healthcheck passed (`up --wait`), an SMS from
            the host through the published receiver to out_sms and the Redis set, a setting
            changed through the admin API and applied, the trace at an OTLP stand-in, Prometheus
            scraping the three services with the alert rules loaded, `down` and `up` with the
            data kept, `down -v`.
  playbook  a Debian 12 systemd container as the host, setup_sms_gateway.yml run twice from
            another directory (changed=0 the second time), an SMS end to end on the host, the
            host restarted and every service back.

Caches (SMSGW_CI_CACHE, default /var/cache/sms-gateway-ci): the debootstrap tree of the base
image, Ansible's virtualenv, the wheels the playbook installs and the target's apt downloads;
images stay in podman's store, so unchanged layers are not built again.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SMSGW_CI_CACHE", "/var/cache/sms-gateway-ci"))
BASE_IMAGE = os.environ.get("SMSGW_BASE_IMAGE", "debian:bookworm-slim")
BASE_MAX_AGE = 7 * 86400  # a week-old base is rebuilt, so that security updates come in
PROJECT = "smsgw-ci"
LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_FILES = ("compose.yaml", "deploy/compose.offline.yaml", "deploy/ci/compose.ci.yaml")
# Host ports for CI, away from the defaults a developer's own stack uses (8150-8154, 9190).
PORT = {
    "receiver": 8380,
    "validator": 8381,
    "admin": 8382,
    "prometheus": 8383,
    "otlp": 8384,
    "ssh": 8390,  # the playbook's host
}
HOST_CONTAINER = "smsgw-ci-host"
DEBIAN_PYTHON = "/usr/bin/python3"  # the same Debian 12 python3 as the playbook's target
HOST_IMAGE = "sms-gateway-ci-host:latest"
ANSIBLE_VERSION = "12.3.0"  # ansible-core 2.19, the version docs/deployment.md records
HOST_UNITS = (
    "postgresql@15-main",
    "pgbouncer",
    "redis-server",
    "sms-receiver",
    "sms-validator",
    "sms-admin",
)


# Generated passwords and tokens: never echoed with the commands that carry them.
SECRETS: set[str] = set()


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "***")
    return text


class StepFailed(Exception):
    """A step did not give what it checks for; the message says what was seen."""


@dataclass
class Report:
    steps: list[tuple[str, float, bool]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"\n==> {name}", flush=True)
        started = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        except Exception as exc:
            if isinstance(exc, StepFailed) and exc.args and str(exc.args[0]).startswith("step "):
                raise
            raise StepFailed(f'step "{name}": {type(exc).__name__}: {exc}') from exc
        finally:
            self.steps.append((name, time.monotonic() - started, ok))
            print(f"<== {name}: {'ok' if ok else 'FAILED'} ({time.monotonic() - started:.1f} s)")

    def summary(self) -> str:
        lines = [
            f"{seconds:7.1f} s  {'ok  ' if ok else 'FAIL'}  {name}"
            for name, seconds, ok in self.steps
        ]
        total = sum(seconds for _, seconds, _ in self.steps)
        return "\n".join([*lines, f"{total:7.1f} s  total"])


def run(
    cmd: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it; on failure the exception carries its output's tail."""
    args = [str(part) for part in cmd]
    if not quiet:
        print("$ " + redact(shlex.join(args)), flush=True)
    result = subprocess.run(  # noqa: S603
        args,
        check=False,
        text=True,
        capture_output=capture,
        env=env,
        cwd=cwd,
        input=stdin,
    )
    if check and result.returncode != 0:
        tail = "\n".join(((result.stdout or "") + (result.stderr or "")).splitlines()[-40:])
        raise StepFailed(redact(f"`{shlex.join(args)}` exited {result.returncode}\n{tail}"))
    return result


def podman(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], **kwargs)


def expect(condition: bool, failure: str) -> None:
    if not condition:
        raise StepFailed(failure)


def wait_for(what: str, probe: Any, timeout: float, interval: float = 1.0) -> Any:
    """Call `probe` until it returns something truthy; StepFailed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, ValueError, StepFailed) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise StepFailed(f"{what}: not within {timeout:.0f} s (last: {last})")


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


# ---------------------------------------------------------------- the machine
def prepare_engine() -> None:
    """podman with runc, cgroupfs and explicit rlimits (the machine's quirks): CONTAINERS_CONF."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        raise StepFailed(f"missing {', '.join(missing)} (.ci/run installs them with apt-get)")
    os.environ["CONTAINERS_CONF"] = str(HERE / "containers.conf")
    CACHE.mkdir(parents=True, exist_ok=True)
    podman("--version")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the base image uses it too)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        for match in re.finditer(r"(https?://\S+/debian)/?(?:\s|$)", path.read_text()):
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_image() -> None:
    """The Debian 12 base the Dockerfiles start FROM, made with debootstrap when it is missing.

    The debootstrap tree is kept as a tarball in the cache, so a lost image is imported again
    in seconds; both are made again when older than a week."""
    tarball = CACHE / "base" / "bookworm-minbase.tar"
    created = podman(
        "image", "inspect", "--format", "{{.Created.Unix}}", BASE_IMAGE, check=False, capture=True
    )
    if created.returncode == 0 and time.time() - int(created.stdout.strip()) < BASE_MAX_AGE:
        print(f"{BASE_IMAGE}: present")
        return
    if not tarball.exists() or time.time() - tarball.stat().st_mtime > BASE_MAX_AGE:
        mirror = debian_mirror()
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent) as scratch:
            rootfs = Path(scratch) / "rootfs"
            run(["debootstrap", "--variant=minbase", "bookworm", rootfs, mirror], capture=True)
            security = mirror.removesuffix("/debian") + "/debian-security"
            (rootfs / "etc/apt/sources.list").write_text(
                f"deb {mirror} bookworm main\n"
                f"deb {mirror} bookworm-updates main\n"
                f"deb {security} bookworm-security main\n"
            )
            for directory in ("var/lib/apt/lists", "var/cache/apt"):
                shutil.rmtree(rootfs / directory, ignore_errors=True)
                (rootfs / directory).mkdir(parents=True)
            (rootfs / "var/lib/apt/lists/partial").mkdir()
            run(["tar", "-C", rootfs, "--numeric-owner", "-cf", f"{tarball}.new", "."])
            Path(f"{tarball}.new").replace(tarball)
    with tarball.open("rb") as tree:
        print(f"$ podman import {tarball} {BASE_IMAGE}", flush=True)
        subprocess.run(  # noqa: S603
            ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],  # noqa: S607
            stdin=tree,
            check=True,
            stdout=subprocess.DEVNULL,
        )


# ---------------------------------------------------------------- compose
@dataclass
class Compose:
    env: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        """The services compose starts without a --profile: those with no profiles."""
        return {
            name: spec for name, spec in self.config["services"].items() if not spec.get("profiles")
        }

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def load(self) -> None:
        """The files merged as compose merges them, with ${...} filled from the environment."""
        merged: dict[str, Any] = {}
        for name in COMPOSE_FILES:
            merged = _merge(
                merged, _interpolate(yaml.safe_load((ROOT / name).read_text()), self.env)
            )
        self.config = merged
        skipped = sorted(set(self.config["services"]) - set(self.services))
        print(f"services: {', '.join(self.services)}; left out by profile: {', '.join(skipped)}")

    def build(self) -> None:
        """`compose build`: each image once, with the file's build args and build secrets."""
        declared = self.config.get("secrets") or {}
        built: set[str] = set()
        for name, spec in self.services.items():
            build = spec.get("build")
            if not build or spec["image"] in built:
                continue
            built.add(spec["image"])
            context = ROOT / build.get("context", ".")
            args: list[str | Path] = ["build", "--layers", "--tag", spec["image"]]
            args += ["--file", context / build.get("dockerfile", "Dockerfile")]
            for key, value in (build.get("args") or {}).items():
                args += ["--build-arg", f"{key}={value}"]
            for secret in build.get("secrets") or []:
                source = secret if isinstance(secret, str) else secret["source"]
                args += ["--secret", f"id={source},src={ROOT / declared[source]['file']}"]
            print(f"-- {name}: {spec['image']}")
            podman(*args, context, capture=True)

    def order(self) -> list[str]:
        """The services in an order that starts each after what it depends on."""
        done: list[str] = []
        pending = dict(self.services)
        while pending:
            ready = [
                name
                for name, spec in pending.items()
                if all(dep in done for dep in spec.get("depends_on") or {})
            ]
            if not ready:
                raise StepFailed(f"depends_on has a cycle or a missing service: {list(pending)}")
            for name in sorted(ready):
                done.append(name)
                del pending[name]
        return done

    def wait_condition(self, service: str, condition: str) -> None:
        name = self.container(service)
        if condition == "service_completed_successfully":
            code = podman("wait", name, capture=True).stdout.strip()
            if code != "0":
                logs = podman("logs", "--tail", "30", name, capture=True, check=False)
                raise StepFailed(f"{service} exited {code}\n{logs.stdout}{logs.stderr}")
        elif condition == "service_healthy":
            self.wait_healthy(service)

    def wait_healthy(self, service: str) -> None:
        """Run the healthcheck every second until it passes: `start_interval: 1s` (podman
        without systemd runs no periodic healthchecks, so compose's wait is done here)."""
        check = self.services[service].get("healthcheck") or {}
        budget = _seconds(check.get("start_period", "0s")) + _seconds(
            check.get("interval", "30s")
        ) * int(check.get("retries", 3))
        name = self.container(service)

        def healthy() -> bool:
            state = podman(
                "inspect", "--format", "{{.State.Status}}", name, capture=True, quiet=True
            ).stdout.strip()
            if state in ("exited", "stopped"):
                logs = podman("logs", "--tail", "30", name, capture=True, check=False)
                raise StepFailed(f"{service} is {state}\n{logs.stdout}{logs.stderr}")
            return (
                podman("healthcheck", "run", name, check=False, capture=True, quiet=True).returncode
                == 0
            )

        started = time.monotonic()
        wait_for(f"{service} healthy", healthy, timeout=max(budget, 30.0))
        print(f"{service}: healthy after {time.monotonic() - started:.1f} s")

    def create(self, service: str) -> None:
        """`podman create` of one service, as compose would make it (the keys compose.yaml uses)."""
        spec = self.services[service]
        args: list[str] = ["create", "--name", self.container(service)]
        args += ["--label", f"{LABEL}={PROJECT}", "--label", f"{SERVICE_LABEL}={service}"]
        args += ["--network", f"{PROJECT}_default", "--network-alias", service]
        for key, value in (spec.get("environment") or {}).items():
            args += ["--env", f"{key}={value}"]
        for volume in spec.get("volumes") or []:
            source, target, *mode = volume.split(":")
            if source.startswith((".", "/")):
                source = str((ROOT / source).resolve())
            else:
                source = f"{PROJECT}_{source}"
            args += ["--volume", ":".join([source, target, *mode])]
        for port in spec.get("ports") or []:
            args += ["--publish", str(port)]
        for path in spec.get("tmpfs") or []:
            args += ["--tmpfs", path]
        if spec.get("read_only"):
            args.append("--read-only")
        if "restart" in spec:
            args += ["--restart", str(spec["restart"])]
        if "shm_size" in spec:
            args += ["--shm-size", str(spec["shm_size"])]
        if "stop_grace_period" in spec:
            args += ["--stop-timeout", str(int(_seconds(spec["stop_grace_period"])))]
        args += _health_args(spec.get("healthcheck") or {})
        args.append(spec["image"])
        args += [str(part) for part in spec.get("command") or []]
        podman(*args, capture=True)

    def up(self) -> None:
        """`up --wait`: create every container, start each once its depends_on conditions hold,
        then wait for every healthcheck to pass and every one-shot job to finish with 0.

        podman runs the file here itself: Debian 12's podman-compose 1.0.3 ignores depends_on
        conditions, profiles and build secrets (and its --no-start is broken), and podman without
        systemd runs no periodic healthchecks."""
        order = self.order()
        network = f"{PROJECT}_default"
        if podman("network", "exists", network, check=False, quiet=True).returncode != 0:
            podman("network", "create", "--label", f"{LABEL}={PROJECT}", network, capture=True)
        for volume in self.config.get("volumes") or {}:
            name = f"{PROJECT}_{volume}"
            if podman("volume", "exists", name, check=False, quiet=True).returncode != 0:
                podman("volume", "create", "--label", f"{LABEL}={PROJECT}", name, capture=True)
        for service in order:
            self.create(service)
        for service in order:
            for dep, how in (self.services[service].get("depends_on") or {}).items():
                self.wait_condition(dep, how.get("condition", "service_started"))
            podman("start", self.container(service), capture=True)
        for service, spec in self.services.items():
            if spec.get("healthcheck"):
                self.wait_healthy(service)
            elif spec.get("restart") == "no":
                self.wait_condition(service, "service_completed_successfully")

    def down(self, *, volumes: bool = False) -> None:
        """`down` (`-v`: with the volumes): like compose, stop what depends on a service before
        the service (a receiver whose database is gone first spends its grace period on it)."""
        level: dict[str, int] = {}
        for service in self.order():
            deps = self.services[service].get("depends_on") or {}
            level[service] = 1 + max((level[dep] for dep in deps), default=-1)
        for depth in sorted(set(level.values()), reverse=True):
            names = [self.container(name) for name, at in level.items() if at == depth]
            podman("stop", "--ignore", "--time", "40", *names, capture=True)
        containers = podman(
            "ps", "-a", "--quiet", "--filter", f"label={LABEL}={PROJECT}", capture=True
        ).stdout.split()
        if containers:
            podman("rm", "--force", *containers, capture=True)
        if volumes:
            for volume in podman(
                "volume", "ls", "--quiet", "--filter", f"label={LABEL}={PROJECT}", capture=True
            ).stdout.split():
                podman("volume", "rm", "--force", volume, capture=True)
            podman("network", "rm", "--force", f"{PROJECT}_default", check=False, capture=True)

    def redis_has(self, sender: str) -> bool:
        out = podman(
            "exec",
            self.container("redis"),
            "sh",
            "-c",
            'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli SISMEMBER out_sms_numbers "$1"',
            "-",
            sender,
            capture=True,
        ).stdout
        return out.strip() == "1"

    def diagnose(self) -> None:
        podman("ps", "-a", "--filter", f"label={LABEL}={PROJECT}", check=False)
        for service in self.services:
            print(f"--- logs of {service} (last 25 lines)")
            podman("logs", "--tail", "25", self.container(service), check=False)


def _health_args(check: dict[str, Any]) -> list[str]:
    """A compose healthcheck as podman's flags (start_interval: podman 4.3 has none)."""
    if not check:
        return []
    kind, *test = check["test"]
    # podman 4.3 splits a JSON --health-cmd at spaces: give it a shell command instead (every
    # image has /bin/sh), which is what CMD-SHELL is and what CMD becomes once quoted.
    args = ["--health-cmd", test[0] if kind == "CMD-SHELL" else shlex.join(test)]
    for key, flag in (
        ("interval", "--health-interval"),
        ("timeout", "--health-timeout"),
        ("start_period", "--health-start-period"),
        ("retries", "--health-retries"),
    ):
        if key in check:
            args += [flag, str(check[key])]
    return args


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable syntax: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and not current:
            raise StepFailed(f"compose: {name} is not set: {arg}")
        return current or ""

    return re.sub(r"\$\$|\$\{(\w+)(:-|-|:\?|\?)?([^}]*)\}", substitute, value)


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge of a later file: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return override


def _seconds(duration: str | int | float) -> float:
    if isinstance(duration, int | float):
        return float(duration)
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|s|m|h)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def roundtrip(command: str, *args: str) -> dict[str, Any]:
    """Run deploy/ci/sms_roundtrip.py against the compose stack from the host."""
    out = run(
        [
            sys.executable,
            HERE / "sms_roundtrip.py",
            command,
            "--receiver",
            f"http://127.0.0.1:{PORT['receiver']}",
            "--admin",
            f"http://127.0.0.1:{PORT['admin']}",
            *args,
        ],
        capture=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    print(json.dumps(result))
    return result


def compose_stage(report: Report) -> None:
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        **{
            key: secrets.token_hex(16)
            for key in (
                "POSTGRES_PASSWORD",
                "OWNER_DB_PASSWORD",
                "RECEIVER_DB_PASSWORD",
                "VALIDATOR_DB_PASSWORD",
                "ADMIN_DB_PASSWORD",
                "REDIS_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD",
            )
        },
        "ADMIN_TOKENS": f"ci:{token}",
        "RECEIVER_PUBLISH": f"127.0.0.1:{PORT['receiver']}",
        "VALIDATOR_PUBLISH": str(PORT["validator"]),
        "ADMIN_PUBLISH": str(PORT["admin"]),
        "PROMETHEUS_PUBLISH": str(PORT["prometheus"]),
        "OTLP_SINK_PUBLISH": str(PORT["otlp"]),
        "SMSGW_OTLP_ENDPOINT": "http://otlp-sink:4318",
        "SMSGW_EXTRA_CA": os.environ.get("SMSGW_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt"),
    }
    SECRETS.update(value for key, value in env.items() if key.endswith(("PASSWORD", "TOKENS")))
    SECRETS.add(token)
    compose = Compose(env)
    try:
        with report.step("compose: read the files (compose.yaml + offline + CI sink)"):
            compose.load()
            compose.down(volumes=True)  # what a failed earlier run left
        with report.step("compose: build the images"):
            compose.build()
        with report.step("compose: up --wait (depends_on conditions, healthchecks)"):
            compose.up()
        with report.step("compose: an SMS from the host to out_sms and the Redis set"):
            sms = roundtrip("send", "--token", token)
            expect(compose.redis_has(sms["sender"]), f"{sms['sender']} not in out_sms_numbers")
        with report.step("compose: docs/deployment.md's example request, as written"):
            docs_example(token)
        with report.step("compose: a setting changed through the admin API, applied"):
            roundtrip("setting", "--token", token)
        with report.step("compose: the SMS's trace at the OTLP stand-in"):

            def traced() -> list[str] | None:
                spans: list[str] = http_json(f"http://127.0.0.1:{PORT['otlp']}/traces").get(
                    sms["trace_id"], []
                )
                return spans if {"sms.receive", "sms.validate"} <= set(spans) else None

            print("spans:", wait_for("spans sms.receive and sms.validate", traced, 30))
        with report.step("compose: Prometheus scrapes the services and loads the alert rules"):
            prometheus_checks()
        with report.step("compose: down, then up again: the data kept"):
            compose.down()
            compose.up()
            roundtrip("check", "--token", token, "--uuid", sms["uuid"])
            expect(compose.redis_has(sms["sender"]), f"{sms['sender']} left the Redis set")
            logs = podman("logs", compose.container("migrate"), capture=True).stdout
            expect('"changed": false' in logs, f"the migrate job changed something:\n{logs}")
        with report.step("compose: down -v"):
            compose.down(volumes=True)
            left = podman(
                "volume",
                "ls",
                "--quiet",
                "--filter",
                f"label={LABEL}={PROJECT}",
                capture=True,
            ).stdout
            expect(not left.strip(), f"volumes left after down -v: {left.split()}")
    except StepFailed:
        if compose.config:
            compose.diagnose()
            compose.down(volumes=True)
        raise


def docs_example(token: str) -> None:
    """The curl of docs/deployment.md's "Run it", run by bash as written (only the published
    port differs): its SMS must be stored and judged valid."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = text.split("## Run it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    match = re.search(r"^curl -X POST .*?}'$", block, re.MULTILINE | re.DOTALL)
    expect(match is not None, "no `curl -X POST ...` example under ## Run it")
    assert match is not None
    command = match.group(0).replace("localhost:8150", f"127.0.0.1:{PORT['receiver']}")
    out = run(["bash", "-c", f"set -o pipefail; {command} --fail-with-body --silent"], capture=True)
    uuid = json.loads(out.stdout)["uuid"]
    roundtrip("check", "--token", token, "--uuid", uuid)


def prometheus_checks() -> None:
    base = f"http://127.0.0.1:{PORT['prometheus']}/api/v1"

    def scraped() -> list[str] | None:
        targets = http_json(f"{base}/targets")["data"]["activeTargets"]
        up = [
            t["labels"]["service"]
            for t in targets
            if t["labels"].get("job") == "sms-gateway" and t["health"] == "up"
        ]
        return up if len(up) == 3 else None

    print("targets up:", wait_for("the three services scraped", scraped, 60, interval=2))
    groups = http_json(f"{base}/rules")["data"]["groups"]
    alerts = [
        rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"
    ]
    if not alerts:
        raise StepFailed("Prometheus loaded no alerting rule")
    unhealthy = [
        rule["name"]
        for group in groups
        for rule in group["rules"]
        if rule.get("health") not in ("ok", "unknown")
    ]
    if unhealthy:
        raise StepFailed(f"rules that fail to evaluate: {unhealthy}")
    print(f"{len(alerts)} alerting rules loaded: {', '.join(alerts)}")


# ---------------------------------------------------------------- the playbook
def ansible_venv() -> Path:
    """Ansible in a virtualenv of the cache (the full package: it bundles containers.podman)."""
    venv = CACHE / f"ansible-{ANSIBLE_VERSION}"
    if not (venv / "bin" / "ansible-playbook").exists():
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", venv])
        run(
            [
                venv / "bin" / "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"ansible=={ANSIBLE_VERSION}",
            ]
        )
    return venv


def wheelhouse() -> Path:
    """The wheels the playbook's pip installs on the host, downloaded into the cache when the
    dependencies or their pins changed."""
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], "setuptools>=69", "wheel"]
    interpreter = run([DEBIAN_PYTHON, "--version"], capture=True, quiet=True).stdout
    key = hashlib.sha256(
        (ROOT / "constraints.txt").read_bytes() + "\n".join([interpreter, *wanted]).encode()
    ).hexdigest()
    stamp = wheels / ".downloaded"
    if stamp.exists() and stamp.read_text() == key:
        print(f"{wheels}: up to date")
        return wheels
    # Debian's own python3 (3.11.2, the host's), not this script's: a dependency's markers
    # (redis needs async-timeout below 3.11.3) are evaluated by the interpreter that downloads.
    run(
        [
            DEBIAN_PYTHON,
            "-m",
            "pip",
            "download",
            "-qq",
            "--disable-pip-version-check",
            "--dest",
            wheels,
            "--constraint",
            ROOT / "constraints.txt",
            *wanted,
        ]
    )
    stamp.write_text(key)
    return wheels


def host_exec(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return podman("exec", HOST_CONTAINER, *args, **kwargs)


def host_booted() -> None:
    def running() -> bool:
        state = host_exec(
            "systemctl", "is-system-running", check=False, capture=True, quiet=True
        ).stdout.strip()
        return state in ("running", "degraded")

    wait_for("the host's systemd up", running, 60)


def host_units_active() -> None:
    def active() -> bool:
        result = host_exec(
            "systemctl", "is-active", *HOST_UNITS, check=False, capture=True, quiet=True
        )
        return result.returncode == 0

    wait_for(f"units active: {', '.join(HOST_UNITS)}", active, 90)
    for port in (8080, 8081, 8082):
        wait_for(
            f"/ready on {port}",
            lambda port=port: (
                host_exec(
                    "python3",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/ready')",
                    check=False,
                    capture=True,
                    quiet=True,
                ).returncode
                == 0
            ),
            60,
        )


def host_roundtrip(token: str, command: str, *args: str) -> dict[str, Any]:
    script = (HERE / "sms_roundtrip.py").read_text()
    out = podman(
        "exec",
        "-i",
        HOST_CONTAINER,
        "python3",
        "-",
        command,
        "--token",
        token,
        *args,
        capture=True,
        stdin=script,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    print(json.dumps(result))
    return result


def playbook(venv: Path, workdir: Path, label: str) -> dict[str, int]:
    """One run of setup_sms_gateway.yml from `workdir` (not the repository root); its recap."""
    env = {
        **os.environ,
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        # One `podman exec` per module instead of four or five (a temporary directory, the
        # upload, chmod, run, clean-up): the play copies the source file by file.
        "ANSIBLE_PIPELINING": "1",
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
    }
    env.pop("ANSIBLE_CONFIG", None)
    started = time.monotonic()
    cmd = [
        str(venv / "bin" / "ansible-playbook"),
        *("-i", "inventory", "-e", "@secrets.yml"),
        str(ROOT / "setup_sms_gateway.yml"),
    ]
    print(f"$ (cd {workdir} && {shlex.join(cmd)})", flush=True)
    lines: list[str] = []
    with subprocess.Popen(  # noqa: S603
        cmd, cwd=workdir, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            # Live, but short: each task's name, and what changed or failed.
            if line.startswith(("TASK [", "changed:", "fatal:", "failed:", "ERROR")):
                print(f"  {line.rstrip()[:160]}", flush=True)
    output = "\n".join(lines)
    (workdir / f"{label}.log").write_text(output)
    recap = re.search(r"^" + re.escape(HOST_CONTAINER) + r"\s*:\s*(.*)$", output, re.M)
    if process.returncode != 0 or recap is None:
        print("\n".join(lines[-60:]))
        raise StepFailed(f"ansible-playbook exited {process.returncode}")
    counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    print(f"{label}: {recap.group(1).strip()} ({time.monotonic() - started:.0f} s)")
    return counts


def playbook_stage(report: Report) -> None:
    token = secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix="smsgw-ci-ansible-"))
    try:
        with report.step("playbook: the systemd host image, Ansible, the wheels"):
            podman(
                "build",
                "--layers",
                "--tag",
                HOST_IMAGE,
                "--build-arg",
                f"BASE={BASE_IMAGE}",
                HERE / "ansible-host",
                capture=True,
            )
            venv = ansible_venv()
            wheels = wheelhouse()
        with report.step("playbook: a fresh Debian 12 host booted by systemd"):
            podman("rm", "-f", "-t", "5", HOST_CONTAINER, capture=True)
            key = workdir / "id_ed25519"
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], capture=True)
            apt_cache = CACHE / "host-apt-archives"
            (apt_cache / "partial").mkdir(parents=True, exist_ok=True)
            ca = os.environ.get("SMSGW_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt")
            podman(
                "run",
                "-d",
                "--systemd=always",
                "--name",
                HOST_CONTAINER,
                "--publish",
                f"127.0.0.1:{PORT['ssh']}:22",
                "-v",
                f"{key}.pub:/home/admin/.ssh/authorized_keys:ro",
                "-v",
                f"{ca}:/etc/ssl/host-ca.crt:ro",
                "-v",
                f"{wheels}:/wheels:ro",
                "-v",
                f"{apt_cache}:/var/cache/apt/archives",
                HOST_IMAGE,
                capture=True,
            )
            host_booted()
            # Over SSH, as a real host: one multiplexed connection instead of a `podman exec`
            # per command (the play copies the source file by file).
            ssh_options = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            wait_for(
                "the host's sshd",
                lambda: (
                    run(
                        [
                            "ssh",
                            *ssh_options.split(),
                            "-i",
                            key,
                            "-p",
                            str(PORT["ssh"]),
                            "admin@127.0.0.1",
                            "true",
                        ],
                        check=False,
                        capture=True,
                        quiet=True,
                    ).returncode
                    == 0
                ),
                30,
            )
            (workdir / "inventory").write_text(
                "[sms_gateway]\n"
                f"{HOST_CONTAINER} ansible_host=127.0.0.1 ansible_port={PORT['ssh']}"
                f" ansible_user=admin ansible_ssh_private_key_file={key}"
                f" ansible_ssh_common_args='{ssh_options}'"
                " ansible_python_interpreter=/usr/bin/python3\n"
            )
            host_secrets = {
                "redis_server_password": secrets.token_hex(24),
                "sms_gateway_app_owner_db_password": secrets.token_hex(24),
                "sms_gateway_app_receiver_db_password": secrets.token_hex(24),
                "sms_gateway_app_validator_db_password": secrets.token_hex(24),
                "sms_gateway_app_admin_db_password": secrets.token_hex(24),
                "sms_gateway_services_admin_tokens": f"ci:{token}",
                # pip on the host: the CI machine's CA, and only the cached wheels.
                "sms_gateway_app_pip_environment": {
                    "PIP_CERT": "/etc/ssl/host-ca.crt",
                    "PIP_NO_INDEX": "1",
                    "PIP_FIND_LINKS": "/wheels",
                },
            }
            SECRETS.update(value for value in host_secrets.values() if isinstance(value, str))
            (workdir / "secrets.yml").write_text(json.dumps(host_secrets))
        with report.step("playbook: first run"):
            first = playbook(venv, workdir, "first-run")
            expect(first.get("failed") == 0 and first.get("unreachable") == 0, f"{first}")
        with report.step("playbook: second run changes nothing"):
            second = playbook(venv, workdir, "second-run")
            expect(second.get("changed") == 0 and second.get("failed") == 0, f"{second}")
        with report.step("playbook: an SMS end to end on the host"):
            host_units_active()
            sms = host_roundtrip(token, "send")
            redis = host_exec(
                "sh",
                "-c",
                f"REDISCLI_AUTH={host_secrets['redis_server_password']}"
                f" redis-cli SISMEMBER out_sms_numbers {sms['sender']}",
                capture=True,
                quiet=True,
            ).stdout.strip()
            expect(redis == "1", f"{sms['sender']} not in the host's Redis set ({redis!r})")
        with report.step("playbook: the host restarted, every service back"):
            podman("restart", "-t", "40", HOST_CONTAINER, capture=True)
            host_booted()
            host_units_active()
            host_roundtrip(token, "check", "--uuid", sms["uuid"])
            host_roundtrip(token, "send")
    except StepFailed:
        podman("ps", "-a", "--filter", f"name={HOST_CONTAINER}", check=False)
        host_exec("systemctl", "--no-pager", "--failed", check=False)
        host_exec("journalctl", "--no-pager", "-n", "60", check=False)
        raise
    finally:
        podman("rm", "-f", "-t", "5", HOST_CONTAINER, check=False, capture=True)
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["compose", "playbook"])
    args = parser.parse_args()
    report = Report()
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "deploy-test.lock").open("w") as lock:
        # One deployment test at a time on a machine: the names and ports are fixed.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with report.step("engine: podman with runc"):
                prepare_engine()
            with report.step(f"base image {BASE_IMAGE} (debootstrap, cached)"):
                base_image()
            if args.only in (None, "compose"):
                compose_stage(report)
            if args.only in (None, "playbook"):
                playbook_stage(report)
        except StepFailed as exc:
            print(f"\n{report.summary()}\n\ndeploy-test: FAILED at {exc}", file=sys.stderr)
            return 1
    print(f"\n{report.summary()}\n\ndeploy-test: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
