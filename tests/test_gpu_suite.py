"""The GPU suite is known to work before a GPU is lent: its --smoke mode runs the same code on the CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import write_easy_npz

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def test_the_gpu_suite_smoke_mode_runs_every_section_on_the_cpu(birds_lab, tmp_path):
    npz = write_easy_npz(tmp_path / "npz")
    out = tmp_path / "suite.json"
    result = subprocess.run([sys.executable, str(SUITE), "--smoke", "--device", "cpu", "--cifar", str(npz),
                             "--birds", str(birds_lab), "--out", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    sections = json.loads(out.read_text())["sections"]
    assert set(sections) == {"basenet_pp", "ablation", "birds", "resnet50", "data_path", "cifar_recipe", "birds_recipe"}
    assert all(s["ok"] for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    assert 0 <= sections["basenet_pp"]["test_acc"] <= 1 and sections["basenet_pp"]["epochs"] == 1
    assert [s["name"] for s in sections["ablation"]["steps"]] == ["baseline", "augment", "wide", "batchnorm", "dropout"]
    assert [r["name"] for r in sections["birds"]["rows"]] == ["birdnet_v0", "birdnet_v4"]
    assert all(w["img_per_s"] > 0 for w in sections["resnet50"]["ways"].values())
    for key, variants in (("cifar_recipe", 2), ("birds_recipe", 2)):
        rows = sections[key]["rows"]
        assert len(rows) == variants and all(len(r["val_acc"]) == len(r["test_acc"]) == 1 for r in rows)
        chosen = max(rows, key=lambda r: r["val_acc"][0])  # picked on validation, never on test
        assert sections[key]["chosen_by_val"] == chosen["name"]
        assert sections[key]["chosen_test_mean"] == chosen["test_acc"][0]
    assert sections["ablation"]["seeds_together"] == "on" and sections["ablation"]["together_error"] is None
    assert "chosen by validation" in result.stdout
    assert sections["data_path"]["images"] > 0 and sections["data_path"]["workers_decode_resize_img_per_s"] > 0
