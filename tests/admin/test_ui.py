"""The operator page (issue 5, item 4): public static files holding no data, under a strict
Content-Security-Policy; and, in Debian's headless Chromium driven over WebDriver, an operator
who enters a token, reads the stats, changes a setting and looks up an SMS."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from sms_gateway.settings import setting_rule
from tests.admin.conftest import Operators, audit_rows, insert_sms, stored_settings

CONTENT_TYPES: Final = {
    "/": "text/html; charset=utf-8",
    "/ui/app.js": "text/javascript; charset=utf-8",
    "/ui/style.css": "text/css; charset=utf-8",
    "/ui/icon.svg": "image/svg+xml",
}
PACKAGED: Final = {
    "/": "index.html",
    "/ui/app.js": "app.js",
    "/ui/style.css": "style.css",
    "/ui/icon.svg": "icon.svg",
}


def packaged(path: str) -> bytes:
    return resources.files("services.admin.ui").joinpath(PACKAGED[path]).read_bytes()


def policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


# ------------------------------------------------------------------ without a browser


@pytest.mark.parametrize("path", sorted(CONTENT_TYPES))
async def test_the_page_and_its_assets_are_served_without_a_token(
    admin: httpx.AsyncClient, path: str
) -> None:
    response = await admin.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPES[path]
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = policy(response.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["form-action"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]


async def test_the_page_holds_no_data(
    admin: httpx.AsyncClient, operators: Operators, owner_pool: asyncpg.Pool
) -> None:
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE system_settings SET setting_value = '4321' WHERE setting_key = 'batch_size'"
        )
    await insert_sms(owner_pool, "447700955501", overall_status="valid")
    for path in CONTENT_TYPES:
        anonymous = await admin.get(path)
        authenticated = await admin.get(path, headers=operators.header())
        # Byte for byte the packaged file, whoever asks: nothing is rendered into it.
        assert anonymous.content == authenticated.content == packaged(path)
        for secret in [*operators.tokens.values(), "4321", "447700955501"]:
            assert secret not in anonymous.text


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/__init__.py", "/index.html", "/ui/x.js"])
async def test_nothing_else_is_public(admin: httpx.AsyncClient, path: str) -> None:
    assert (await admin.get(path)).status_code == 401


class PageStructure(HTMLParser):
    """What the CSP and accessibility depend on in the page's markup."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.stylesheets: list[str | None] = []
        self.inline: list[str] = []  # inline script, style or event handlers
        self.inputs: list[dict[str, str | None]] = []
        self.labelled: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.inline += [
            f"{tag} {name}" for name in attributes if name.startswith("on") or name == "style"
        ]
        if tag == "script":
            self.scripts.append(attributes.get("src"))
            self._in_script = True
        elif tag == "style":
            self.inline.append("style element")
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes.get("href"))
        elif tag == "input":
            self.inputs.append(attributes)
        elif tag == "label" and attributes.get("for"):
            self.labelled.add(str(attributes["for"]))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script text")


def test_the_page_needs_nothing_the_policy_forbids_and_labels_its_fields() -> None:
    page = PageStructure()
    page.feed(packaged("/").decode())
    assert page.scripts == ["/ui/app.js"]
    assert page.stylesheets == ["/ui/style.css"]
    assert page.inline == []
    for field in page.inputs:
        assert field.get("id") in page.labelled or field.get("aria-label"), field
    token_field = next(field for field in page.inputs if field.get("id") == "token")
    # Without a name a field is never part of a form submission, so never of a URL.
    assert "name" not in token_field
    assert token_field["type"] == "password"


def test_the_script_neither_parses_html_nor_keeps_the_token() -> None:
    script = "\n".join(
        line
        for line in packaged("/ui/app.js").decode().splitlines()
        if not line.lstrip().startswith("//")
    )  # code, not the comments about it
    for forbidden in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "localStorage",
        "sessionStorage",
        "document.cookie",
        "eval(",
    ):
        assert forbidden not in script, forbidden


# ------------------------------------------------------------------ in headless Chromium

CHROMIUM: Final = shutil.which("chromium")
CHROMEDRIVER: Final = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)
HTTP_PORTS: Final = range(8140, 8150)  # the admin's ports for its own end-to-end runs
CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1700",
)
ELEMENT: Final = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key
WAIT_SECONDS: Final = 20.0


