"""Screenshots of the analyst UI of a running service (for docs/): the queue, the riskiest case and its link graph,
its customer's page, a token's page, a search, the rules and lists pages, and the queue on a phone.

    make run            # in another terminal: the demo service on 127.0.0.1:8000
    .venv/bin/python bench/ui_screenshots.py --out docs/screenshots

Signs in with the demo analyst ($FRAUD_HOME/demo-users.txt) in headless Debian Chromium and prints
what it saved. It changes nothing on the server.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
        browser.close()
    for shot in ("queue.png", "case.png", "case-full.png", "graph.png", "customer.png", "token.png", "search.png",
                 "rules.png", "lists.png", "queue-phone.png"):
        print(f"saved {args.out / shot}")


if __name__ == "__main__":
    main()
