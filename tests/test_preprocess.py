"""Batched augmentation and normalisation: shapes, ranges, real changes, no test-set leakage."""
from __future__ import annotations

import torch

from cnnlab.config import AugmentConfig, DataConfig, PreprocessConfig
from cnnlab.data import load_splits
from cnnlab.data.preprocess import BatchPreprocessor, augment_batch, fit_featurewise
from cnnlab.data.images import ImageSet


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def test_augmentation_keeps_shape_dtype_range_and_changes_images():
    x = batch().float() / 255
    cfg = AugmentConfig(rotation=10, shift=0.2, hflip=True)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1  # 'nearest' fill never invents values
    changed = (out - x).abs().flatten(1).max(1).values > 0.05
    assert changed.float().mean() > 0.9
    again = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded: repeatable


def test_flip_alone_mirrors_exactly():
    x = batch(64).float() / 255
    out = augment_batch(x, AugmentConfig(hflip=True), torch.Generator().manual_seed(0))
    flipped = torch.isclose(out, x.flip(-1), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


def test_shift_moves_content_by_at_most_the_requested_amount():
    x = torch.zeros(32, 1, 32, 32)
    x[:, 0, 12:20, 12:20] = 1.0  # a centred square; its centroid is (15.5, 15.5)
    out = augment_batch(x, AugmentConfig(shift=0.25), torch.Generator().manual_seed(3))
    grid = torch.arange(32.0)
    mass = out[:, 0].sum(dim=(1, 2))
    rows = (out[:, 0].sum(2) * grid).sum(1) / mass - 15.5
    cols = (out[:, 0].sum(1) * grid).sum(1) / mass - 15.5
    limit = 0.25 * 32
    assert rows.abs().max() <= limit + 0.5 and cols.abs().max() <= limit + 0.5
    assert rows.abs().max() > limit / 2 and cols.abs().max() > limit / 2  # it really moves


def test_featurewise_statistics_come_from_the_training_split_only(npz_data):
    splits = load_splits(DataConfig(path=str(npz_data)))
    # Make the test images wildly different: the fitted statistics must not move.
    mean, std = fit_featurewise(splits.train)
    poisoned = ImageSet(torch.full_like(splits.test.images, 255), splits.test.labels)
    splits.test = poisoned
    pre = BatchPreprocessor.fit(PreprocessConfig(normalize="featurewise"), splits.train)
    assert torch.allclose(pre.mean, mean) and torch.allclose(pre.std, std)
    # ... and they are the training images' own: normalised train data is centred and unit-scaled.
    normalised = pre(splits.train.images, train=False)
    assert normalised.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (normalised.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    # validation images are not part of the fit either
    both = ImageSet(torch.cat([splits.train.images, splits.val.images]), torch.cat([splits.train.labels, splits.val.labels]))
    assert not torch.allclose(fit_featurewise(both)[0], mean, atol=0)


def test_evaluation_is_never_augmented():
    pre = BatchPreprocessor(PreprocessConfig(augment=AugmentConfig(rotation=30, shift=0.3, hflip=True)))
    x = batch()
    assert torch.equal(pre(x, train=False), x.float() / 255)
    assert not torch.equal(pre(x, train=True, generator=torch.Generator().manual_seed(0)), x.float() / 255)


def test_small_host_tensors_reach_the_device_unchanged():
    from cnnlab.data.batches import to_device

    values = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    moved = to_device(values, torch.device("cpu"))
    assert moved.device.type == "cpu" and torch.equal(moved, values)
    if torch.cuda.is_available():  # the pinned, non-blocking path; the same numbers
        assert torch.equal(to_device(values, torch.device("cuda")).cpu(), values)


def test_zoom_scales_the_content_by_the_drawn_factor_and_leaves_other_streams_alone():
    n, side, square = 6, 64, 16
    x = torch.zeros(n, 3, side, side)
    x[:, :, 24:40, 24:40] = 1.0  # a centred 16-pixel square
    cfg = AugmentConfig(zoom=0.4)
    generator = torch.Generator().manual_seed(3)
    replay = torch.Generator().manual_seed(3)  # the same draws, replayed
    out = augment_batch(x, cfg, generator)
    torch.rand(n, generator=replay), torch.rand(n, 2, generator=replay)  # angle and shift come first
    factor = 1 + (torch.rand(n, generator=replay) * 2 - 1) * 0.4
    for image, s in zip(out, factor):
        bright_side = float((image[0] > 0.5).sum()) ** 0.5
        assert abs(bright_side - square / float(s)) <= 1.5, (bright_side, float(s))
    # Without zoom nothing more is drawn: a rotation's random stream is what it was before zoom existed.
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment_batch(x, AugmentConfig(rotation=10), a)
    torch.rand(n, generator=b), torch.rand(n, 2, generator=b)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
