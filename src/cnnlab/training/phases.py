"""Fine-tuning policies as data: which named parts train in each phase, at which learning rate.

Every model exposes `backbone` and `head`; a phase lists module paths to train ("all",
"head", "backbone.layer3", ...). Parameters outside them are frozen (requires_grad=False)
and, by default, BatchNorm layers in frozen parts stay in eval mode so their running
statistics — part of the pretrained features — are not overwritten.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnlab.config import OptimizerConfig, PhaseConfig, TrainConfig
from cnnlab.errors import ConfigError
from cnnlab.models.base import Classifier
from cnnlab.training.optim import build_optimizer, build_scheduler, decay_groups


def resolve_phases(tc: TrainConfig) -> list[PhaseConfig]:
    """The configured phases, or the single everything-trainable phase of plain training."""
    return list(tc.phases) or [PhaseConfig(name="train", epochs=tc.epochs)]


def phase_epochs(phases: list[PhaseConfig]) -> list[range]:
    """Each phase's epochs, numbered from 1 across the whole run: [range(1, 11), range(11, 21)]."""
    spans, start = [], 1
    for phase in phases:
        spans.append(range(start, start + phase.epochs))
        start += phase.epochs
    return spans


def _matches(name: str, prefixes: list[str]) -> bool:
    return "all" in prefixes or any(name == p or name.startswith(p + ".") for p in prefixes)


def _expand(model: Classifier, trainable: list[str], phase: str) -> list[str]:
    """Check each named part exists; 'backbone.layer3' also trains every module after it in its
    top-level part (layer4; a ViT's 'backbone.blocks.8': blocks 9-11 and the final norm)."""
    modules = dict(model.named_modules())
    order = list(modules)
    aliases = model.part_aliases()
    expanded: list[str] = []
    for part in trainable:
        part = aliases.get(part, part)
        if part == "all":
            return ["all"]
        if part not in modules:
            top = ", ".join(["all", *[n for n, _ in model.named_children()]])
            raise ConfigError(f"phase '{phase}': trainable part '{part}' is not a module of this model; "
                              f"valid: {top}, {', '.join([*model.stage_names(), *aliases])}")
        expanded.append(part)
        root = part.split(".")[0]
        if root != part:  # named_modules is pre-order: what follows a module runs after it (or inside it)
            expanded += [n for n in order[order.index(part) + 1:] if n.split(".")[0] == root]
    named = set(expanded)
    # the outermost names only: 'backbone.layer4', not also each of its blocks
    return list(dict.fromkeys(n for n in expanded if not any(a in named for a in _ancestors(n))))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def freeze_for_phase(model: Classifier, phase: PhaseConfig) -> tuple[list[str], list, list]:
    """Set requires_grad for `phase`; return its parts and its (backbone, other) trainable parameters."""
    parts = _expand(model, phase.trainable, phase.name)
    backbone, rest = [], []
    for name, param in model.named_parameters():
        train = _matches(name, parts)
        param.requires_grad_(train)
        if train:
            (backbone if name.startswith("backbone.") else rest).append(param)
    if not backbone and not rest:
        raise ConfigError(f"phase '{phase.name}': no trainable parameters")
    return parts, backbone, rest


def trains_head_only(model: Classifier, phase: PhaseConfig) -> bool:
    """True when the phase trains nothing but the head (the backbone stays a fixed function)."""
    parts = _expand(model, phase.trainable, phase.name)
    return all(p == "head" or p.startswith("head.") for p in parts) and phase.frozen_bn == "eval"


def apply_phase(model: Classifier, phase: PhaseConfig, optimizer_cfg: OptimizerConfig, tc: TrainConfig,
                steps_per_epoch: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, list[str]]:
    """Freeze/unfreeze for `phase` and build its optimizer (per-group learning rates) and schedule."""
    parts, backbone, rest = freeze_for_phase(model, phase)
    lr = phase.lr or optimizer_cfg.lr
    groups = [{"params": rest, "lr": lr, "name": "head"}] if rest else []
    if backbone:
        groups += backbone_groups(model, backbone, lr * phase.backbone_lr_mult, phase.backbone_lr_decay)
    optimizer = build_optimizer(decay_groups(groups, model, optimizer_cfg), optimizer_cfg)
    scheduler = build_scheduler(optimizer, tc, steps_per_epoch, epochs=phase.epochs)
    return optimizer, scheduler, parts


def backbone_groups(model: Classifier, trainable: list, lr: float, decay: float) -> list[dict]:
    """The trainable backbone parameters as optimizer groups: one at `lr`, or with a layer-wise
    decay below 1 (BEiT, ULMFiT's discriminative rates) one group per stage of the backbone — the
    model's `backbone_stage_parameters`, in order — the last at `lr`, each earlier one at `decay` times
    the next, so the generic early features move least."""
    if decay == 1.0:
        return [{"params": trainable, "lr": lr, "name": "backbone"}]
    wanted = {id(p) for p in trainable}
    stages = [(name, [p for p in params if id(p) in wanted]) for name, params in model.backbone_stage_parameters()]
    groups, depth = [], len(stages) - 1
    for index, (name, params) in enumerate(stages):
        if params:
            groups.append({"params": params, "lr": lr * decay ** (depth - index), "name": f"backbone.{name}"})
    placed = {id(p) for group in groups for p in group["params"]}
    loose = [p for p in trainable if id(p) not in placed]  # parameters directly on the backbone module
    if loose:
        groups.append({"params": loose, "lr": lr, "name": "backbone"})
    return groups


def set_train_mode(model: nn.Module, phase: PhaseConfig) -> None:
    """model.train(), but BatchNorm whose parameters are all frozen stays in eval mode if asked."""
    model.train()
    if phase.frozen_bn != "eval":
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
