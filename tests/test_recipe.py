"""Beyond the lab: whole-pixel crops, cutout, flip TTA and the cifar_recipe preset on generated data."""
from __future__ import annotations

import json

import pytest
import torch

from cnnlab.config import AugmentConfig, load_experiment
from cnnlab.data.images import ImageSet
from cnnlab.data.preprocess import augment, cutout, random_crop
from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.studies import run_experiment
from cnnlab.inference.interpret import interpret_run
from cnnlab.inference.trained import load_trained, run_data
from cnnlab.training.loop import _shifted, evaluate, predict_logits


def _numbered(n: int = 8, size: int = 16) -> torch.Tensor:
    """Images whose every pixel is distinct, so a crop's origin can be read off its values."""
    return torch.arange(n * size * size, dtype=torch.float32).view(n, 1, size, size)


def test_random_crop_is_a_whole_pixel_translation_within_the_padding():
    x = _numbered()
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    inner = out[:, :, 2:-2, 2:-2]  # away from the reflected border every pixel is one of the image's own
    for k in range(len(x)):
        where = (x[k, 0] == inner[k, 0, 0, 0]).nonzero()
        (dy, dx) = where[0].tolist()
        dy, dx = dy - 2, dx - 2  # the window's offset in the original image
        assert -2 <= dy <= 2 and -2 <= dx <= 2
        assert torch.equal(inner[k, 0], x[k, 0, 2 + dy:14 + dy, 2 + dx:14 + dx])
    offsets = {tuple((x[k, 0] == out[k, 0, 2, 2]).nonzero()[0].tolist()) for k in range(len(x))}
    assert len(offsets) > 1  # images get different crops
    assert torch.equal(out, random_crop(x, 2, torch.Generator().manual_seed(0)))  # seeded: repeatable


def test_crop_padding_larger_than_the_image_is_refused_by_name():
    with pytest.raises(ConfigError, match="preprocess.augment.crop"):
        random_crop(_numbered(size=8), 8, torch.Generator())


def test_crop_too_large_for_the_data_fails_before_a_run_folder_exists(npz_data, tmp_path):
    cfg = load_experiment("cifar_recipe", overrides={"data.path": str(npz_data), "out": str(tmp_path / "runs"),
                                                     "preprocess.augment.crop": 40, "seeds": [1]})
    with pytest.raises(ConfigError, match=r"preprocess.augment.crop: 40 .* 32×32 images; use less than 32"):
        run_experiment(cfg, progress=False, log=lambda line: None)
    assert not (tmp_path / "runs").exists()  # nothing left behind


def test_cutout_zeros_one_square_per_image_at_most():
    x = torch.ones(64, 3, 32, 32)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1).flatten(1).sum(1)  # zeroed pixels per image, every channel at once
    assert int(zeros.max()) == 64 and int(zeros.min()) > 0  # whole squares inside, clipped at the edges
    assert torch.equal(out[out != 0], x[out != 0])


def test_augment_applies_warp_crop_and_cutout_in_a_fixed_order():
    x = torch.rand(4, 3, 32, 32)
    cfg = AugmentConfig(hflip=True, crop=4, cutout=8)
    a = augment(x, cfg, torch.Generator().manual_seed(5))
    b = augment(x, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)


