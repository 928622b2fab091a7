"""LabellingMap in a real browser: Debian's headless Chromium, driven by Playwright.

A page on 127.0.0.1 mounts the widget's ES module exactly as anywidget ships it (the `_esm` and
`_css` of `widget.get_state()`), on a small stand-in for the Jupyter widget model: the page's
`save_changes` posts the changed state to this test, which hands it to the widget through
ipywidgets' own comm handler (`{"method": "update", ...}`, as a kernel would); what the widget
sends back over its comm is delivered to the page the same way. The test lassos and
box-selects points with the mouse, labels them with the widget's text box, and checks the
Python side got exactly the points inside the drawn shapes.

Needs the `dev` extra (anywidget, playwright) and /usr/bin/chromium (`apt-get install
chromium`; `.ci/run` does it). No browser download: Playwright launches that executable.
Without a browser the test skips and says why; with EMBETTER_BROWSER_TESTS=required (set by
`.ci/run`) it fails instead. Set EMBETTER_UPDATE_SCREENSHOT=1 to refresh
docs/img/labelling-widget.png from the run.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "img" / "labelling-widget.png"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><style>%(css)s</style></head>
<body style="margin:0; padding:10px; width:940px; background:#fff">
<div id="widget"></div>
<script type="module">
import widget from "/widget.js";
const state = await (await fetch("/state")).json();
const listeners = {};
let pending = {};
window.inflight = 0;
const fire = (key) => (listeners["change:" + key] || []).forEach((fn) => fn());
const model = {  // the part of the Jupyter widget model an anywidget uses
  get: (key) => state[key],
  set: (key, value) => { state[key] = value; pending[key] = value; fire(key); },
  save_changes: () => {
    const msg = { method: "update", state: pending, buffer_paths: [] };
    pending = {};
    window.inflight += 1;
    fetch("/comm", { method: "POST", body: JSON.stringify(msg) })
      .finally(() => (window.inflight -= 1));
  },
  on: (event, fn) => (listeners[event] ||= []).push(fn),
  off: (event, fn) => (listeners[event] = (listeners[event] || []).filter((f) => f !== fn)),
  send: () => {},
};
window.receive = (msg) => {  // a comm message from the Python side
  if (msg.method !== "update") return;
  for (const [key, value] of Object.entries(msg.state)) { state[key] = value; fire(key); }
};
widget.render({ model, el: document.getElementById("widget") });
window.mounted = true;
</script></body></html>
"""


def _chromium() -> str | None:
    found = os.environ.get("EMBETTER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).is_file() else None


def _no_browser(reason: str):
    if os.environ.get("EMBETTER_BROWSER_TESTS") == "required":
        pytest.fail(f"browser test required (EMBETTER_BROWSER_TESTS=required) but {reason}")
    pytest.skip(f"browser test: {reason}")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("playwright is not installed (it is in the dev extra)")
    executable = _chromium()
    if executable is None:
        _no_browser("no Chromium found ($EMBETTER_CHROMIUM, `chromium` on PATH, "
                    "/usr/bin/chromium); apt-get install chromium, or point EMBETTER_CHROMIUM "
                    "at a Chromium executable")
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(
                executable_path=executable, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-dev-shm-usage"],
            )
        except Exception as e:  # e.g. missing shared libraries, no /dev/shm
            _no_browser(f"{executable} did not start: {str(e).splitlines()[0]}")
        yield chromium
        chromium.close()


class PageComm:
    """The widget's comm, with the page at the other end (what a kernel's comm would be)."""

    comm_id = "page"

    def __init__(self):
        self.sent = []
        self.handler = None

    def on_msg(self, handler):
        self.handler = handler

    def send(self, data=None, metadata=None, buffers=None):
        self.sent.append(data)

    def close(self, *args, **kwargs):
        pass

    def deliver(self, data):  # a message from the page, as the kernel hands it to the widget
        self.handler({"content": {"data": data}, "buffers": []})


def serve(widget):
    """Serve the page for `widget` on 127.0.0.1; returns (url, queue of posted messages, stop)."""
    state = widget.get_state()
    esm, css = state.pop("_esm"), state.pop("_css")
    posted = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body, kind = {
                "/": (PAGE % {"css": css}, "text/html"),
                "/widget.js": (esm, "text/javascript"),
                "/state": (json.dumps(state), "application/json"),
            }.get(self.path, (None, None))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind + "; charset=utf-8")
            self.end_headers()
            self.wfile.write(body.encode())

        def do_POST(self):
            posted.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop():
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_address[1]}/", posted, stop


