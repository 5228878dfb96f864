"""Screenshots of the analyst UI of a running service (for docs/): the queue, the riskiest case and its link graph,
its customer's page, a token's page, a search, the rules and lists pages, and the queue on a phone.

    make run            # in another terminal: the demo service on 127.0.0.1:8000
    .venv/bin/python bench/ui_screenshots.py --out docs/screenshots

Signs in with the demo analyst ($FRAUD_HOME/demo-users.txt) in headless Debian Chromium and prints
what it saved. It changes nothing on the server.

With --admin it also signs in as the demo admin and saves the named queues, the team dashboard and a rule
backtest (nothing is saved on the server by the backtest). An admin must use two-factor sign-in: the first time,
the script turns it on for the demo admin and keeps the key in $FRAUD_HOME/demo-admin-totp.txt (mode 0600) to
make the codes of later runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pyotp
from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default %(default)s)")
    parser.add_argument("--users", type=Path,
                        default=Path(os.environ.get("FRAUD_HOME", "var")) / "demo-users.txt",
                        help="the demo's user file (default $FRAUD_HOME/demo-users.txt)")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--admin", action="store_true", help="also the admins' pages (see above)")
    args = parser.parse_args()
    name, password = args.users.read_text().splitlines()[0].split(" ", 1)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{args.url}/ui/login")
        page.fill("#name", name)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{args.url}/ui/")
        page.screenshot(path=str(args.out / "queue.png"))
        page.locator("#queue tbody tr[data-href] a").first.click()
        page.wait_for_load_state()
        page.screenshot(path=str(args.out / "case.png"))
        page.screenshot(path=str(args.out / "case-full.png"), full_page=True)
        page.wait_for_selector("#graph[data-ready=true]")
        page.locator("#graph-card").screenshot(path=str(args.out / "graph.png"))
        customer = page.locator("dd a[href^='/ui/customers/']").first.get_attribute("href")
        page.goto(f"{args.url}{customer}")
        page.wait_for_selector("#graph[data-ready=true]")
        page.screenshot(path=str(args.out / "customer.png"), full_page=True)
        page.locator("#tokens a[href^='/ui/tokens/']").first.click()
        page.wait_for_selector("#graph[data-ready=true]")
        page.screenshot(path=str(args.out / "token.png"), full_page=True)
        page.goto(f"{args.url}/ui/search?q={customer.rsplit('/', 1)[1][:-2]}")
        page.screenshot(path=str(args.out / "search.png"))
        for name in ("rules", "lists"):
            page.goto(f"{args.url}/ui/{name}")
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.context.add_cookies(page.context.cookies())
        phone.goto(f"{args.url}/ui/")
        phone.screenshot(path=str(args.out / "queue-phone.png"))
        shots = ["queue.png", "case.png", "case-full.png", "graph.png", "customer.png", "token.png", "search.png",
                 "rules.png", "lists.png", "queue-phone.png"]
        if args.admin:
            shots += _admin_pages(browser, args)
        browser.close()
    for shot in shots:
        print(f"saved {args.out / shot}")


def _admin_pages(browser: Any, args: argparse.Namespace) -> list[str]:
    """The admins' pages, signed in as the demo admin with a two-factor code (turned on the first time)."""
    name, password = args.users.read_text().splitlines()[1].split(" ", 1)
    keep = args.users.parent / "demo-admin-totp.txt"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{args.url}/ui/login")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if page.url.endswith("/ui/two-factor"):
        page.click("form[action$='/two-factor/begin'] button")
        page.wait_for_load_state()
        secret = page.inner_text(".secret").replace(" ", "").strip()
        keep.write_text(secret + "\n")
        keep.chmod(0o600)
        page.fill("#confirm-code", pyotp.TOTP(secret).now())
        page.click("form[action$='/two-factor/confirm'] button")
        page.wait_for_load_state()
        page.click("text=I have saved them")
    elif page.url.endswith("/ui/login/code"):
        page.fill("#code", pyotp.TOTP(keep.read_text().strip()).now())
        page.click("button[type=submit]")
    page.wait_for_url(f"{args.url}/ui/")
    page.goto(f"{args.url}/ui/queues")
    page.screenshot(path=str(args.out / "queues.png"), full_page=True)
    page.goto(f"{args.url}/ui/dashboard")
    page.screenshot(path=str(args.out / "dashboard.png"), full_page=True)
    page.goto(f"{args.url}/ui/rules")
    page.fill("input[name='c.0.name']", "big_refund_new_account")
    page.fill("input[name='c.0.when']", "rt_refund_amount > 200 and cust_account_age_days < 365")
    page.click("button[value=backtest]")
    page.wait_for_selector("#backtest")
    page.screenshot(path=str(args.out / "backtest.png"), full_page=True)
    return ["queues.png", "dashboard.png", "backtest.png"]


if __name__ == "__main__":
    main()
