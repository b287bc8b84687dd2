"""The rules a configuration can only be checked against once the model or the data exists.

Rules about the configuration alone (ranges, choices, one key against another) live in one
place, `config.py` (`_Reader` and `_cross_key_rules`), and fail while the file is read, naming
its line or the option. The rules here need more: which phases train on cached features is a
property of the model (which parameters a phase's parts name), whether a validation split
exists is a property of the data (a Hub dataset brings its own), and the processes' count is
known once torchrun started them. `studies/preflight.py` calls them before any folder is made
(on a shape-only model), and `Trainer` calls them again for code that builds one directly.
"""
from __future__ import annotations

from cnnlab.config import ExperimentConfig
from cnnlab.data.images import DataSplits
from cnnlab.data.preprocess import augmentation_enabled
from cnnlab.errors import ConfigError
from cnnlab.models.base import Classifier
from cnnlab.training.phases import resolve_phases, trains_head_only


def on_cached_features(cfg: ExperimentConfig, model: Classifier, phase) -> bool:
    """A phase trains on cached features when the backbone is frozen and nothing is augmented."""
    augmented = augmentation_enabled(cfg.preprocess.augment) and phase.augment
    return cfg.train.feature_cache and not augmented and trains_head_only(model, phase)


def check_model_rules(cfg: ExperimentConfig, model: Classifier) -> None:
    """CutMix pastes boxes of images: no phase of the run may train on cached feature vectors."""
    if cfg.train.cutmix > 0 and any(on_cached_features(cfg, model, p) for p in resolve_phases(cfg.train)):
        raise ConfigError("train.cutmix pastes boxes of images, but a phase with the backbone frozen trains on "
                          "cached features: use train.mixup there, or set train.feature_cache: false")


def check_data_rules(cfg: ExperimentConfig, splits: DataSplits | None, world: int = 1) -> None:
    """The global batch shares out over the processes; a monitored figure needs a validation split."""
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be divisible by the {world} processes")
    monitors = sorted({cfg.train.keep_best, cfg.train.early_stopping.monitor} - {"off"})
    if monitors and splits is not None and splits.val is None:
        raise ConfigError(f"train.keep_best / train.early_stopping watch {', '.join(monitors)}, which needs a "
                          "validation split, and this data has none: set data.val_fraction > 0 (or use data.folds)")
