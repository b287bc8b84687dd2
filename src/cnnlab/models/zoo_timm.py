"""`--backbone timm/NAME[.TAG]`: any timm architecture, its weights from the Hugging Face Hub.

timm's own contract does the work (its model code is used, never copied): `create_model(...,
num_classes=0)` builds the trunk, `forward_features` + `forward_head(pre_logits=True)` pool it as
its authors do (average, class token, a final norm), `group_matcher(coarse=True)` names its stages,
and `pretrained_cfg` states the input size, crop ratio, interpolation and mean/std its weights
were trained with. Weights are downloaded and cached by timm / huggingface_hub (`HF_HOME`,
`HF_HUB_OFFLINE=1` honoured); `--weights PATH` takes a timm state dict (.safetensors / .pth) or a
Hub-style folder (config.json + model.safetensors), whose config.json states its preprocessing.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import torch
from torch import nn

import cnnlab.records as records
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.config import INTERPOLATIONS
from cnnlab.models.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneEntry, Preprocessing, WeightsEntry, register_zoo
from cnnlab.models.trunks import ProbedTrunk, as_map


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm backbones need the optional extra: pip install 'cnnlab[timm]'") from None
    return timm


def preprocessing_from_cfg(cfg: dict) -> Preprocessing:
    """timm's pretrained_cfg (or a Hub config.json's) → the Preprocessing its weights expect.

    `crop_mode: squash` resizes straight to the square (cnnlab's stretch); `center` and `border`
    resize the shorter side to size / crop_pct and cut the centre (cnnlab's crop)."""
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    interpolation = str(cfg.get("interpolation") or "bilinear")
    return Preprocessing(size=size, resize="stretch" if cfg.get("crop_mode") == "squash" else "crop",
                         crop_ratio=float(cfg.get("crop_pct") or 0.875),
                         mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
                         std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
                         interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear")


class TimmTrunk(ProbedTrunk):
    """A timm model with its classifier removed (`num_classes=0`)."""

    kind = "timm"

    def num_features(self, backbone: nn.Module) -> int:
        # models whose pre-logits are wider than their last map (e.g. MobileNetV3's conv head) say so
        return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)

    def stage_names(self, backbone: nn.Module) -> list[str]:
        from timm.models import group_modules

        groups = sorted(group_modules(backbone, backbone.group_matcher(coarse=True)).items())
        owner = {member: gid for gid, members in groups for member in members}
        names = []
        for gid, members in groups:
            # the outermost module around the group's first layer that holds no other group's layers:
            # 'stages.0' for ConvNeXt, 'blocks.11' for a ViT whose last group also takes the final norm
            parts = members[0].split(".")
            for depth in range(1, len(parts) + 1):
                candidate = ".".join(parts[:depth])
                inside = [g for m, g in owner.items() if m == candidate or m.startswith(candidate + ".")]
                if all(g == gid for g in inside):
                    break
            if candidate not in names:
                names.append(candidate)
        return names

    def pooled(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)

    def spatial(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        features = backbone.forward_features(x)
        if features.dim() == 3:
            return as_map(features, f"tokens:{int(getattr(backbone, 'num_prefix_tokens', 0))}")
        if features.dim() != 4:
            raise ConfigError(f"backbone '{self.name}' gives no spatial map; use pooled features (pool: avg)")
        return as_map(features, "nhwc" if getattr(backbone, "output_fmt", "NCHW") == "NHWC" else "nchw")


def _hub_config(path: Path) -> dict | None:
    """A Hub-style folder's config.json (timm writes `pretrained_cfg` into it), else None."""
    config = path / "config.json" if path.is_dir() else None
    if config is None or not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config}: not a readable JSON file ({exc})") from None


# The fields of a Hub-style folder's config.json that cnnlab reads (timm's pretrained_cfg inside it).
_SIDE = records.integer(at_least=1, at_most=4096)
PRETRAINED_CFG_SCHEMA = {
    "input_size": records.optional(records.list_of(_SIDE, length=3)),
    "interpolation": records.optional(records.text()),
    "crop_pct": records.optional(records.number(above=0.0, at_most=1.0)),
    "crop_mode": records.optional(records.text()),
    "mean": records.optional(records.list_of(records.number(at_least=-1e6, at_most=1e6), length=3)),
    "std": records.optional(records.list_of(records.number(above=0.0, at_most=1e6), length=3)),
}


def _path_preprocessing(path: Path) -> Preprocessing | None:
    config = _hub_config(path)
    if config is None:
        return None
    where = path / "config.json"
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a mapping of fields, got {type(config).__name__}")
    stated = config.get("pretrained_cfg")
    if stated is None:
        return None
    stated = records.check(stated, PRETRAINED_CFG_SCHEMA, f"{where}: pretrained_cfg", what="timm's pretrained_cfg")
    return preprocessing_from_cfg({k: v for k, v in stated.items() if v is not None})


def _download(name: str, hub_id: str) -> dict:
    """The pretrained weights through timm (Hub cache); one line naming the ways on when that fails."""
    import logging

    timm = _timm()
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would be lines before cnnlab's one
    try:
        return timm.create_model(name, pretrained=True, num_classes=0).state_dict()
    except Exception as exc:  # huggingface_hub's offline/HTTP errors, timm's RuntimeError: all mean "not here"
        from huggingface_hub import constants

        reason = ((str(exc).splitlines() or [""])[0].split(". ")[0] or type(exc).__name__)[:200]
        raise CheckpointError(
            f"could not load the pretrained weights of timm/{name} (Hub model '{hub_id}': {reason}); "
            f"on a machine with internet timm downloads them into {constants.HF_HUB_CACHE}; offline, put them "
            "there or pass --weights PATH (a .safetensors/.pth state dict or a Hub-style folder with config.json "
            "+ model.safetensors)") from None
    finally:
        hub_log.setLevel(level)


def _adapt(classifier: str):
    """Load a timm state dict into the classifier-less trunk: its ImageNet classifier is left out."""
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier or []))

    def adapt(trunk: nn.Module, state: dict) -> None:
        trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith(heads)}, strict=True)

    return adapt


