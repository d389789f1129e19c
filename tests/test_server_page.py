"""The chat page at `/`, in a real browser: Debian's chromium driven by Playwright. A question with the bundled
picture attached gets the demo model's answer, streamed in; a second, its picture dropped on the input, gets the
demo's "Three."; the screenshot is kept in test-artifacts/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from test_server import Server

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.demo import DEMO_IMAGE
from minicpmv_edge.image import Image
from minicpmv_edge.shapes_task import Q_COUNT, Q_DESCRIBE

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def chromium() -> str:
    """The browser: $CHROMIUM, or Debian's chromium on PATH (scripts/dev.sh test installs it where apt can)."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium browser: install Debian's 'chromium' package (scripts/dev.sh test does) or set CHROMIUM"
    return path


@pytest.mark.slow
def test_the_page_streams_an_answer_about_an_attached_image(demo_f16: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    # first a description (a sentence: many tokens, so the page visibly receives it in pieces; a two-token answer
    # can arrive in one update), then the count
    first = [{"role": "user", "content": [Image(DEMO_IMAGE.read_bytes()), Q_DESCRIBE]}]
    with MiniCPMV(*demo_f16, n_threads=1) as m:
        want = m.chat(first, temperature=0)
        second = [*first, {"role": "assistant", "content": want},
                  {"role": "user", "content": [Image(DEMO_IMAGE.read_bytes()), Q_COUNT]}]
        want2 = m.chat(second, temperature=0)
    server = Server(*demo_f16, tmp_path / "server.log", "-t", "1")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.length > 0")
            assert page.text_content("#model") == "model-f16"
            page.set_input_files("#files", str(DEMO_IMAGE))
            page.wait_for_selector("#thumbs img")
            page.fill("#prompt", Q_DESCRIBE)
            # record every text the answer bubble shows while it streams
            page.evaluate("""() => { window.seen = []; new MutationObserver(() => {
                const t = document.querySelector('.assistant .text'); if (t) window.seen.push(t.textContent);
              }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true}); }""")
            page.click("#send")
            page.wait_for_selector(".assistant[data-done='1']", timeout=60_000)
            got = page.text_content(".assistant .text")
            seen = page.evaluate("window.seen")
            timings = page.text_content(".assistant .timings")
            # a second question, its picture dropped onto the input (a DataTransfer holding the file's bytes)
            page.evaluate("""(bytes) => {
                const dt = new DataTransfer();
                dt.items.add(new File([new Uint8Array(bytes)], 'demo.png', {type: 'image/png'}));
                document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt}));
              }""", list(DEMO_IMAGE.read_bytes()))
            page.wait_for_selector("#thumbs img")
            page.fill("#prompt", Q_COUNT)
            page.press("#prompt", "Enter")
            page.wait_for_selector(".assistant:nth-child(4)[data-done='1']", timeout=60_000)
            got2 = page.text_content(".assistant:nth-child(4) .text")
            page.screenshot(path=str(ARTIFACTS / "server-page.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    assert got == want and want.startswith("Three shapes: ")
    assert got2 == want2 == "Three."
    assert len({s for s in seen if s}) >= 2 and all(want.startswith(s) for s in seen)  # it arrived in pieces
    assert "1 image(s), 3 pieces" in timings and "tok/s" in timings
    assert not errors
    assert (ARTIFACTS / "server-page.png").stat().st_size > 10_000
