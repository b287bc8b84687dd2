"""`cnnlab report`: the page says exactly what the files say, inlines every image, loads nothing from a network."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli.main import main
from conftest import write_easy_npz


class Page(HTMLParser):
    """The tables (caption, header, rows), images and links of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.links, self.scripts = [], [], [], 0
        self._table = self._row = self._cell = None
        self._in_caption = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = {"caption": "", "header": [], "rows": []}
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "script":
            self.scripts += 1
        for key in ("href", "src"):
            if tag != "img" and attrs.get(key):
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "table":
            self.tables.append(self._table)
            self._table = None
        elif tag == "caption":
            self._in_caption = False
        elif tag in ("td", "th"):
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr":
            if self._table is not None:
                if not self._table["header"]:
                    self._table["header"] = self._row
                else:
                    self._table["rows"].append(self._row)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._in_caption and self._table is not None:
            self._table["caption"] += data

    def table(self, caption_start: str) -> dict:
        found = [t for t in self.tables if t["caption"].startswith(caption_start)]
        assert found, f"no table '{caption_start}' in {[t['caption'] for t in self.tables]}"
        return found[0]


PCT, LOSS = 0.005 + 1e-9, 5e-5 + 1e-12  # half a unit of the last digit shown (2 decimals in %, 4 for losses)


def number(cell: str) -> float:
    return float(cell.replace("%", "").replace("pts", "").strip())


def mean_and_std(cell: str) -> tuple[float, float]:
    mean, _, std = cell.partition("±")
    return number(mean), number(std) if std else 0.0


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    """A finished experiment (2 seeds), ablation (2 steps x 2 seeds) and comparison, through the CLI."""
    root = tmp_path_factory.mktemp("studies")
    data = write_easy_npz(root / "npz", train_per_class=30)
    common = ["--data", str(data), "--epochs", "1", "--device", "cpu", "--seeds", "1", "2", "--no-progress"]
    assert main(["run", "basenet", *common, "--out", str(root / "run")]) == 0
    small = ["--set", "data.subset=48"]  # the wide steps cost 161 M multiply-adds an image
    assert main(["ablation", "basenet_pp", *common, *small, "--out", str(root / "ablation")]) == 0
    assert main(["compare", "basenet", "basenet_pp", *common, *small, "--out", str(root / "compare")]) == 0
    (experiment,) = (root / "run" / "basenet").iterdir()
    (ablation,) = (root / "ablation" / "basenet_pp-ablation").iterdir()
    (comparison,) = (root / "compare" / "compare").iterdir()
    return {"experiment": experiment, "ablation": ablation, "compare": comparison, "root": root}


def checked_page(folder: Path) -> tuple[Page, str]:
    """The folder's report.html, parsed, with every image decoded and nothing loaded from a network."""
    text = (folder / "report.html").read_text()
    page = Page(text)
    check_images(page)
    check_offline(page, text)
    return page, text


def check_images(page: Page) -> None:
    assert page.images
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()  # decodes the whole image, not just its header
        assert image.size[0] > 50 and image.size[1] > 50


def check_offline(page: Page, text: str) -> None:
    assert page.scripts == 0 and not [link for link in page.links if "://" in link]
    assert "http://" not in text.split("<body>")[1] and "https://" not in text.split("<body>")[1]


def test_experiment_report_numbers_equal_the_files(studies):
    folder = studies["experiment"]
    page, text = checked_page(folder)  # report.html written by `cnnlab run` itself
    summary = json.loads((folder / "summary.json").read_text())
    results = page.table("test split")
    assert results["header"][:3] == ["seed", "test loss", "test accuracy"]
    csv_rows = read_csv(folder / "results.csv")
    for row, run, line in zip(results["rows"], summary["runs"], csv_rows):
        assert int(row[0]) == run["seed"] == int(line["seed"])
        assert number(row[1]) == pytest.approx(float(line["test_loss"]), abs=LOSS)
        assert number(row[2]) == pytest.approx(100 * float(line["test_acc"]), abs=PCT)
    mean_row = results["rows"][2]
    assert mean_row[0] == "mean ± std"
    acc_mean, acc_std = mean_and_std(mean_row[2])
    assert acc_mean == pytest.approx(100 * summary["test_acc_mean"], abs=PCT)
    assert acc_std == pytest.approx(100 * summary["test_acc_std"], abs=PCT)
    # npz files are not the lab's data (the official CIFAR-100 split): the lab's figure is no reference here
    assert len(results["rows"]) == 3 and not any(row[0].startswith("lab") for row in results["rows"])
    assert "Lab figures" not in text
    per_class = page.table("per-class figures")
    for row, line in zip(per_class["rows"], read_csv(folder / "per_class.csv"), strict=True):
        assert row[0] == line["class"] and int(row[5]) == int(line["support"])
        for cell, key in zip(row[1:5], ("precision", "recall", "f1", "accuracy")):
            assert number(cell) == pytest.approx(100 * float(line[key]), abs=PCT)
    pairs = read_csv(folder / "most_confused.csv")
    if pairs:
        shown = page.table("most-confused pairs")["rows"]
        assert [[r[0], r[1], int(r[2])] for r in shown] == [[p["true"], p["predicted"], int(p["count"])]
                                                            for p in pairs[:len(shown)]]
    timings = page.table("timings")["rows"]
    for row, run in zip(timings, summary["runs"], strict=True):
        assert number(row[1]) == pytest.approx(run["wall_time_s"], abs=0.05)
        assert int(row[4]) == run["epochs_trained"]
    assert "Model: &quot;basenet&quot;" in text or 'Model: "basenet"' in text  # the model summary


