"""Remake the README's pictures from a real run, and check the run in a real browser.

1. Trains one run on the spot (default: the course's multinomial network on Debian's real
   Fashion-MNIST, 5 epochs) into a store of its own.
2. Saves four of its figures (confusion matrix, first-layer weights, typical examples,
   training curves), shrunk to under 150 KB each.
3. Starts `mlflow ui` on that store and, in headless Chromium (Debian's `chromium`, driven
   over its DevTools port) with a fresh profile, opens the address the run printed: its
   experiment must show the runs table (not MLflow 3's GenAI dashboard) and its Overview
   the result's first line; saves screenshots of the run's Overview, its metric charts, its
   artifacts and its first-layer weight card, each once the page shows what it should (the
   weight card's image must be non-blank where the card shows it). With --sweep, a sweep's
   jobs must be nested under its parent in the runs table.
4. Asks the server's REST API that the run's figures and tables are listed.

    make pictures                                  # writes docs/images/
    python docs/pictures.py --out /tmp/p --sweep seed=1,2 data=digits trainer.max_epochs=2

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

import numpy as np
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
RUN_LINKS = "[...document.querySelectorAll('a[href*=\"/runs/\"]')]"
# The +/- before a sweep parent's name in the runs table, which shows or hides its jobs.
EXPAND_JOBS = "button[data-component-id*='runnamecellrenderer']"
# The "weights" section of a run's Model metrics, and the card of its image series.
WEIGHTS_SECTION = (
    "[...document.querySelectorAll('[data-testid=experiment-view-compare-runs-section-header]')]"
    ".find(h => h.innerText.trim().startsWith('weights'))"
    "?.closest('.du-bois-light-collapse-item')"
)
WEIGHTS_IMAGE = f"[...({WEIGHTS_SECTION}?.querySelectorAll('img') ?? [])].find(i => i.complete)"


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


def denselab_train(store: Path, overrides: list[str]) -> str:
    """What one denselab-train command into ``store``'s experiment "pictures" printed."""
    command = [
        str(Path(sys.executable).parent / "denselab-train"),
        *overrides,
        f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
        "tracking.experiment_name=pictures",
    ]
    done = subprocess.run(command, cwd=store, check=True, capture_output=True, text=True)
    sys.stdout.write(done.stdout + done.stderr)
    return done.stdout + done.stderr


def train(store: Path, overrides: list[str]) -> tuple[str, str, str]:
    """(run name, run id, the run's address as it printed it) of one denselab-train run into
    ``store``."""
    printed = re.search(r"The run in the MLflow UI: (\S+)", denselab_train(store, overrides))
    if printed is None:
        raise SystemExit("The run did not print its address in the MLflow UI.")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("pictures").experiment_id])
    return run.info.run_name, run.info.run_id, printed.group(1)


def sweep(store: Path, overrides: list[str], swept: str) -> tuple[str, list[str]]:
    """(the parent's name, its jobs' names) of a sweep over ``swept`` (``seed=1,2``) with
    the run's other ``overrides``, into the same experiment."""
    said = denselab_train(store, ["-m", *overrides, swept, "callbacks=none"])
    if "The sweep in the MLflow UI: " not in said:
        raise SystemExit("The sweep did not print its parent's address in the MLflow UI.")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pictures").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    jobs = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parent.info.run_name, sorted(jobs)


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


def screenshot_ui(
    url: str, address: str, run_name: str, out: Path, nested: tuple[str, list[str]] | None
) -> None:
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
        check_weights_card(browser, page, view, out)
        if nested:
            check_jobs_nested(browser, f"{experiment}?{view}", *nested)