def bound_socket(taken: int | None = None) -> socket.socket:
    """A socket bound to the first free port of HTTP_PORTS (other than `taken`)."""
    for port in HTTP_PORTS:
        if port == taken:
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        return sock
    raise RuntimeError(f"no free port in {HTTP_PORTS}")


def wait_for(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {WAIT_SECONDS} s")
        time.sleep(0.05)


@pytest.fixture
def served_admin(admin_app: FastAPI) -> Iterator[str]:
    """The admin app under uvicorn in a thread, on a real port: the base URL."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(admin_app, log_config=None, access_log=False))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="admin-ui-server", daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), "the admin app started")
        assert server.started, "the admin app did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def chromedriver(served_admin: str, tmp_path: Path) -> Iterator[str]:
    """Debian's chromedriver on another port of the range: its WebDriver URL."""
    assert CHROMEDRIVER is not None
    taken = int(served_admin.rsplit(":", 1)[1])
    probe = bound_socket(taken)
    port = probe.getsockname()[1]
    probe.close()
    with (tmp_path / "chromedriver.log").open("wb") as log:
        process = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, (tmp_path / "chromedriver.log").read_text()
        try:
            return bool(httpx.get(f"{url}/status", timeout=1).json()["value"]["ready"])
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, "chromedriver answered")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


