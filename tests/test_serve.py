"""`cnnlab serve` as a real uvicorn process on 127.0.0.1: the API's contract, bad uploads, load, the page."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import headless_browser, write_easy_npz

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A BaseNet trained for one epoch on an easy task, served by `cnnlab serve` on an ephemeral port."""
    from cnnlab.config import load_experiment
    from cnnlab.studies import run_experiment

    root = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        data = write_easy_npz(root / "npz")
        cfg = load_experiment("basenet", overrides={"data.path": str(data), "train.epochs": 2, "seeds": [1],
                                                    "device": "cpu", "out": str(root / "runs")})
        folder = run_experiment(cfg, progress=False, log=lambda s: None)
    port = _free_port()
    env = {**os.environ, "CNNLAB_CACHE": str(root / "cache"), "CNNLAB_ENGINE": "torch"}
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(folder), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
        if process.poll() is not None:
            raise AssertionError(f"cnnlab serve exited: {process.stdout.read()}")
    else:
        process.kill()
        raise AssertionError("cnnlab serve did not answer /healthz within 120 s")
    images = np.load(data / "test.npz")["images"]
    yield {"url": url, "folder": folder, "images": images, "root": root, "process": process}
    process.terminate()
    process.wait(timeout=30)


def _post(url: str, files: list[tuple[str, tuple[str, bytes, str]]], **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files=files, params=params, timeout=60)


def test_predict_answers_the_contract_with_cnnlab_predicts_probabilities(served):
    from cnnlab.inference import load_trained
    from cnnlab.inference.predict import predict

    url, images = served["url"], served["images"][:4]
    paths = []
    for i, image in enumerate(images):
        paths.append(served["root"] / f"photo-{i}.png")
        paths[-1].write_bytes(_png(image))
    response = _post(url, [("file", (p.name, p.read_bytes(), "image/png")) for p in paths], top_k=4)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "predictions"} and body["model"] == "basenet"
    assert [p["file"] for p in body["predictions"]] == [p.name for p in paths]
    trained = load_trained(served["folder"])
    expected, _ = predict([trained], paths, workers=0, progress=False)
    for served_one, local in zip(body["predictions"], expected):
        assert len(served_one["top_k"]) == 4
        assert set(served_one["top_k"][0]) == {"label", "prob"}
        for item in served_one["top_k"]:
            index = trained.class_names.index(item["label"])
            assert abs(item["prob"] - float(local.probabilities[index])) < 1e-5
    model = httpx.get(f"{url}/v1/model").json()
    assert model["classes"] == trained.class_names and model["metrics"]["test_acc"] is not None
    assert httpx.get(f"{url}/docs").status_code == 200 and "openapi" in httpx.get(f"{url}/openapi.json").text


def test_every_bad_upload_is_a_4xx_naming_it_and_the_server_keeps_serving(served, tmp_path):
    url, good = served["url"], _png(served["images"][0])
    truncated = _png(served["images"][1])[:60]
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # a few KB declaring 400 M pixels
    cases = [
        ([("file", ("notes.txt", b"hello, not an image", "text/plain"))], 400, "notes.txt: cannot decode image"),
        ([("file", ("cut.png", truncated, "image/png"))], 400, "cut.png: cannot decode image"),
        ([("file", ("empty.png", b"", "image/png"))], 400, "empty.png: empty file"),
        ([("file", ("big.bin", os.urandom(10 * 1024 * 1024 + 10), "image/png"))], 413, "more than 10,485,760 bytes"),
        ([("file", ("bomb.png", bomb.getvalue(), "image/png"))], 413, "400,000,000 pixels is more than the 40,000,000"),
        ([("file", (f"{i}.png", good, "image/png")) for i in range(17)], 413, "17 files: at most 16"),
        ([("photo", ("a.png", good, "image/png"))], 422, "multipart field 'file'"),
        ([("file", ('<img src=x onerror=alert(1)>"\'.png', b"junk", "image/png"))], 400, "cannot decode image"),
    ]
    for files, status, message in cases:
        response = _post(url, files)
        assert response.status_code == status, (message, response.text)
        assert message in response.json()["error"]
        ok = _post(url, [("file", ("good.png", good, "image/png"))])
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
    assert _post(url, [("file", ("good.png", good, "image/png"))], top_k=0).status_code == 422
    assert httpx.get(f"{url}/v1/nothing").status_code == 404
    assert served["process"].poll() is None