def check_jobs_nested(browser: "Browser", experiment: str, parent: str, jobs: list[str]) -> None:
    """The runs table shows a sweep's jobs under its parent: hidden until the parent's row is
    expanded, then right below it and indented, as MLflow shows child runs."""
    name_is = "a => a.innerText.trim() === {}".format
    browser.show(experiment, (), f"{RUN_LINKS}.some({name_is(json.dumps(parent))})")
    shown = browser.evaluate(f"{RUN_LINKS}.map(a => a.innerText.trim())")
    if set(jobs) & set(shown):
        raise SystemExit(f"The sweep's jobs are listed beside its parent, not under it: {shown}")
    parent_link = f"{RUN_LINKS}.find({name_is(json.dumps(parent))})"
    browser.evaluate(
        f"{parent_link}.closest('[role=row]').querySelector({json.dumps(EXPAND_JOBS)}).click()"
    )
    every_job = " && ".join(f"{RUN_LINKS}.some({name_is(json.dumps(job))})" for job in jobs)
    browser.wait(every_job, 30, "The sweep parent's row did not open onto its jobs")
    rows = browser.evaluate(
        f"{RUN_LINKS}.map(a => [a.innerText.trim(), a.getBoundingClientRect().top,"
        " a.getBoundingClientRect().left]).sort((p, q) => p[1] - q[1])"
    )
    names = [name for name, _, _ in rows]
    below = names[names.index(parent) + 1 : names.index(parent) + 1 + len(jobs)]
    indent = {name: left for name, _, left in rows}
    if sorted(below) != sorted(jobs) or not all(indent[j] > indent[parent] for j in jobs):
        raise SystemExit(f"The sweep's jobs are not nested under {parent!r}: {rows}")
    print(f"{experiment} nests the sweep's {len(jobs)} jobs under {parent!r}")


def check_weights_card(browser: "Browser", page: str, view: str, out: Path) -> None:
    """The first layer's weight series in the run's Model metrics: its card draws the image,
    and the part of it inside the card is not blank. MLflow 3.18 lists the run's parameters
    above an image series, which can push the image below the card's fold: then it is
    scrolled into the card's view, as a reader scrolls the card."""
    browser.show(f"{page}/model-metrics?{view}", (), WEIGHTS_SECTION)
    browser.evaluate(CLOSE_ASSISTANT)
    browser.evaluate(f"{WEIGHTS_SECTION}.scrollIntoView()")
    browser.wait(f"{WEIGHTS_IMAGE}?.naturalWidth > 0", 60, "The weights card drew no image")
    card = f"{WEIGHTS_IMAGE}.closest('.react-resizable')"
    visible = (
        f"(() => {{ const i = {WEIGHTS_IMAGE}.getBoundingClientRect(),"
        f" c = {card}.getBoundingClientRect();"
        " return [Math.max(i.left, c.left), Math.max(i.top, c.top, 0),"
        " Math.min(i.right, c.right), Math.min(i.bottom, c.bottom, window.innerHeight)]; })()"
    )
    left, top, right, bottom = browser.evaluate(visible)
    if bottom - top < 64:
        print(f"The weights image starts below the card's fold ({bottom - top:.0f} px shown)")
        browser.evaluate(f"{WEIGHTS_IMAGE}.scrollIntoView({{block: 'nearest'}})")
        time.sleep(0.5)
        left, top, right, bottom = browser.evaluate(visible)
    if bottom - top < 64 or right - left < 64:
        raise SystemExit(
            f"The weights card shows {right - left:.0f}x{bottom - top:.0f} px of its image."
        )
    shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    seen = shot.convert("L").crop((round(left), round(top), round(right), round(bottom)))
    seen = np.asarray(seen, float)
    # Blank is one flat grey; the tiles are dark and light strokes on white.
    if seen.std() < 20 or (np.abs(seen - np.median(seen)) > 40).mean() < 0.05:
        raise SystemExit(
            f"The weights card's image is blank where it shows (std {seen.std():.0f})."
        )
    box = browser.evaluate(
        f"(() => {{ const c = {card}.getBoundingClientRect();"
        " return [c.left, c.top, c.right, c.bottom]; })()"
    )
    save_small_png(
        _png(shot.crop(tuple(round(v) for v in box))), out / "ui_weights.png"
    )
    print(
        f"The weights card shows its image ({right - left:.0f}x{bottom - top:.0f} px,"
        f" std {seen.std():.0f})"
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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
    parser.add_argument(
        "--sweep",
        metavar="OVERRIDE",
        help="also sweep over OVERRIDE (e.g. seed=1,2) and check its jobs nest under its parent",
    )
    parser.add_argument("overrides", nargs="*", help="denselab-train overrides of the run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        run_name, run_id, address = train(store, args.overrides or DEFAULT_RUN)
        nested = sweep(store, args.overrides or DEFAULT_RUN, args.sweep) if args.sweep else None
        save_figures(store, run_id, args.out)
        with mlflow_ui(store) as url:
            check_rest_api(url, run_id)
            screenshot_ui(url, address, run_name, args.out, nested)


if __name__ == "__main__":
    main()