def support_inbox_map(real_embeddings=False):
    """The bundled support inbox, a classifier from two labels per class, its suggestions.

    The widget is under test here, not an encoder: by default the map is TF-IDF + SVD + PCA
    (a second); for the docs' screenshot (EMBETTER_UPDATE_SCREENSHOT=1) it is the bundled
    all-MiniLM-L6-v2 and t-SNE, as a user would draw it (a minute on two CPU cores)."""
    import pandas as pd
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from embetter.datasets import load_support_inbox
    from embetter.label import LabellingMap, suggest

    texts, truth = load_support_inbox()
    if real_embeddings:
        from embetter.text import SentenceEncoder

        X, method = SentenceEncoder(device="cpu").transform(texts), "tsne"
    else:
        X = make_pipeline(TfidfVectorizer(), TruncatedSVD(40, random_state=0)).fit_transform(texts)
        method = "pca"
    seed = np.concatenate([np.flatnonzero(truth == c)[:2] for c in np.unique(truth)])
    clf = LogisticRegression().fit(X[seed], truth[seed])
    series = pd.Series(texts, index=[f"msg-{i}" for i in range(len(texts))])
    widget = LabellingMap(X, texts=series, predictions=clf.predict(X),
                          suggested=suggest(clf, X, k=8, random_state=0, labelled=seed),
                          method=method, height=440)
    return widget, series, truth


def majority(labels) -> str:
    values, counts = np.unique(labels, return_counts=True)
    return str(values[np.argmax(counts)])


def pixels(widget, box):
    """Where the page draws each point: the linear map of the data's extent onto the canvas
    minus its padding (PAD in _widget.js), y upwards."""
    pad = 14
    x, y = np.asarray(widget.x), np.asarray(widget.y)
    px = box["x"] + pad + (x - x.min()) * (box["width"] - 2 * pad) / (x.max() - x.min())
    py = box["y"] + box["height"] - pad - (y - y.min()) * (box["height"] - 2 * pad) / (
        y.max() - y.min())
    return np.column_stack([px, py])


def inside(points, polygon, margin=1.5):
    """Positions of the points inside `polygon`, or None when one lies within `margin` pixels
    of its edge (where rounding could go either way)."""
    from matplotlib.path import Path as Shape

    shape = Shape(polygon)
    strictly = shape.contains_points(points, radius=-margin)  # radius sign depends on winding
    loosely = shape.contains_points(points, radius=margin)
    if (strictly != loosely).any():
        return None
    return np.flatnonzero(strictly)


