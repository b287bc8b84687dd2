"""Everything that can be checked before a run folder is made, checked before it is made.

A mistyped head, an unknown policy part, a weights file that is not weights or weights
that cannot be downloaded fail here, in one line, leaving nothing behind on disk.
"""
from __future__ import annotations

from cnnlab.config import ExperimentConfig, model_spec
from cnnlab.errors import ConfigError, DataError
from cnnlab.models.backbones import load_backbone_weights
from cnnlab.models import get_model_entry, model_preprocessing
from cnnlab.training.runtime import Runtime
from cnnlab.training.checks import check_model_rules
from cnnlab.training.trackers import check_trackers
from cnnlab.training.phases import freeze_for_phase, resolve_phases
from cnnlab.training.learner import build_model


def check_experiment(cfg: ExperimentConfig, *, data_given: bool = False) -> None:
    """Model name and arguments, head, weights and fine-tuning parts; data that must be named."""
    try:
        entry = get_model_entry(cfg.model)
    except ConfigError as exc:
        raise ConfigError(f"experiment '{cfg.experiment_name}': key 'model': {exc}") from None
    check_trackers(cfg.log.trackers)
    # the device, a named engine that is not installed, a bad $CNNLAB_CPU_BF16: named now, not in each seed's process
    Runtime.resolve(cfg)
    spec = model_spec(cfg)
    pretrained = entry.preprocessing is not None
    model_preprocessing(cfg.model, cfg.model_args)  # unknown backbone or weights name
    # The architecture first (head spec, policy parts), without reading or downloading weights.
    model = build_model(cfg, max(2, cfg.data.num_classes), entry.input_size, shape_only=True)
    for phase in resolve_phases(cfg.train):
        freeze_for_phase(model, phase)
    check_model_rules(cfg, model)  # e.g. CutMix on a phase of cached features, before any is computed
    if pretrained and cfg.data.path is None and cfg.data.source == "auto" and not data_given:
        raise DataError(f"experiment '{cfg.experiment_name}' fine-tunes a pretrained network on photographs: "
                        "give --data PATH, a bird folder (the lab's list layout, CUB-200 or CUB-200-2011) "
                        "or any folder of class folders")
    if pretrained and spec.weights != "none":
        # Reading (or downloading, once: the seeds' builds read the cache) the weights into the shape-only
        # model's backbone: the model is built once here, not again to read them.
        load_backbone_weights(model.backbone, spec.backbone, spec.weights)
