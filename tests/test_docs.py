"""The documentation site: it builds offline with `mkdocs build --strict`, a broken link fails the build, the
generated references cover the whole parser and configuration, each benchmark page shows its JSON's figures,
and a real browser renders its pages with working navigation and no request leaving the machine."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_gen"))

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings")

import hooks  # noqa: E402  (docs/_gen/hooks.py: the generated pages)


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=600, cwd=config.parent,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_site_builds_strict_with_every_section(site):
    for page in ("index.html", "getting-started/install.html", "tutorials/own-photos.html", "how-to/trust.html",
                 "concepts/honest-numbers.html", "reference/cli.html", "reference/config.html",
                 "reference/python-api.html", "reference/run-folder.html", "benchmarks/index.html",
                 "benchmarks/trust_birds.html", "ARCHITECTURE.html"):
        assert (site / page).is_file(), page
    api = (site / "reference" / "python-api.html").read_text(encoding="utf-8")
    assert "prediction_sets" in api and "lr_find" in api  # mkdocstrings read the docstrings
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in home and "fonts.gstatic.com" not in home  # theme.font: false


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")  # the figures the pages quote
    (docs / "how-to" / "callback.md").write_text((docs / "how-to" / "callback.md").read_text()
                                                  + "\nSee [the missing page](no-such-page.md).\n")
    config = (ROOT / "mkdocs.yml").read_text().replace("paths: [src]", f"paths: [{ROOT / 'src'}]")
    (tmp_path / "mkdocs.yml").write_text(config)
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr


def test_the_cli_reference_lists_every_command_and_option():
    page = hooks.cli_reference()
    sections = {s.split("\n", 1)[0].strip(): s for s in page.split("\n## ")[1:]}
    commands = hooks.parser_commands()
    assert set(sections) == set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if action.dest == "help":  # every command's -h/--help: said once on the page
                continue
            for option in action.option_strings:
                assert f"`{option}`" in sections[name], (name, option)
            if not action.option_strings:
                assert f"`{action.metavar or action.dest}`" in sections[name], (name, action.dest)


def test_the_config_reference_lists_every_key():
    from cnnlab.config import ExperimentConfig, flat_config

    page = hooks.config_reference()
    keys = {k["key"] for k in hooks.config_keys()}
    for key in flat_config(ExperimentConfig()):
        top = key.split(".")
        # list-valued keys (train.phases) are documented as the list, not as its items
        assert key in keys or ".".join(top[:2]) in keys or top[0] in keys, key
        assert f"`{key}`" in page or f"`{'.'.join(top[:2])}`" in page or f"`{top[0]}`" in page, key
    for key in ("train.calibration", "data.leak_check", "train.optimizer.lr", "data.calibration_fraction"):
        assert f"`{key}`" in page, key


def _shown_numbers(value, limit: int) -> list:
    """The JSON's numbers a page shows: every one, but only the first `limit` rows of a list of rows."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in _shown_numbers(v, limit)]
    if isinstance(value, list):
        rows = value[:limit] if value and all(isinstance(r, dict) for r in value) else value
        return [n for v in rows for n in _shown_numbers(v, limit)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return []


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")), ids=lambda p: p.stem)
def test_each_benchmark_page_shows_its_json(path):
    page = hooks.benchmark_page(path)
    data = json.loads(path.read_text())
    numbers = _shown_numbers(data, hooks.MAX_ROWS)
    missing = [n for n in numbers if hooks.format_number(n) not in page]
    assert not missing, missing[:10]
    assert f"benchmarks/results/{path.name}" in page


def test_a_figure_quoted_in_prose_is_the_figure_in_its_json(site):
    keras = json.loads((ROOT / "benchmarks" / "results" / "cpu_vs_keras.json").read_text())["cases"]["basenet"]
    assert hooks.quote_figures("{{ figure cpu_vs_keras cases.basenet.speedup x2 }}") == f"{keras['speedup']:.2f}×"
    accuracies = keras["cnnlab"]["test_acc"]
    assert hooks.quote_figures("{{ figure cpu_vs_keras cases.basenet.cnnlab.test_acc mean_pct }}") == \
        f"{100 * sum(accuracies) / len(accuracies):.2f} %"
    for wrong, says in (("{{ figure cpu_vs_keras cases.nothing.speedup x2 }}", "has no 'nothing'"),
                        ("{{ figure no_such_file a f2 }}", "no benchmarks/results/no_such_file.json"),
                        ("{{ figure cpu_vs_keras cases.basenet.speedup %.9f }}", "unknown format")):
        with pytest.raises(ValueError, match=says):
            hooks.quote_figures(wrong)
    # the pages that quote figures were built with them in place: none is left unreplaced
    quoting = [p for p in (ROOT / "docs").rglob("*.md") if hooks.FIGURE.search(p.read_text(encoding="utf-8"))]
    assert any(p.name == "lab-results.md" for p in quoting)
    for page in quoting:
        built = (site / page.relative_to(ROOT / "docs").with_suffix(".html")).read_text(encoding="utf-8")
        assert "{{ figure" not in built, page
    built = (site / "concepts" / "lab-results.html").read_text(encoding="utf-8")
    assert f"{keras['speedup']:.2f}×" in built


def test_a_real_browser_renders_the_site_and_navigates_offline(site, tmp_path):
    import io

    pytest.importorskip("selenium.webdriver")
    from PIL import Image
    from selenium.webdriver.common.by import By

    from conftest import headless_browser

    browser = headless_browser(tmp_path / "profile", window="1280,900")
    try:
        seen = []
        for start, link_text in (("index.html", "your first run"), ("tutorials/own-photos.html", None),
                                 ("reference/cli.html", None)):
            browser.get((site / start).as_uri())
            shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"), dtype=np.float32)
            assert shot.std() > 10 and (shot < 128).mean() > 0.005, start  # not a blank page
            assert browser.find_element(By.TAG_NAME, "h1").text, start
            seen += browser.execute_script("return performance.getEntries().filter(e => e.entryType === "
                                           "'navigation' || e.entryType === 'resource').map(e => e.name)")
            if link_text:  # in-site navigation: a link on the home page leads to its page
                browser.find_element(By.PARTIAL_LINK_TEXT, link_text).click()
                assert browser.current_url.endswith("getting-started/first-run.html")
                assert "first run" in browser.find_element(By.TAG_NAME, "h1").text.lower()
        assert seen and all(url.startswith("file://") or url.startswith("data:") for url in seen), \
            [u for u in seen if not u.startswith("file://")]
    finally:
        browser.quit()


def _python_blocks(page: Path) -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def test_the_callback_how_to_runs_as_written(npz_data, tmp_path, monkeypatch):
    """docs/how-to/callback.md's two blocks, run: its data path points at generated data, 2 epochs instead of 20,
    and a target the easy task reaches, so the callback's CancelFit really ends the fit."""
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks(ROOT / "docs" / "how-to" / "callback.md")
    assert len(blocks) == 2
    code = "\n".join(blocks).replace('"~/datasets/cifar100"', repr(str(npz_data))).replace("epochs=20", "epochs=3")
    code = code.replace("StopAtAccuracy(0.4)", "StopAtAccuracy(0.0)")  # any accuracy stops it after epoch 1
    logged: list[str] = []
    namespace: dict = {"logged": logged}
    exec(code.replace("learner.fit()", "learner.fit(progress=False, log=logged.append)"), namespace)  # noqa: S102
    assert any("reached: stopping" in line for line in logged)
    assert namespace["result"].runs[0]["epochs_trained"] == 1
