"""Headless Chromium for the dashboard's tests and screenshot: Debian's
/usr/bin/chromium driven by Playwright (the `playwright` package brings its
driver; no browser download). Nothing here runs unless asked."""
import contextlib
import os
import shutil

CHROMIUM = "/usr/bin/chromium"
MISSING = "Debian's chromium is not installed: .ci/run installs it; apt-get install chromium"
# no network of its own: no updates, sync, QUIC probes or first-run pages
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-domain-reliability", "--no-pings"]


def available():
    """None when the browser can run here, else why not."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return MISSING
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: run `make setup` (requirements.txt pins it)"
    return None


@contextlib.contextmanager
def chromium(user_data_dir, width=1280, height=900):
    """A browser context on a fresh profile in `user_data_dir` (removed afterwards)."""
    from playwright.sync_api import sync_playwright

    os.makedirs(user_data_dir, exist_ok=True)
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                user_data_dir, executable_path=CHROMIUM, headless=True, args=ARGS,
                viewport={"width": width, "height": height}, device_scale_factor=1,
                service_workers="block")
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(user_data_dir, ignore_errors=True)