def test_ablation_report_numbers_equal_the_files(studies):
    folder = studies["ablation"]
    page, text = checked_page(folder)
    assert len(page.images) == 2  # the step chart and the validation curves
    ablation = json.loads((folder / "ablation.json").read_text())
    table = page.table("test accuracy per step")
    assert "lab (own protocol)" in table["header"]  # 2 epochs on 120 images is not the lab's protocol
    assert len(table["rows"]) == len(ablation["steps"]) == 5
    for row, step in zip(table["rows"], ablation["steps"]):
        assert int(row[0]) == step["step"] and row[1] == step["label"]
        mean, std = mean_and_std(row[3])
        assert mean == pytest.approx(100 * float(np.mean(step["test_acc"])), abs=PCT)
        assert std == pytest.approx(100 * float(np.std(step["test_acc"], ddof=1)), abs=PCT)
        if step["vs_previous"]:
            assert number(row[6]) == pytest.approx(100 * step["vs_previous"]["gain"], abs=PCT)
            assert row[9] == "n/a (< 3 runs)"  # two seeds a step: gains, no verdict


def test_comparison_report_numbers_equal_the_files(studies):
    folder = studies["compare"]
    page, text = checked_page(folder)
    rows = json.loads((folder / "compare.json").read_text())["rows"]
    table = page.table("test accuracy of each variant")["rows"]
    ours = [r for r in table if not r[0].startswith("lab")]
    for row, source in zip(ours, rows, strict=True):
        assert row[0] == source["name"] and int(row[1]) == len(source["test_acc"])
        assert mean_and_std(row[2])[0] == pytest.approx(100 * float(np.mean(source["test_acc"])), abs=PCT)
        if source["kind"] == "network":  # balanced accuracy and macro-F1 of every run
            for column, key in ((3, "test_bal_acc"), (4, "test_macro_f1")):
                assert mean_and_std(row[column])[0] == pytest.approx(100 * float(np.mean(source[key])), abs=PCT)
        assert number(row[6]) == pytest.approx(float(np.mean(source["wall_time_s"])), abs=0.05)
        assert row[7] == "—"  # the lab's figure is not set beside a run on other data
    assert [r[0] for r in table if r[0].startswith("lab")] == []  # npz files are not the lab's data: no lab rows


def test_several_paths_side_by_side_and_markdown(studies, tmp_path, capsys):
    out = tmp_path / "both.html"
    paths = [studies["experiment"], studies["experiment"] / "seed-1", studies["ablation"], studies["compare"]]
    assert main(["report", *map(str, paths), "--out", str(out)]) == 0
    page = Page(out.read_text())
    overview = page.table("side by side")
    assert [r[1] for r in overview["rows"]] == ["experiment", "run", "ablation (last step: dropout)",
                                                "comparison (best: " + overview["rows"][3][1].split("best: ")[1]]
    seed1 = json.loads((studies["experiment"] / "seed-1" / "results.json").read_text())
    assert number(overview["rows"][1][2]) == pytest.approx(100 * seed1["test_acc"], abs=PCT)
    assert 'class="side-by-side"' in out.read_text()
    # at 1280 px the reports stack, each table whole (two columns only where two 48rem columns fit)
    assert '<body class="wide">' in out.read_text() and "minmax(min(100%, 48rem), 1fr)" in out.read_text()
    check_images(page)
    md = tmp_path / "exp.md"
    assert main(["report", str(studies["experiment"]), "--out", str(md)]) == 0
    text = md.read_text()
    figures = sorted((tmp_path / "exp_files").iterdir())
    assert {f.name for f in figures} >= {"confusion_matrix.png", "curves.png", "curves-2.png", "top_losses.png"}
    for figure in figures:
        assert f"](exp_files/{figure.name})" in text
        Image.open(figure).load()
    assert "| seed" in text and "mean ± std" in text


