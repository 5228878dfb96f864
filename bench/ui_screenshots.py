"""Screenshots of the analyst UI of a running service (for docs/): the queue and the riskiest case.

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
        browser.close()
    for shot in ("queue.png", "case.png", "case-full.png"):
        print(f"saved {args.out / shot}")


if __name__ == "__main__":
    main()
