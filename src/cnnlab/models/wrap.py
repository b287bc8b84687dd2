"""Any `nn.Module` a user wrote, as a `Classifier` with a backbone and a head (fastai's `cut`, timm's
`reset_classifier`), registered under a name so the whole of cnnlab — seeds, run folders, summary,
predict — treats it as one of its own models.

    register_module(MyNet(), name="mynet")          # the head: the last nn.Linear, found
    register_module(MyNet(), name="mynet", head="classifier.2")   # or named

The head is split off (its place in the module becomes an identity), and the split is checked on a
probe input: `head(backbone(x))` must equal the module's own output. A module that does more after
its last layer (a residual around the head, a softmax) fails that check and is refused in one line
naming `head=` — never trained as something else than what the user wrote.

Seeds stay honest: each seed's model is a fresh copy of the module with every layer's parameters
drawn again (`reset_parameters()`) from that seed, as a registered builder would build it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import Classifier
from cnnlab.models.registry import _REGISTRY, ModelEntry


class WrappedModule(Classifier):
    """A user's module cut into `backbone` (the module, its head replaced by an identity) and `head`."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int):
        super().__init__()
        self.backbone, self.head, self.num_classes = backbone, head, num_classes


def find_head(module: nn.Module, head: str | None) -> str:
    """The dotted name of the head: `head` as given (checked), else the last nn.Linear."""
    names = dict(module.named_modules())
    if head is not None:
        if head not in names or head == "":
            raise ConfigError(f"head={head!r}: no such submodule; the module's are: "
                              f"{', '.join(n for n in names if n)[:400]}")
        return head
    linear = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ConfigError(f"{type(module).__name__}: no nn.Linear to take as its head; name it with head='...'")
    return linear[-1]


def _replace(module: nn.Module, dotted: str, new: nn.Module) -> nn.Module:
    parent_name, _, child = dotted.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def reset_parameters(module: nn.Module) -> None:
    """Draw every layer's parameters again (the layers' own initialisers), from the current seed."""
    for layer in module.modules():
        if hasattr(layer, "reset_parameters") and layer is not module:
            layer.reset_parameters()


def split_module(module: nn.Module, *, head: str | None, input_size: tuple[int, int, int]) -> WrappedModule:
    """A copy of `module` as backbone + head, checked on a probe input."""
    net = copy.deepcopy(module)
    name = find_head(net, head)
    head_module = _replace(net, name, nn.Identity())
    out_features = getattr(head_module, "out_features", None)
    wrapped = WrappedModule(net, head_module, out_features or 0)
    probe = torch.rand(2, *input_size, generator=torch.Generator().manual_seed(0))  # the seed's draws untouched
    was_training = module.training
    module.eval()
    wrapped.eval()
    with torch.no_grad():
        try:
            expected = module(probe)
        except Exception as exc:  # noqa: BLE001 — the user's code: its error, in one line
            raise ConfigError(f"{type(module).__name__}: a probe batch of shape {tuple(probe.shape)} fails in "
                              f"its forward ({str(exc).splitlines()[0][:200]})") from None
        got = wrapped(probe)
    module.train(was_training)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
        raise ConfigError(f"{type(module).__name__}: '{name}' is not its last step (head(backbone(x)) differs "
                          "from its output); name the layer that makes the logits with head='...'")
    wrapped.num_classes = expected.shape[1]
    return wrapped


def register_module(module: nn.Module, *, name: str, input_size: tuple[int, int, int] = (3, 32, 32),
                    head: str | None = None, reinitialise: bool = True) -> str:
    """Register `module` as model `name` (replacing an earlier module registered from Python under that name):
    each build is a copy, its parameters drawn again from the seed unless `reinitialise=False` (a module
    whose weights you trained or loaded yourself). Returns the name."""
    held = _REGISTRY.get(name)
    if held is not None and not isinstance(held.builder, _ModuleBuilder):
        raise ConfigError(f"model name '{name}' is one of cnnlab's; register the module under another name")
    probe = split_module(module, head=head, input_size=input_size)  # refuse a module that cannot be split, now
    _REGISTRY[name] = ModelEntry(name, _ModuleBuilder(module, head, reinitialise, probe.num_classes),
                                 f"{type(module).__name__} (a module registered from Python)", input_size)
    return name


class _ModuleBuilder:
    """The registry's builder for a user's module: a checked copy, drawn again from the seed."""

    def __init__(self, module: nn.Module, head: str | None, reinitialise: bool, outputs: int):
        self.module, self.head, self.reinitialise = module, head, reinitialise
        self.outputs = outputs  # the logits it makes: its classes

    def __call__(self, *, num_classes: int, in_channels: int = 3, image_size: int = 32) -> WrappedModule:
        wrapped = split_module(self.module, head=self.head, input_size=(in_channels, image_size, image_size))
        if wrapped.num_classes != num_classes:
            raise ConfigError(f"{type(self.module).__name__} makes {wrapped.num_classes} outputs but the data has "
                              f"{num_classes} classes; give its last layer {num_classes} outputs")
        if self.reinitialise:
            reset_parameters(wrapped)
        return wrapped
