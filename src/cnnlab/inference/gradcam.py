"""Grad-CAM (Selvaraju et al., 2017): where in the image a model looked.

A forward hook keeps one layer's activation map A (C×h×w) and a tensor hook its gradient with
respect to the class score; the map is ReLU(Σ_c mean(∂score/∂A_c) · A_c), upsampled to the
image. The default layer is the model's own choice (`Classifier.gradcam_layer`: for a ViT the input
norm of its last block, tokens read as their grid), else the module of the backbone that returns a
spatial map last before the pooling (BaseNet's last pooling; ResNet's layer4, EfficientNet's
activated head conv, ConvNeXt's last stage).
Activations in other layouts (Swin's NHWC, a ViT's tokens) are read as NCHW maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inference.trained import TrainedModel
from cnnlab.models.trunks import as_map, guess_layout


def spatial_layers(model: nn.Module, input_size: tuple[int, int, int], *, leaves: bool = True) -> list[str]:
    """Names of the backbone's modules (leaf modules only with `leaves`) whose output is a feature map
    (h and w > 1), in the order they return (a container after the layers inside it)."""
    found: list[str] = []
    hooks = []
    for name, module in model.backbone.named_modules():
        if name and (not leaves or not list(module.children())):
            def record(_m, _i, output, name=f"backbone.{name}"):
                if isinstance(output, torch.Tensor) and guess_layout(output):
                    if name in found:
                        found.remove(name)
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
    modules = dict(model.named_modules())
    layer = layer or model.gradcam_layer()
    if layer is None:  # the module that returns the map last before the pooling: the block's output
        candidates = spatial_layers(model, trained.input_size, leaves=False)
        layer = candidates[-1] if candidates else None
    if layer not in modules:
        candidates = spatial_layers(model, trained.input_size)
        raise ConfigError(f"--layer {layer!r}: not a module of this model; layers with a feature map: "
                          f"{', '.join(candidates[-8:])}")
    calls: list[dict[str, torch.Tensor]] = []

    def forward_hook(_module, _inputs, output):
        # A module called more than once per forward (torchvision's ReLU in a Bottleneck) is explained
        # at its last call, its gradient paired with that same call's output.
        output = output[0] if isinstance(output, (tuple, list)) else output
        call = {"activation": output}
        calls.append(call)
        if output.requires_grad:
            output.register_hook(lambda grad: call.__setitem__("gradient", grad))

    handle = modules[layer].register_forward_hook(forward_hook)
    try:
        with torch.enable_grad():
            x = trained.preprocess(images).requires_grad_(True)
            logits = model(x)
            target = logits.argmax(1) if target is None else target.to(logits.device)
            logits.gather(1, target[:, None]).sum().backward()
    finally:
        handle.remove()
    last = calls[-1] if calls else {}
    layout = guess_layout(last["activation"]) if "activation" in last else None
    if "gradient" not in last or layout is None:
        raise ConfigError(f"--layer {layer!r}: its output is not a feature map the class score depends on; "
                          f"layers with a feature map: {', '.join(spatial_layers(model, trained.input_size)[-8:])}")
    activation, gradient = as_map(last["activation"].detach(), layout), as_map(last["gradient"].detach(), layout)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (cam / peak).cpu(), target.cpu()
