"""A headless Chromium driven by Selenium (Debian's ``chromium`` and ``chromium-driver``).

Product-agnostic: a driver factory and a wait helper; ``make install-test`` installs the
two Debian packages when they are missing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


def available() -> str | None:
    """Why no browser can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing: apt-get install -y chromium chromium-driver"
    return None


def chromium(width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """A headless Chromium; quit it when done."""
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy (or its exception stops recurring)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:  # the page is still loading
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")
        time.sleep(0.2)
