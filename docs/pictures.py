"""Remake the README's pictures from a real run, and check the run in a real browser.

1. Trains one run on the spot (default: the course's multinomial network on Debian's real
   Fashion-MNIST, 5 epochs) into a store of its own.
2. Saves four of its figures (confusion matrix, first-layer weights, typical examples,
   training curves), shrunk to under 150 KB each.
3. Starts `mlflow ui` on that store and, in headless Chromium (Debian's `chromium`, driven
   over its DevTools port) with a fresh profile, opens the address the run printed: its
   experiment must show the runs table (not MLflow 3's GenAI dashboard) and its Overview
   the result's first line; saves screenshots of the run's Overview, its metric charts and
   its artifacts, each once the page shows what it should.
4. Asks the server's REST API that the run's figures and tables are listed.

    make pictures                                  # writes docs/images/
    python docs/pictures.py --out /tmp/p data=digits trainer.max_epochs=2   # any run

Needs `chromium` (apt-get install chromium) and the `websockets` package (the test extra).
Exits non-zero, with the reason, when a page never shows its content.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image

DEFAULT_RUN = [
    "experiment=course_multinomial",
    "data=fashion_mnist",
    "data.dir=/usr/share/datasets/fashion-mnist",
    "data.mirrors=[]",
    "trainer.max_epochs=5",
]
FIGURES = ("confusion_matrix_test", "first_layer_weights", "typical_examples", "training_curves")
MAX_BYTES = 150_000
CHROMIUM_FLAGS = (
    # As this machine's probe found: no sandbox as root, and no calls home that a closed
    # network refuses many at a time.
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Page -> (URL suffix after the run's address, texts to click in order, and a JavaScript
# condition that holds once the page has drawn what it should show). The Overview must show
# the run's page (its description, which starts with the result) straight from the address
# the run printed, in a fresh profile: not MLflow 3's GenAI dashboard.
PAGES = {
    "ui_overview": (
        "",
        (),
        "document.body.innerText.includes('Accuracy by split')"
        " && /Test accuracy 0\\.\\d{4}/.test(document.body.innerText)",
    ),
    "ui_metrics": (
        "/model-metrics",
        (),
        "document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 6",
    ),
    "ui_artifacts": (
        "/artifacts",
        ("figures", "confusion_matrix_test.png"),
        "[...document.querySelectorAll('img')].some(i => i.naturalWidth > 300)",
    ),
}
CLOSE_ASSISTANT = "document.querySelector('button[aria-label=\"Close\"]')?.click()"


def wait_for(url: str, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{what} did not answer at {url} within {seconds:.0f} s.")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


# -- 1 and 2: a run and its figures --------------------------------------------------------


def train(store: Path, overrides: list[str]) -> tuple[str, str, str]:
    """(run name, run id, the run's address as it printed it) of one denselab-train run into
    ``store``."""
    uri = f"sqlite:///{store / 'mlflow.db'}"
    command = [
        str(Path(sys.executable).parent / "denselab-train"),
        *overrides,
        f"tracking.uri={uri}",
        "tracking.experiment_name=pictures",
    ]
    done = subprocess.run(command, cwd=store, check=True, capture_output=True, text=True)
    said = done.stdout + done.stderr
    sys.stdout.write(said)
    printed = re.search(r"The run in the MLflow UI: (\S+)", said)
    if printed is None:
        raise SystemExit("The run did not print its address in the MLflow UI.")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pictures").experiment_id])
    return run.info.run_name, run.info.run_id, printed.group(1)


def save_small_png(data: bytes, path: Path) -> int:
    """The PNG as it is, else with a 256-colour palette, else scaled down step by step,
    until it is under MAX_BYTES; returns its size."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    scale, palette = 1.0, False
    while True:
        size = (round(image.width * scale), round(image.height * scale))
        small = image.resize(size, Image.LANCZOS) if scale < 1.0 else image
        if palette:
            small = small.quantize(colors=256, method=Image.MEDIANCUT)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES or scale < 0.3:
            path.write_bytes(buffer.getvalue())
            return buffer.tell()
        if palette:
            scale *= 0.85
        palette = True


def save_figures(store: Path, run_id: str, out: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIGURES:
            local = client.download_artifacts(run_id, f"figures/{name}.png", tmp)
            size = save_small_png(Path(local).read_bytes(), out / f"{name}.png")
            print(f"{out / f'{name}.png'}: {size / 1000:.0f} KB")


# -- 3: the UI in a real browser -----------------------------------------------------------


@contextmanager
def mlflow_ui(store: Path) -> Iterator[str]:
    # Port 0: the server binds a free port itself and says which, so no other process can
    # take a port chosen for it beforehand.
    log = store / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "ui",
                "--backend-store-uri",
                f"sqlite:///{store / 'mlflow.db'}",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            cwd=store,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        said = rb"Uvicorn running on http://127\.0\.0\.1:(\d+)"
        url = f"http://127.0.0.1:{wait_for_port(log, said, 120, 'mlflow ui')}"
        wait_for(f"{url}/health", 120, "mlflow ui")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def wait_for_port(path: Path, pattern: bytes, seconds: float, what: str) -> int:
    """The port a server wrote to ``path`` (``pattern``'s first group), once it has."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_bytes()) if path.exists() else None
        if found:
            return int(found.group(1))
        time.sleep(0.5)
    raise SystemExit(f"{what} did not say its port within {seconds:.0f} s.")


@contextmanager
def chromium(width: int, height: int) -> Iterator["Browser"]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        # Port 0: Chromium binds a free port and writes it to DevToolsActivePort.
        proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            port = wait_for_port(active, rb"^(\d+)\n", 60, "chromium")
            wait_for(f"http://127.0.0.1:{port}/json/version", 60, "chromium")
            page = next(t for t in get_json(f"http://127.0.0.1:{port}/json") if t["type"] == "page")
            with Browser(page["webSocketDebuggerUrl"], width, height) as browser:
                yield browser
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


class Browser:
    """One Chromium tab over the DevTools protocol: navigate, wait for text, screenshot."""

    def __init__(self, ws_url: str, width: int, height: int):
        self.ws_url, self.width, self.height = ws_url, width, height
        self._next_id = 0

    def __enter__(self) -> "Browser":
        from websockets.sync.client import connect

        self._ws = connect(self.ws_url, max_size=64 * 2**20, open_timeout=30).__enter__()
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def __exit__(self, *exc) -> None:
        self._ws.__exit__(*exc)

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:  # events arrive between the answers; skip them
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait(self, condition: str, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not self.evaluate(f"Boolean({condition})"):
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} within {seconds:.0f} s ({condition}).")
            time.sleep(0.5)

    def click_text(self, text: str, seconds: float = 30) -> None:
        """Click the innermost element whose whole text is ``text``, once there is one."""
        find = (
            "[...document.querySelectorAll('body *')].reverse()"
            f".find(e => e.innerText && e.innerText.trim() === {json.dumps(text)})"
        )
        self.wait(find, seconds, f"No {text!r} to click")
        self.evaluate(f"{find}.click()")

    def show(self, url: str, clicks: tuple, ready: str, seconds: float = 90) -> None:
        """Open ``url``, click through ``clicks``, and wait until ``ready`` holds."""
        self.call("Page.navigate", url=url)
        for text in clicks:
            self.click_text(text)
        self.wait(ready, seconds, f"{url} did not show what it should")
        time.sleep(1.0)  # the last frame of a chart's animation

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])


def screenshot_ui(url: str, address: str, run_name: str, out: Path) -> None:
    """Screenshots of the run's pages, opened from ``address`` (what the run printed, its
    UI port replaced by ``url``'s) with nothing clicked first; and the check that the same
    view of its experiment is the runs table, not MLflow 3's GenAI dashboard."""
    page, _, view = address.replace("http://127.0.0.1:5000", url, 1).partition("?")
    with chromium(1400, 1000) as browser:  # a fresh profile: no view chosen before
        experiment = page.split("/runs/")[0]
        table = (
            f"document.body.innerText.includes({json.dumps(run_name)})"
            " && !document.body.innerText.includes('Token Usage')"
        )
        browser.show(f"{experiment}?{view}", (), table)
        print(f"{experiment}?{view} shows the runs table")
        for name, (suffix, clicks, ready) in PAGES.items():
            browser.show(f"{page}{suffix}?{view}", clicks, ready)
            browser.evaluate(CLOSE_ASSISTANT)
            time.sleep(0.5)
            size = save_small_png(browser.screenshot(), out / f"{name}.png")
            print(f"{out / f'{name}.png'}: {size / 1000:.0f} KB")


def check_rest_api(url: str, run_id: str) -> None:
    """The run's figures and tables, as the server lists them to any client."""
    listed = set()
    for folder in ("figures", "tables"):
        answer = get_json(f"{url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={folder}")
        listed |= {f["path"] for f in answer.get("files", [])}
    missing = {f"figures/{name}.png" for name in FIGURES} - listed
    if missing or "tables/accuracy_by_split.json" not in listed:
        raise SystemExit(f"The server does not list {sorted(missing) or 'the tables'}.")
    print(f"REST API lists {len(listed)} figures and tables of run {run_id}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("overrides", nargs="*", help="denselab-train overrides of the run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        run_name, run_id, address = train(store, args.overrides or DEFAULT_RUN)
        save_figures(store, run_id, args.out)
        with mlflow_ui(store) as url:
            check_rest_api(url, run_id)
            screenshot_ui(url, address, run_name, args.out)


if __name__ == "__main__":
    main()
