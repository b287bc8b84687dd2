"""catalogue.py is what `cnnlab list` prints without torch: it must name exactly what the registries build."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cnnlab.catalogue import BACKBONES, MODEL_DESCRIPTIONS


def test_models_in_the_catalogue_are_the_registered_ones():
    from cnnlab.models import get_model_entry, list_models

    assert sorted(MODEL_DESCRIPTIONS) == list_models()
    for name, description in MODEL_DESCRIPTIONS.items():
        assert get_model_entry(name).description == description


def test_backbones_in_the_catalogue_match_the_registry():
    from cnnlab.models import get_backbone, list_backbones

    from cnnlab.models.trunks import probe_stages

    assert sorted(BACKBONES) == list_backbones()
    for name, facts in BACKBONES.items():
        entry = get_backbone(name)
        stages = [(s.name, s.reduction) for s in entry.trunk.stages(None)]
        assert (tuple(entry.weights), entry.default_weights, tuple(stages)) == \
               (facts.weights, facts.default_weights, facts.stages)
        # the reductions written down are the ones a forward measures (they name stride16, 14x14, ...)
        measured, _ = probe_stages(entry.build(), list(facts.stage_names), 224, lambda m, x: m(x))
        assert [(s.name, s.reduction) for s in measured] == stages


def test_a_model_registered_elsewhere_must_describe_itself():
    from cnnlab.models import register_model

    with pytest.raises(ValueError, match="description"):
        register_model("not_in_the_catalogue", input_size=(3, 32, 32))


@pytest.mark.parametrize("args", [["--help"], ["list"], ["run", "--help"]])
def test_help_and_list_never_import_torch(args):
    code = ("import sys, contextlib, io\nfrom cnnlab.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main({args!r})\n    except SystemExit:\n        pass\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'sklearn', 'scipy') if m in sys.modules)\n"
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("env, expected", [({}, "1000"), ({"OMP_WAIT_POLICY": "ACTIVE"}, None),
                                           ({"GOMP_SPINCOUNT": "5"}, "5")])
def test_openmp_threads_spin_briefly_unless_the_user_chose(env, expected):
    import os

    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    # the command line sets it for itself (before torch loads); `import cnnlab` alone sets nothing
    code = ("import os, contextlib, io, cnnlab; unset = os.environ.get('GOMP_SPINCOUNT')\n"
            "from cnnlab.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])\n"
            "print(os.environ.get('GOMP_SPINCOUNT'), unset)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env},
                            timeout=60)
    assert result.stdout.strip() == f"{expected} {env.get('GOMP_SPINCOUNT')}", result.stderr


def test_the_pretrained_models_of_the_catalogue_are_the_registrys():
    from cnnlab.catalogue import DEFAULT_BACKBONE, PRETRAINED_MODELS
    from cnnlab.config import ModelSpec
    from cnnlab.models import get_model_entry, list_models

    pretrained = tuple(name for name in list_models() if get_model_entry(name).preprocessing is not None)
    assert pretrained == PRETRAINED_MODELS
    spec = ModelSpec.of("birdnet_v4", {})
    assert (spec.backbone, spec.weights, spec.shape_only()) == (DEFAULT_BACKBONE, "default", {"weights": "none"})
    assert ModelSpec.of("basenet", {"dropout": 0.3}).shape_only() == {"dropout": 0.3}
    assert ModelSpec.of("basenet", {}).backbone is None
