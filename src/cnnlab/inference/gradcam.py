"""Grad-CAM (Selvaraju et al., 2017): where in the image a convolutional model looked.

A forward hook keeps one layer's activation map A (C×h×w) and a tensor hook its gradient with
respect to the class score; the map is ReLU(Σ_c mean(∂score/∂A_c) · A_c), upsampled to the
image. The default layer is the last one of the backbone whose output is still a spatial map
(BaseNet's last pooling, a pretrained backbone's last stage).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inference.trained import TrainedModel


def spatial_layers(model: nn.Module, input_size: tuple[int, int, int]) -> list[str]:
    """Names of the backbone's leaf modules whose output is a feature map (N×C×h×w, h and w > 1)."""
    found: list[str] = []
    hooks = []
    for name, module in model.backbone.named_modules():
        if name and not list(module.children()):
            def record(_m, _i, output, name=f"backbone.{name}"):
                if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] > 1:
                    found.append(name)
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def gradcam(trained: TrainedModel, images: torch.Tensor, *, layer: str | None = None,
            target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Heat maps in [0, 1] (N×H×W) for uint8 NCHW `images`, for class `target` (default: the predicted one);
    also returns the classes explained."""
    model = trained.model.eval()
    candidates = spatial_layers(model, trained.input_size)
    layer = layer or (candidates[-1] if candidates else None)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ConfigError(f"--layer {layer!r}: not a module of this model; layers with a feature map: "
                          f"{', '.join(candidates[-8:])}")
    kept: dict[str, torch.Tensor] = {}

    def forward_hook(_module, _inputs, output):
        kept["activation"] = output
        output.register_hook(lambda grad: kept.__setitem__("gradient", grad))

    handle = modules[layer].register_forward_hook(forward_hook)
    try:
        with torch.enable_grad():
            x = trained.preprocess(images).requires_grad_(True)
            logits = model(x)
            target = logits.argmax(1) if target is None else target.to(logits.device)
            logits.gather(1, target[:, None]).sum().backward()
    finally:
        handle.remove()
    activation, gradient = kept["activation"].detach(), kept["gradient"].detach()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (cam / peak).cpu(), target.cpu()