class Browser:
    """One WebDriver session, spoken as JSON over HTTP (W3C WebDriver)."""

    def __init__(self, client: httpx.AsyncClient, session: str) -> None:
        self.client = client
        self.session = session

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.client.request(method, f"/session/{self.session}{path}", json=body)
        answer = response.json()["value"]
        assert response.status_code == 200, f"WebDriver {method} {path}: {answer}"
        return answer

    async def open(self, url: str) -> None:
        await self.call("POST", "/url", {"url": url})

    async def elements(self, css: str) -> list[str]:
        found = await self.call("POST", "/elements", {"using": "css selector", "value": css})
        return [item[ELEMENT] for item in found]

    async def element(self, css: str) -> str:
        found = await self.elements(css)
        assert len(found) == 1, f"{len(found)} elements match {css}"
        return found[0]

    async def texts(self, css: str) -> list[str]:
        """The rendered text of each match, whitespace folded, read at one instant: the page
        replaces its stats rows every few seconds, which would stale element references."""
        texts = await self.call(
            "POST",
            "/execute/sync",
            {
                "script": (
                    "return Array.from(document.querySelectorAll(arguments[0]),"
                    " node => node.innerText.replace(/\\s+/g, ' ').trim())"
                ),
                "args": [css],
            },
        )
        assert isinstance(texts, list)
        return [str(text) for text in texts]

    async def displayed(self, css: str) -> bool:
        return bool(await self.call("GET", f"/element/{await self.element(css)}/displayed"))

    async def type_into(self, css: str, text: str) -> None:
        element = await self.element(css)
        await self.call("POST", f"/element/{element}/clear", {})
        await self.call("POST", f"/element/{element}/value", {"text": text})

    async def click(self, css: str) -> None:
        await self.call("POST", f"/element/{await self.element(css)}/click", {})

    async def run(self, script: str) -> Any:
        return await self.call("POST", "/execute/sync", {"script": script, "args": []})

    async def screenshot(self) -> bytes:
        return base64.b64decode(await self.call("GET", "/screenshot"))

    async def text_containing(self, css: str, expected: str) -> str:
        """The first text of `css` that contains `expected`, polled for: the page works
        asynchronously."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            texts = await self.texts(css)
            found = next((text for text in texts if expected in text), None)
            if found is not None:
                return found
            assert time.monotonic() < deadline, (
                f"{expected!r} not in {css} within {WAIT_SECONDS} s; it shows {texts}"
            )
            await asyncio.sleep(0.1)


@pytest.fixture
async def browser(chromedriver: str, tmp_path: Path) -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    capabilities = {
        "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"],
            },
        }
    }
    async with httpx.AsyncClient(base_url=chromedriver, timeout=60) as client:
        response = await client.post("/session", json={"capabilities": capabilities})
        assert response.status_code == 200, response.text
        session = Browser(client, response.json()["value"]["sessionId"])
        try:
            yield session
        finally:
            await client.delete(f"/session/{session.session}")


def row(key: str) -> str:
    return f'#settings tr[data-key="{key}"]'


@pytest.mark.slow
@needs_chromium
async def test_an_operator_reads_stats_changes_a_setting_and_looks_up_an_sms(
    served_admin: str, browser: Browser, operators: Operators, owner_pool: asyncpg.Pool
) -> None:
    message = "<b>ACME</b> 0123456789abcdef +447700900123"
    refused_at_header = await insert_sms(
        owner_pool,
        "447700900123",
        message,
        overall_status="invalid",
        results={"blacklist": 1, "duplicate": 1, "header": 2},
        failed_at_check="header",
    )
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE system_settings SET setting_value = 'long' WHERE setting_key = 'hash_length'"
        )
    token = operators.tokens["operator"]

    await browser.open(f"{served_admin}/")
    assert not await browser.displayed("#panels")
    await browser.type_into("#token", token)
    await browser.click("#connect button[type=submit]")

    # Stats at a glance, refreshed while the page is open.
    await browser.text_containing("#by-status tbody tr", "invalid 1")
    assert "Backlog after checkpoint" in (await browser.texts("#flow"))[0]
    await insert_sms(owner_pool, "447700900124", overall_status="valid", forwarded=True)
    await browser.text_containing("#by-status tbody tr", "valid 1")
    await browser.text_containing("#by-status tbody tr", "total judged 2")

    # The settings table: read-only and hand-broken values are shown as such.
    assert await browser.elements(f"{row('last_processed_uuid')} input") == []
    assert "read-only" in (await browser.texts(row("last_processed_uuid")))[0]
    assert len(await browser.elements(f"{row('hash_length')}.invalid")) == 1
    await browser.text_containing(row("hash_length"), "Invalid stored value")

    # A bad value is refused with the key and its rule, and nothing is written.
    settings_before = await stored_settings(owner_pool)
    await browser.type_into(f"{row('batch_size')} input", "0")
    await browser.click(f"{row('batch_size')} button")
    refusal = await browser.text_containing(
        f"{row('batch_size')} .outcome", setting_rule("batch_size")
    )
    assert refusal.startswith("Refused: batch_size:")
    assert await stored_settings(owner_pool) == settings_before
    assert await audit_rows(owner_pool) == []

    # A good value is stored and audited under the token's name.
    await browser.type_into(f"{row('batch_size')} input", "50")
    await browser.click(f"{row('batch_size')} button")
    await browser.text_containing(f"{row('batch_size')} .outcome", "Saved by operator")
    assert (await stored_settings(owner_pool))["batch_size"] == "50"
    [audit] = await audit_rows(owner_pool)
    assert (audit["setting_key"], audit["new_value"], audit["changed_by"]) == (
        "batch_size",
        "50",
        "operator",
    )
    await browser.text_containing(f"{row('batch_size')} td", "50")

    # One SMS with its check results; what it says is shown as text, never as markup.
    await browser.type_into("#sms-uuid", str(refused_at_header))
    await browser.click("#sms-lookup button")
    await browser.text_containing("#sms-detail tbody tr", "header 2 fail")
    await browser.text_containing("#sms-detail tbody tr", "blacklist 1 pass")
    await browser.text_containing("#sms-detail dd", message)
    assert await browser.elements("#sms-detail b") == []
    if shot := os.environ.get("SMSGW_UI_SCREENSHOT"):  # for a human to look at; never committed
        height = await browser.run("return document.documentElement.scrollHeight")
        await browser.call("POST", "/window/rect", {"width": 1280, "height": height + 150})
        await asyncio.to_thread(Path(shot).write_bytes, await browser.screenshot())
    await browser.type_into("#sms-uuid", str(uuid4()))
    await browser.click("#sms-lookup button")
    await browser.text_containing("#sms-message", "No SMS has the uuid")

    # The token was kept nowhere but in the script's memory.
    kept = await browser.run(
        "return [document.cookie, JSON.stringify(Object.entries(localStorage)), "
        "JSON.stringify(Object.entries(sessionStorage)), location.href, "
        "document.documentElement.outerHTML, document.getElementById('token').value]"
    )
    assert all(token not in place for place in kept)

    # Forgetting the token hides the panels and drops what they showed.
    await browser.click("#disconnect")
    await browser.text_containing("#connection", "Token forgotten")
    assert not await browser.displayed("#panels")
    assert await browser.elements("#settings tbody tr") == []