def clean_lasso(points):
    """A 24-gon lasso around one of the densest spots with >= 3 points inside and none on
    its edge; returns (polygon, positions inside)."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ring = np.column_stack([np.cos(angles), np.sin(angles)])
    crowd = [(np.hypot(*(points - p).T) < 30).sum() for p in points]
    for centre in points[np.argsort(crowd)[::-1][:50]]:
        for radius in np.arange(20.0, 70.0, 0.5):
            expected = inside(points, centre + radius * ring)
            if expected is not None and len(expected) >= 3:
                return centre + radius * ring, expected
    raise AssertionError("no lasso without a point on its edge")


def drag(page, path, shift=False, release=True):
    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(*path[0])
    page.mouse.down()
    for point in path[1:]:
        page.mouse.move(*point, steps=2)
    if release:
        page.mouse.up()
        if shift:
            page.keyboard.up("Shift")


def receive(comm, posted, page):
    """Hand every message the page posted to the widget, as its kernel would."""
    page.wait_for_function("window.inflight === 0")
    got = 0
    while not posted.empty():
        comm.deliver(posted.get())
        got += 1
    return got


def test_lasso_box_and_label_reach_python(browser, tmp_path):
    widget, series, truth = support_inbox_map(bool(os.environ.get("EMBETTER_UPDATE_SCREENSHOT")))
    comm = PageComm()
    widget.comm = comm  # what the widget sends now goes to the page (below), not to a kernel
    url, posted, stop = serve(widget)
    page = browser.new_page(viewport={"width": 960, "height": 600})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url)
        page.wait_for_function("window.mounted === true")
        box = page.locator("canvas.em-canvas").bounding_box()
        points = pixels(widget, box)

        # lasso: a 24-gon around a dense spot, placed so that no point lies on its edge
        lasso, expected = clean_lasso(points)
        drag(page, [tuple(p) for p in lasso] + [tuple(lasso[0])])
        assert receive(comm, posted, page) >= 1
        assert widget.selected == expected.tolist()

        # the person reads the selection and names it: here, the majority of its true topics
        first = majority(truth[expected])
        page.fill("input.em-label-input", first)
        page.click("button.em-label-button")
        receive(comm, posted, page)
        labels = widget.labels
        assert labels.index.equals(series.index)
        assert (labels.iloc[expected] == first).all()
        assert labels.notna().sum() == len(expected)

        # box: a new selection replaces the old one; Enter in the text box labels it
        page.click("button.em-box")
        x0, y0 = box["x"] + 20, box["y"] + 20
        for size in np.arange(60.0, 300.0, 0.7):
            rect = np.array([[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size]])
            in_box = inside(points, rect)
            if in_box is not None and len(in_box) >= 3 and not np.isin(in_box, expected).any():
                break
        drag(page, [(x0, y0), (x0 + size / 2, y0 + size / 3), (x0 + size, y0 + size)])
        receive(comm, posted, page)
        assert widget.selected == in_box.tolist()
        second = majority(truth[in_box])
        page.fill("input.em-label-input", second)
        page.press("input.em-label-input", "Enter")
        receive(comm, posted, page)
        labels = widget.labels
        assert (labels.iloc[in_box] == second).all() and (labels.iloc[expected] == first).all()
        assert labels.notna().sum() == len(expected) + len(in_box)

        # hovering a point shows its text
        alone = np.argmax([np.sort(np.hypot(*(points - p).T))[1] for p in points])
        page.mouse.move(*points[alone])
        assert page.inner_text(".em-tip").startswith(series.iloc[alone])

        # "select suggested" selects the suggestions
        page.click("button.em-suggest-button")
        receive(comm, posted, page)
        assert widget.selected == sorted(widget.suggested)

        # Python to the page: labels set in Python reach the drawing (a kernel's comm message)
        comm.sent.clear()
        for i in widget.suggested[:3]:
            widget.assign(truth[i], [i])
        assert comm.sent and all(  # one per change (none where a point had that label already)
            m["method"] == "update" and m["state"].keys() == {"assigned"} for m in comm.sent)
        page.evaluate("msgs => msgs.forEach(window.receive)", comm.sent)
        counts = widget.labels.value_counts()
        legend = page.inner_text(".em-legend")
        assert all(f"{name} ({count})" in legend for name, count in counts.items())
        assert f"{counts.sum()} of {len(series)} labelled" in page.inner_text(".em-status")

        # lasso with shift held adds to the selection; the picture is taken mid-drag
        page.click("button.em-lasso")
        drag(page, [tuple(p) for p in lasso], shift=True, release=False)
        shot = tmp_path / "labelling-widget.png"
        page.locator(".em-map").screenshot(path=str(shot))
        page.mouse.move(*lasso[0], steps=2)
        page.mouse.up()
        page.keyboard.up("Shift")
        receive(comm, posted, page)
        assert widget.selected == sorted(set(widget.suggested) | set(expected))
        assert errors == []

        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 200_000
        if os.environ.get("EMBETTER_UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, SCREENSHOT)
    finally:
        page.close()
        stop()