class _Asymmetric(torch.nn.Module):
    """Logits that change when the image is mirrored."""

    def forward(self, x):
        left, right = x[..., : x.shape[-1] // 2].mean((1, 2, 3)), x[..., x.shape[-1] // 2:].mean((1, 2, 3))
        return torch.stack([left, right], 1)


def test_flip_tta_averages_the_logits_of_an_image_and_its_mirror():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    data = ImageSet(images, torch.tensor([0, 1, 0, 1, 0, 1]))
    prep = lambda x, train: x.float()  # noqa: E731
    plain, _ = predict_logits(_Asymmetric(), data, preprocess=prep, batch_size=4)
    mirrored, _ = predict_logits(_Asymmetric(), ImageSet(images.flip(3), data.labels), preprocess=prep, batch_size=4)
    tta, _ = predict_logits(_Asymmetric(), data, preprocess=prep, batch_size=4, tta="flip")
    assert torch.allclose(tta, (plain + mirrored) / 2)
    assert not torch.allclose(tta, plain)
    metrics = evaluate(_Asymmetric(), data, preprocess=prep, loss_fn=torch.nn.CrossEntropyLoss(), batch_size=4,
                       num_classes=2, tta="flip")
    assert metrics["acc"] == float(((tta.argmax(1) == data.labels).float().mean()))


def test_cifar_recipe_model_is_small_and_fits_any_class_count():
    model = create_model("cifar_recipe", num_classes=7)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert sum(p.numel() for p in model.parameters()) < 1.5e6
    with pytest.raises(ConfigError, match="cifar_recipe"):
        create_model("cifar_recipe", num_classes=7, widths=[8, 8, 8, 8, 8, 8], image_size=32)


def test_cifar_recipe_preset_trains_on_generated_data(npz_data, tmp_path):
    cfg = load_experiment("cifar_recipe", overrides={"data.path": str(npz_data), "out": str(tmp_path), "seeds": [1],
                                                     "train.epochs": 3, "train.batch_size": 32,
                                                     "model_args.widths": [8, 16, 32], "device": "cpu"})
    assert cfg.train.tta == "flip_shift" and cfg.preprocess.augment.crop == 4 and cfg.init == "torch"
    group = run_experiment(cfg, progress=False, log=lambda s: None)
    results = json.loads((group / "seed-1" / "results.json").read_text())
    assert results["epochs_trained"] == 3 and results["test_acc"] > 0.5  # four easy classes


def test_a_shifted_view_moves_the_image_one_pixel_and_reflects_the_edge():
    x = _numbered(2, 6)
    down_right = _shifted(x, 1, 1)
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])  # content moved down and right
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])  # the new top row: row 1 reflected in
    up_left = _shifted(x, -1, -1)
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(up_left[..., -1, :-1], x[..., -2, 1:])
    nhwc = x.contiguous(memory_format=torch.channels_last).expand(2, 3, 6, 6).contiguous(
        memory_format=torch.channels_last)
    assert _shifted(nhwc, 1, 1).is_contiguous(memory_format=torch.channels_last)  # the layout the model runs in


def test_flip_shift_tta_averages_the_six_views_and_refuses_an_unknown_mode():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    data = ImageSet(images, torch.tensor([0, 1, 0, 1, 0]))
    prep = lambda x, train: x.float()  # noqa: E731
    model = _Asymmetric()
    x = images.float()
    views = [x, _shifted(x, -1, -1), _shifted(x, 1, 1)]
    expected = sum(model(v) + model(v.flip(3)) for v in views) / 6
    tta, _ = predict_logits(model, data, preprocess=prep, batch_size=2, tta="flip_shift")
    assert torch.allclose(tta, expected)
    flip, _ = predict_logits(model, data, preprocess=prep, batch_size=2, tta="flip")
    assert not torch.allclose(tta, flip)
    with pytest.raises(ValueError, match="expected one of off, flip, flip_shift, got 'mirror'"):
        predict_logits(model, data, preprocess=prep, batch_size=2, tta="mirror")


def test_interpret_and_predict_use_the_views_the_run_tested_with(npz_data, tmp_path):
    cfg = load_experiment("cifar_recipe", overrides={"data.path": str(npz_data), "out": str(tmp_path), "seeds": [1],
                                                     "train.epochs": 1, "train.batch_size": 32, "train.tta": "flip_shift",
                                                     "train.amp": "off", "model_args.widths": [8, 16, 32],
                                                     "device": "cpu"})
    group = run_experiment(cfg, progress=False, log=lambda s: None)
    results = json.loads((group / "seed-1" / "results.json").read_text())
    trained = load_trained(group / "seed-1")
    assert trained.tta == "flip_shift"
    said = []
    interpret_run(group / "seed-1", log=said.append)
    assert f"test accuracy {100 * results['test_acc']:.2f} %" in said[0]
    right = seen = 0
    for images, labels in run_data(trained).test.batches(64):
        right += int((trained.probabilities(images).argmax(1) == labels).sum())
        seen += len(labels)
    assert right / seen == pytest.approx(results["test_acc"], abs=1e-9)