def test_report_refuses_what_it_did_not_write_and_unfinished_folders(studies, tmp_path, capsys):
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my own notes</p>")
    assert main(["report", str(studies["experiment"]), "--out", str(mine)]) == 2
    assert mine.read_text() == "<p>my own notes</p>"
    assert "is not a report cnnlab wrote" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(studies["experiment"], unfinished)
    (unfinished / "summary.json").unlink()
    assert main(["report", str(unfinished)]) == 2
    assert f"cnnlab resume {unfinished}" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a cnnlab folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a real browser

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class ConnectionRecorder:
    """A local proxy that only counts: every request the browser makes to a network comes here."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port, self.requests = self.server.getsockname()[1], []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            client.settimeout(2)
            try:
                self.requests.append(client.recv(1024).split(b"\r\n")[0].decode("latin-1"))
            except OSError:
                self.requests.append("?")
            client.close()

    def close(self):
        self.server.close()


# Chromium's own background services (component updates, network time, sign-in) call these hosts
# whatever page is open, even with every flag that claims to turn them off; an empty page makes the
# same requests (measured in the test). They are the browser's, not the page's.
BROWSER_SERVICES = {"update.googleapis.com", "accounts.google.com", "clients2.google.com", "redirector.gvt1.com"}


def request_host(line: str) -> str:
    """The host of a proxy request line: 'CONNECT host:443 HTTP/1.1' or 'GET http://host/path HTTP/1.1'."""
    target = line.split(" ")[1] if " " in line else line
    return target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]


def screenshot(page: Path, png: Path, proxy: ConnectionRecorder, width: int = 1280) -> None:
    browser = _chromium()
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
               f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
               f"--window-size={width},2400", f"--screenshot={png}", page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HOME": str(png.parent)})
    assert png.is_file(), result.stderr[-2000:]


def not_blank(png: Path) -> bool:
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    return pixels.std() > 10 and (pixels < 128).mean() > 0.005


requires_browser = pytest.mark.skipif(
    _chromium() is None and not os.environ.get("CI"),
    reason="no chromium here (apt-get install -y chromium); CI installs it and runs this test")


@requires_browser
def test_a_real_browser_renders_each_page_offline(studies, tmp_path):
    assert _chromium() is not None, "CI must have chromium: .ci/run installs it"
    proxy = ConnectionRecorder()
    try:
        empty = tmp_path / "empty.html"
        empty.write_text("<html><body><h1>nothing to load</h1></body></html>")
        screenshot(empty, tmp_path / "empty.png", proxy)
        browser_own = BROWSER_SERVICES | {request_host(r) for r in proxy.requests}
        # the recorder works: a page that does load something from a network is caught
        bait = tmp_path / "bait.html"
        bait.write_text('<html><body><h1>bait</h1><img src="http://example.invalid/x.png"></body></html>')
        screenshot(bait, tmp_path / "bait.png", proxy)
        assert "example.invalid" in {request_host(r) for r in proxy.requests} - browser_own, proxy.requests
        proxy.requests.clear()
        for kind in ("experiment", "ablation", "compare"):
            for width in (1280, 390):  # a desktop and a phone
                png = tmp_path / f"{kind}-{width}.png"
                screenshot(studies[kind] / "report.html", png, proxy, width=width)
                assert not_blank(png), f"{kind} at {width} px rendered blank"
        # a connection that closes before sending a request line (chromium's proxy preconnect) asked for nothing
        from_pages = [r for r in proxy.requests if r.strip() and request_host(r) not in browser_own]
        assert from_pages == [], f"the reports made network requests: {from_pages}"
    finally:
        proxy.close()


def test_gradcam_from_interpret_joins_the_report(studies):
    """Last in this file: it adds gradcam.png to the shared experiment."""
    folder = studies["experiment"]
    before = len(Page((folder / "report.html").read_text()).images)
    assert main(["interpret", str(folder / "seed-1"), "--gradcam", "2"]) == 0
    text = (folder / "report.html").read_text()
    assert "Grad-CAM" in text and len(Page(text).images) == before + 1
