"""The built HTML in a real browser: headless Chromium, every request off this machine blocked.

Checks that the intro and a chapter render, that MathJax (served from the book's own static
files) typeset the equations, that every image loaded, and that internal links resolve; saves
screenshots under ``_build/screenshots/``. Needs ``make book`` first and Debian's ``chromium`` +
``chromium-driver`` (``make test-browser`` installs them). Skipped when either is missing, unless
``SMLIB_REQUIRE_BROWSER=1`` (as in CI), where a skip would hide a broken book.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
pytestmark = pytest.mark.browser


def _need(ok: bool, why: str):
    if not ok:
        if os.environ.get("SMLIB_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def server():
    _need((HTML / "index.html").exists(), "no built book: run `make book` first")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    _need(bool(chromium and driver), "Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900",
                 # the network is off: every host but this machine resolves to nothing
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _requests(drv) -> list[str]:
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _chapter_page() -> str:
    pages = sorted((HTML / "chapters").glob("*.html"))
    _need(bool(pages), "the built book has no chapter pages")
    preferred = HTML / "chapters" / "02_score_matching.html"
    return str((preferred if preferred.exists() else pages[0]).relative_to(HTML))


@pytest.mark.parametrize("page", ["index.html", "chapter"])
def test_page_renders_offline_with_typeset_math(server, browser, page):
    page = _chapter_page() if page == "chapter" else page
    browser.get(f"{server}/{page}")
    # wait for MathJax to finish typesetting (it is loaded from _static/mathjax, not a CDN)
    browser.set_script_timeout(60)
    state = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const wait = (n) => {
          if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
            MathJax.startup.promise.then(() => done('typeset')).catch(e => done('error: ' + e));
          } else if (n > 200) { done('no MathJax'); } else { setTimeout(() => wait(n + 1), 100); }
        };
        wait(0);""")
    assert state == "typeset", state
    n_math = browser.execute_script("return document.querySelectorAll('mjx-container').length")
    assert n_math > 0, "no equation was typeset"
    text = browser.execute_script("return document.querySelector('main').innerText")
    assert "$$" not in text and "\\begin{" not in text, "raw TeX left on the page"
    assert browser.execute_script("return document.querySelector('h1') !== null")
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert broken == [], f"images that did not load: {broken}"
    mathjax = [u for u in _requests(browser) if "mathjax" in u.lower()]
    assert mathjax and all(u.startswith(server) for u in mathjax), mathjax
    off_machine = [u for u in _requests(browser) if urlparse(u).scheme in ("http", "https")
                   and not u.startswith(server)]
    # requests elsewhere fail (the network is blocked); typesetting above did not need them
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / (Path(page).stem + ".png")))
    print(f"{page}: {n_math} equations typeset; blocked off-machine requests: {off_machine}")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            self.hrefs.append(a["src"])
        if tag == "link" and a.get("href") and a.get("rel") != ["canonical"]:
            self.hrefs.append(a["href"])


def test_internal_links_resolve():
    _need((HTML / "index.html").exists(), "no built book: run `make book` first")
    parsed = {}
    for page in HTML.rglob("*.html"):
        if "_static" in page.relative_to(HTML).parts:
            continue  # theme templates, not pages
        p = _Links()
        p.feed(page.read_text(errors="replace"))
        parsed[page.resolve()] = p
    broken = []
    for page, p in parsed.items():
        for href in p.hrefs:
            url = urlparse(href)
            if url.scheme or href.startswith(("//", "mailto:", "javascript:")):
                continue
            path, frag = url.path, url.fragment
            target = (page.parent / unquote(path)).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(HTML.resolve())}: {href}")
            elif frag and target.suffix == ".html" and unquote(frag) not in parsed[target].ids:
                broken.append(f"{page.relative_to(HTML.resolve())}: {href} (no such anchor)")
    assert broken == [], "\n".join(broken[:50])
