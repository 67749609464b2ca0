"""A real headless Chromium driven by Selenium, for the operator console's
tests, and the checks every page must pass.

* ``start_browser`` runs Debian's ``chromium`` through its
  ``chromium-driver`` (``/usr/bin/chromedriver``), offline
  (``SE_OFFLINE=true``: Selenium Manager never downloads anything), with
  the flags this closed network needs, a fresh profile, downloads into a
  given folder, and the browser console and network events recorded.
* ``Console`` wraps one browser on one server: open a path, wait for an
  element, type, click, save a numbered screenshot into the test's output
  folder, and check a page (every input labelled, nothing wider than the
  window, no inline script, no console errors).
* ``leaks`` says where any of a set of secrets shows up: URLs the browser
  loaded or requested, the browser console, local storage, cookies, the
  page (markup and input values), session storage.

scripts/setup-tools.sh installs chromium, chromium-driver and selenium; a
missing one fails the test with that hint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from testkit import tool, wait_until  # noqa: E402


# Headless on a machine without a display or outside network: no sandbox
# (tests run as root), no background services that would dial out.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--password-store=basic",
]

OUTPUT_ROOT = Path(
    os.environ.get("STRONGROOM_CONSOLE_OUTPUT") or Path(__file__).parent / "output" / "console"
).resolve()


def output_dir(test_name: str) -> Path:
    """The folder of one test's screenshots and downloads (emptied first)."""
    path = OUTPUT_ROOT / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def start_browser(download_dir: Path, width: int = 1280, height: int = 900) -> webdriver.Chrome:
    chromium = tool("STRONGROOM_CHROMIUM", "Debian's chromium", default="/usr/bin/chromium")
    chromedriver = tool("STRONGROOM_CHROMEDRIVER", "Debian's chromium-driver", default="/usr/bin/chromedriver")
    profile = tempfile.mkdtemp(prefix="strongroom-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "credentials_enable_service": False,
            "profile.password_manager_enabled": False,
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
    )
    driver.set_script_timeout(20)
    driver._strongroom_profile = profile  # type: ignore[attr-defined]
    return driver


def stop_browser(driver: webdriver.Chrome) -> None:
    profile = getattr(driver, "_strongroom_profile", None)
    try:
        driver.quit()
    finally:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)


# A page being rebuilt under the driver: an element gone stale, a script
# that ran mid-navigation, a value not there yet. Each means "not yet".
PAGE_IN_FLUX = (StaleElementReferenceException, WebDriverException, AssertionError, KeyError)


def wait_on_page(what: str, check: Callable[[], object], timeout: float = 20.0):
    """testkit's ``wait_until`` for a browser: the page changing under
    ``check`` counts as "not yet"."""
    return wait_until(what, check, timeout=timeout, not_yet=PAGE_IN_FLUX)