def test_32_concurrent_clients_are_answered_and_batched(served):
    url = served["url"]
    payloads = [_png(image) for image in served["images"][:8]]

    def client(number: int) -> list[int]:
        codes = []
        with httpx.Client(timeout=120) as session:
            for request in range(10):
                image = payloads[(number + request) % len(payloads)]
                response = session.post(f"{url}/v1/predict", files=[("file", (f"{number}-{request}.png", image,
                                                                               "image/png"))])
                codes.append(response.status_code)
                assert response.json()["predictions"][0]["file"] == f"{number}-{request}.png"
        return codes

    before = httpx.get(f"{url}/healthz").json()["batches"]
    with ThreadPoolExecutor(32) as pool:
        codes = [c for result in pool.map(client, range(32)) for c in result]
    assert codes == [200] * 320
    batches = httpx.get(f"{url}/healthz").json()["batches"] - before
    assert batches < 320  # requests that arrived together shared a forward


def test_gradcam_overlay_and_the_page(served):
    url = served["url"]
    response = httpx.post(f"{url}/v1/gradcam", files=[("file", ("a.png", _png(served["images"][0]), "image/png"))])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (32, 32)
    page = httpx.get(url).text
    assert "<title>basenet · cnnlab</title>" in page and "http" not in page.split("<script>")[1].split("fetch(")[0]


def test_the_page_in_a_real_browser_shows_the_top_5_and_asks_nothing_of_the_internet(served, tmp_path):
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "bird <img src=x onerror=alert(1)>.png"
    photo.write_bytes(_png(np.kron(served["images"][0], np.ones((4, 4, 1), dtype=np.uint8))))
    browser = headless_browser(tmp_path / "profile", window="390,844")  # a phone's width
    try:
        browser.get(served["url"] + "/")
        WebDriverWait(browser, 30).until(lambda b: "classes" in b.find_element(By.ID, "card").text)
        browser.find_element(By.ID, "files").send_keys(str(photo))
        WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".result .bar")) == 4)
        rows = browser.find_elements(By.CSS_SELECTOR, ".result .bar")
        assert all("%" in row.text for row in rows)  # 4 classes: the top-5 is all of them, each with a bar
        assert photo.name in browser.find_element(By.CSS_SELECTOR, ".result strong").text  # shown as text
        assert browser.execute_script("return document.querySelectorAll('.result img').length") == 1  # not markup
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
        assert np.asarray(shot).std() > 5  # not a blank page
        urls = browser.execute_script("return performance.getEntries().filter(e => e.entryType === 'navigation' "
                                      "|| e.entryType === 'resource').map(e => e.name)")
        assert urls and all(u.startswith(served["url"]) or u.startswith("blob:" + served["url"]) for u in urls), urls
    finally:
        browser.quit()


def test_serve_answers_as_http_clients_expect(served):
    """HEAD where GET works; a 405 says what is allowed; an unknown query parameter is a 422 naming it; an
    over-long file name is named in the error."""
    url, image = served["url"], _png(served["images"][0])
    for path in ("/", "/healthz", "/v1/model"):
        head = httpx.head(url + path, timeout=30)
        assert head.status_code == 200 and head.content == b"", path
    refused = httpx.get(f"{url}/v1/predict", timeout=30)
    assert refused.status_code == 405 and "POST" in refused.headers["allow"]
    typo = httpx.post(f"{url}/v1/predict?topk=3", files={"file": ("a.png", image, "image/png")}, timeout=30)
    assert typo.status_code == 422
    assert typo.json()["error"] == "unknown query parameter 'topk'; /v1/predict takes top_k, coverage, reject_rate"
    assert httpx.get(f"{url}/healthz?verbose=1", timeout=30).status_code == 422
    long_name = "x" * 300 + ".png"
    named = httpx.post(f"{url}/v1/predict", files={"file": (long_name, image, "image/png")}, timeout=30)
    assert named.status_code == 400 and "a file name of 304 characters; at most 255" in named.json()["error"]
    assert named.json()["error"].startswith("x" * 60)


def test_a_port_in_use_is_one_line_before_anything_says_serving(served):
    port = int(served["url"].rsplit(":", 1)[1])
    done = subprocess.run([sys.executable, "-m", "cnnlab", "serve", str(served["folder"]), "--port", str(port)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CNNLAB_ENGINE": "torch", "CNNLAB_CACHE": str(served["root"] / "cache")})
    assert done.returncode == 2 and "serving" not in done.stdout
    assert done.stderr.strip().startswith(f"cnnlab: error: --port {port}: cannot listen on 127.0.0.1:{port}")
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_takes_a_seed_of_an_experiment_folder(served, tmp_path):
    from cnnlab.errors import RunError
    from cnnlab.inference.serve import create_app

    app = create_app(served["folder"], engine="torch", seed=1)
    assert app.title.startswith("cnnlab: basenet")
    with pytest.raises(RunError, match="no finished seed 4; found seed-1"):
        create_app(served["folder"], engine="torch", seed=4)
