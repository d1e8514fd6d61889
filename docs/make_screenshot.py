"""Regenerate docs/images/chat.png: the chat on the shipped model, a FITS upload, a question and a tool call.

HF_HUB_OFFLINE=1 .venv/bin/python docs/make_screenshot.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "chat.png"))
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    from app.assistant import Assistant, LocalBackend
    from app.chat import ChatApp, launch, model_notice
    from app.examples import EXAMPLES
    from app.tools import ToolRunner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = ChatApp(
            Assistant(LocalBackend.load(), ToolRunner()),
            max_new_tokens=48,
            chat_height=1000,
            notice=model_notice(None),
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(app, port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"http://127.0.0.1:{port}")
            page.locator("#ask input[type=file]").set_input_files(str(EXAMPLES[0].path))
            expect(page.get_by_role("listitem", name="File thumbnail")).to_be_visible(timeout=20_000)
            page.locator("#ask textarea").fill("Find the sources in this radio field.")
            page.keyboard.press("Enter")
            expect(page.locator("#chat .user").last).to_contain_text("Find the sources")
            expect(page.locator("#ask textarea")).to_be_enabled(timeout=120_000)
            page.get_by_role("button", name="Detect sources").click()
            expect(page.locator("#chat img")).to_have_count(2, timeout=60_000)
            expect(page.locator("#ask textarea")).to_be_enabled(timeout=120_000)
            page.get_by_text("tool: detect_sources").last.click()  # open the tool step
            page.wait_for_timeout(500)
            page.locator("#chat").scroll_into_view_if_needed()
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        demo.close()
    print(args.out)


if __name__ == "__main__":
    main()