class Console:
    """One browser tab on one server's console."""

    def __init__(self, driver: webdriver.Chrome, addr: str, out: Path):
        self.driver = driver
        self.addr = addr
        self.out = out
        self.shots = 0
        self.console_log: list[dict] = []
        self.requested_urls: list[str] = []
        self.visited_urls: list[str] = []

    # ------------------------------------------------------------ basics
    def open(self, path: str = "/") -> None:
        self.driver.get(self.addr + path)
        self.wait_for("main h1")

    def path(self) -> str:
        url = self.driver.current_url
        self.visited_urls.append(url)
        return re.sub(r"^https?://[^/]+", "", url)

    def wait_path(self, prefix: str, timeout: float = 20.0) -> str:
        return wait_on_page(f"the console at {prefix}", lambda: self.path().startswith(prefix) and self.path(), timeout)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, text: str | None = None, timeout: float = 20.0) -> WebElement:
        def visible():
            for el in self.find_all(css):
                if el.is_displayed() and (text is None or text in el.text):
                    return el
            return None

        what = f"{css} showing {text!r}" if text else f"{css} to show"
        return wait_on_page(what, visible, timeout)

    def wait_gone(self, css: str, timeout: float = 20.0) -> None:
        wait_on_page(f"{css} to go away", lambda: not any(el.is_displayed() for el in self.find_all(css)), timeout)

    def type(self, css: str, text: str) -> WebElement:
        el = self.wait_for(css)
        el.clear()
        el.send_keys(text)
        return el

    def click(self, css: str, text: str | None = None) -> None:
        self.wait_for(css, text).click()

    def text(self, css: str) -> str:
        return self.wait_for(css).text

    def heading(self) -> str:
        return self.wait_for("main h1").text

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    # ------------------------------------------------------------ logs
    def collect_logs(self) -> None:
        """Moves the browser's console and network events into this object
        (Chrome hands each entry out once)."""
        self.console_log.extend(self.driver.get_log("browser"))
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                self.requested_urls.append(params["request"]["url"])
                if params.get("documentURL"):
                    self.requested_urls.append(params["documentURL"])

    def requests_to(self, path_part: str) -> list[str]:
        self.collect_logs()
        return [u for u in self.requested_urls if path_part in u]

    # ------------------------------------------------------------ checks
    def check_page(self) -> None:
        """What every page must satisfy: labelled inputs, no inline
        script, nothing wider than the window, no console errors."""
        unlabelled = self.js(
            """
            return [...document.querySelectorAll('input, select, textarea')]
              .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !el.getAttribute('aria-labelledby'))
              .map(el => el.outerHTML);
            """
        )
        assert not unlabelled, f"inputs without a label: {unlabelled}"
        inline = self.js("return document.querySelectorAll('script:not([src])').length")
        assert inline == 0, "an inline script is on the page"
        overflow = self.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than the window"
        self.collect_logs()
        # API answers such as 400 for a wrong key are logged by Chrome as
        # network errors: expected. Script errors and policy violations are not.
        errors = [e for e in self.console_log if e.get("level") == "SEVERE" and e.get("source") != "network"]
        assert not errors, f"browser console errors: {errors}"

    def shot(self, name: str) -> Path:
        """Checks the page, then saves a screenshot ``NN-name.png``."""
        self.check_page()
        self.shots += 1
        path = self.out / f"{self.shots:02d}-{name}.png"
        # The whole page: make the window as tall as the page (no scroll
        # bar), take the shot, put the window back.
        size = self.driver.get_window_size()
        chrome = size["height"] - self.js("return window.innerHeight")
        height = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(size["width"], max(size["height"], min(height + chrome, 6000)))
        try:
            assert self.driver.save_screenshot(str(path)), f"no screenshot at {path}"
        finally:
            self.driver.set_window_size(size["width"], size["height"])
        return path

    def leaks(self, secrets: Iterable[str], allow_session_storage: bool = False) -> list[str]:
        """Every place one of ``secrets`` shows up in the browser."""
        secrets = [s for s in secrets if s]
        self.collect_logs()
        places = {
            "a URL the browser loaded or requested": "\n".join(self.requested_urls + self.visited_urls + [self.driver.current_url]),
            "the browser console": json.dumps(self.console_log),
            "local storage": self.js("return JSON.stringify(Object.entries(localStorage))"),
            "cookies": self.js("return document.cookie") + json.dumps(self.driver.get_cookies()),
            "the page": self.js(
                """
                return document.documentElement.outerHTML + '\\n' +
                  [...document.querySelectorAll('input, textarea')].map(el => el.value).join('\\n');
                """
            ),
            "resource timing": self.js("return performance.getEntries().map(e => e.name).join('\\n')"),
        }
        if not allow_session_storage:
            places["session storage"] = self.js("return JSON.stringify(Object.entries(sessionStorage))")
        found = []
        for secret in secrets:
            for where, text in places.items():
                if secret in text:
                    found.append(f"{secret[:6]}… in {where}")
        return found


def downloaded_file(folder: Path, timeout: float = 20.0) -> Path:
    """The one finished download in ``folder``."""

    def done():
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.endswith((".crdownload", ".tmp"))]
        partial = [p for p in folder.iterdir() if p.name.endswith(".crdownload")]
        return files[0] if len(files) == 1 and not partial else None

    return wait_on_page(f"a downloaded file in {folder}", done, timeout)
