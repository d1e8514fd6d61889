"""Peak memory of `astrovlm chat` with the default model (DESIGN section 9: <= 3 GB), driven as a person
would in a headless Chromium: upload a FITS file, ask, run every image tool and a HITL round.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf/chat_memory.py [--chromium /usr/bin/chromium]

Prints the chat process's RSS after loading and its peak (VmHWM) after the session.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    chat = subprocess.Popen([sys.executable, "-m", "app.cli", "chat", "--port", str(port)], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        loaded = psutil.Process(chat.pid).memory_info().rss
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            page.locator("#ask input[type=file]").set_input_files(
                str(ROOT / "app/examples/radio-field-simulated.fits")
            )
            expect(page.get_by_role("listitem", name="File thumbnail")).to_be_visible(timeout=20_000)
            page.locator("#ask textarea").fill("Describe this image.")
            page.keyboard.press("Enter")
            expect(page.locator("#chat .user").last).to_contain_text("Describe")
            for button in ("Detect sources", "Image statistics", "Find similar", "Classify"):
                expect(page.locator("#ask textarea")).to_be_enabled(timeout=300_000)
                page.get_by_role("button", name=button).click()
                page.wait_for_timeout(500)
            expect(page.locator("#ask textarea")).to_be_enabled(timeout=300_000)
            page.get_by_role("tab", name="Find objects (HITL)").click()
            page.locator("#hitl-start").click()
            expect(page.locator("#hitl-status")).to_contain_text("Session", timeout=300_000)
            page.locator("#hitl-next").click()
            expect(page.locator("#hitl-targets input[type=checkbox]").first).to_be_visible(timeout=120_000)
            browser.close()
        status = Path(f"/proc/{chat.pid}/status").read_text()
        peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        chat.terminate()
        chat.wait(30)
    print(f"{'figure':<24} value")
    print(f"{'rss after load (MB)':<24} {loaded / 2**20:.0f}")
    print(f"{'peak rss (MB)':<24} {peak_kb / 1024:.0f}   (target <= 3072)")


if __name__ == "__main__":
    main()
