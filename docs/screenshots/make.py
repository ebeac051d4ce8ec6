"""Take the README's console screenshots from the demo organisation, in Debian's Chromium.

Runs the real commands on a temporary SQLite database (``db upgrade``, ``demo``,
``token create``, ``serve``), signs in to /console/ with the static token through
Playwright and saves 1280x800 PNGs of the overview, a person's page and a mapping's dry
run next to this file; then Sam (a token bound to him) asks for the warehouse and his
manager Grace sees it in her inbox. Nothing outside the temporary directory is touched.

    .venv/bin/python docs/screenshots/make.py      # needs /usr/bin/chromium
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).with_name("provisioning")
CHROMIUM = os.environ.get("PROVISIONING_TEST_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def provisioning(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [str(CLI), *args], env=env, check=True, capture_output=True, text=True
    ).stdout


def wait_ready(url: str, server: subprocess.Popen) -> None:
    for _ in range(120):
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def signed_in(browser: Any, url: str, token: str, home: str) -> Any:
    """A new browser context's page, signed in with ``token``, at ``home``."""
    page = browser.new_context(base_url=url, viewport=VIEWPORT).new_page()
    page.set_default_timeout(15_000)
    page.goto("/console/sign-in")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(home)
    return page


def screenshots(url: str, token: str, sam: str, grace: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as manager:
        browser = manager.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = signed_in(browser, url, token, "**/console/")
        page.screenshot(path=str(HERE / "overview.png"))

        page.get_by_role("link", name="People").click()
        page.get_by_label("Search by name, userName or email").fill("hopper")
        page.locator("#results").get_by_role("link", name="grace.hopper@example.com").click()
        page.wait_for_selector("#person-state")
        page.screenshot(path=str(HERE / "person.png"))

        page.get_by_role("link", name="Mappings").click()
        page.get_by_label("Group", exact=True).select_option(label="sales")
        page.get_by_label("Connector", exact=True).select_option("github")
        page.get_by_label("Access level").select_option("read")
        page.get_by_role("button", name="Show who gains access").click()
        page.locator("#dry-run").scroll_into_view_if_needed()
        page.screenshot(path=str(HERE / "mapping-dry-run.png"))

        # Sam (a token bound to him) asks; his manager Grace finds it in her inbox.
        page = signed_in(browser, url, sam, "**/console/requests")
        page.get_by_role("link", name="Request warehouse").click()
        page.get_by_label("Access level").select_option("read")
        page.get_by_label("For how many days").fill("10")
        page.get_by_label("Why you need it").fill("Quarter-end billing reconciliation")
        page.screenshot(path=str(HERE / "request-new.png"))
        page.get_by_role("button", name="Send the request").click()
        page.wait_for_selector("#mine table")
        page = signed_in(browser, url, grace, "**/console/requests")
        page.screenshot(path=str(HERE / "requests-inbox.png"))
        browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp}/demo.db",
            "PROVISIONING_LOG_FORMAT": "text",
        }
        provisioning(env, "db", "upgrade")
        provisioning(env, "demo")
        token = provisioning(env, "token", "create", "--name", "admin", "--scope", "admin:write")
        provisioning(
            env, "requests", "policy", "warehouse", "--approvers", "manager", "--max-days", "30"
        )
        sam, grace = (
            provisioning(
                env,
                "token",
                "create",
                "--name",
                name,
                "--scope",
                "requests:write",
                "--person",
                person,
            ).strip()
            for name, person in (
                ("sam-laptop", "contractor.sam@example.com"),
                ("grace-laptop", "grace.hopper@example.com"),
            )
        )
        port = free_port()
        url = f"http://localhost:{port}"
        server = subprocess.Popen(
            [str(CLI), "serve", "--port", str(port), "--no-jobs"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "serve.log", "w"),  # noqa: SIM115
        )
        try:
            wait_ready(url, server)
            screenshots(url, token.strip(), sam, grace)
        finally:
            server.terminate()
            server.wait(timeout=60)
    for name in ("overview", "person", "mapping-dry-run", "request-new", "requests-inbox"):
        print(HERE / f"{name}.png")


if __name__ == "__main__":
    main()