def resolve(name: str) -> BackboneEntry:
    timm = _timm()
    architecture = name.split(".")[0]
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=8, cutoff=0.6)
        raise ConfigError(f"backbone 'timm/{name}': timm has no model '{architecture}'"
                          + (f"; close names: {', '.join(close)}" if close else "")
                          + " (`cnnlab list backbones PATTERN` lists them)")
    try:
        cfg = timm.get_pretrained_cfg(name)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        cfg = None
    if cfg is None and "." in name:
        tags = timm.list_pretrained(f"{architecture}.*")[:8]
        raise ConfigError(f"backbone 'timm/{name}': no pretrained tag '{name.split('.', 1)[1]}' for "
                          f"{architecture}; its tags: {', '.join(tags) or 'none'}")
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    preprocessing = preprocessing_from_cfg(cfg_dict)
    hub_id = cfg_dict.get("hf_hub_id") or f"timm/{name}"
    tag = cfg_dict.get("tag") or "default"
    weights = WeightsEntry(
        name=tag, description=f"timm's pretrained weights '{name}' (Hugging Face Hub: {hub_id})",
        preprocessing=preprocessing, load_state_dict=lambda: _download(name, hub_id),
        licence=str(cfg_dict.get("license") or ""), url=f"https://huggingface.co/{hub_id}")
    return BackboneEntry(
        name=f"timm/{name}", build=lambda: timm.create_model(name, pretrained=False, num_classes=0),
        trunk=TimmTrunk(f"timm/{name}", preprocessing.size), weights={tag: weights}, default_weights=tag,
        adapt_state_dict=_adapt(cfg_dict.get("classifier", "")), path_preprocessing=_path_preprocessing,
        description=weights.description)


def list_names(pattern: str = "") -> list[str]:
    """timm's pretrained names matching `pattern` (a substring, or a glob with *)."""
    timm = _timm()
    glob = pattern if "*" in pattern else f"*{pattern}*"
    return timm.list_pretrained(glob)


register_zoo("timm", resolve)
