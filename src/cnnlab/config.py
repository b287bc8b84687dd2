"""Typed, strict experiment configuration.

One dataclass per concern; an experiment file (YAML) overrides the defaults and the
command line overrides the file. Unknown keys, wrong types and impossible values are
rejected with a message that names the file, the line and the dotted key, the way
nanoGPT's configurator and airbench's asserts refuse what they do not understand.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from cnnlab.catalogue import DEFAULT_BACKBONE, PRETRAINED_MODELS
from cnnlab.errors import ConfigError
from cnnlab.fileio import atomic_write_text, read_text_file

BUILTIN_EXPERIMENTS = Path(__file__).parent / "experiments"
BUILTIN_ABLATIONS = BUILTIN_EXPERIMENTS / "ablations"



def data_sources() -> tuple[str, ...]:
    """data.source's choices: auto and every registered source (datasources.BUILTIN_SOURCES, and any registered at run time)."""
    from cnnlab.datasources import source_names

    return source_names()


# The one list of each: the command line, the loaders and `cnnlab list` all read these.
DEVICES = ("auto", "cpu", "cuda", "mps")
TRACKERS = ("tensorboard", "mlflow")
# what runs a frozen module (features, predict, serve): engines.py
ENGINES = ("auto", "torch", "openvino", "onnxruntime")
# resampling filters of streamed images (data.interpolation, a backbone's weights' preprocessing)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")


# imbalanced classes (training/imbalance.py): data.sampler and train.class_weights
SAMPLERS = ("uniform", "balanced", "sqrt")
CLASS_WEIGHTS = ("none", "balanced", "effective")

# train.tta's modes, from the fewest views to the most (training/loop.py's tta_views makes them)
TTA_MODES = ("off", "flip", "flip_shift")
CALIBRATIONS = ("none", "temperature")  # trust/calibration.py
CONFORMAL_SCORES = ("aps", "raps", "lac")  # trust/conformal.py
REJECT_SCORES = ("msp", "energy")  # trust/rejection.py
TASKS = ("auto", "single", "multilabel")  # one class an image, or several (training/task.py)
LOSSES = ("auto", "ce", "bce", "asl")  # auto: ce for one class an image, bce for several
THRESHOLD_MODES = ("f1", "fixed")  # multilabel/thresholds.py


# Seeds reach numpy's and scikit-learn's generators, which take 0..2**32 - 1 and refuse the rest.
SEED_RANGE = (0, 2 ** 32 - 1)


def _opt(default: Any, *, choices: tuple | Callable[[], tuple] | None = None, min: float | None = None,
         max: float | None = None, gt: float | None = None, item_choices: tuple | None = None,
         item_range: tuple[float, float] | None = None, help: str = "") -> Any:
    """A dataclass field carrying the validation rules the loader enforces (`item_choices`, `item_range`: of a
    list's items; `choices` may be a function returning them, for a table that grows at run time such as data
    sources)."""
    meta = {"choices": choices, "min": min, "max": max, "gt": gt, "item_choices": item_choices,
            "item_range": item_range, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Where the images come from and how the hold-out split is drawn."""

    source: str = _opt("auto", choices=data_sources,
                       help="auto detects the layout of `path`; cifar100 downloads through torchvision")
    path: str | None = _opt(None, help="dataset folder (or file, or hf:OWNER/NAME[:CONFIG] for a Hugging Face "
                                       "Hub dataset); for cifar100 the download cache "
                                       "(default: $CNNLAB_DATA or ~/.cache/cnnlab/data)")
    num_classes: int = _opt(25, min=2, help="CIFAR-100: keep fine labels 0..num_classes-1 (at most 100); "
                                             "a run records here the classes its data had")
    val_fraction: float = _opt(0.1, min=0.0, max=0.9, help="stratified hold-out taken from train")
    test_fraction: float = _opt(0.2, min=0.0, max=0.9, help="class folders / CSV without a test split: the "
                                                             "stratified share of all images held out for test")
    split_file: str | None = _opt(None, help="class folders / CSV: reuse a saved split.csv (path,label,split) "
                                             "instead of drawing one")
    split_seed: int = _opt(0, min=SEED_RANGE[0], max=SEED_RANGE[1],
                           help="seed of the train/validation split, fixed across runs")
    download: bool = _opt(True, help="allow downloading CIFAR-100 when it is not cached")
    folds: int = _opt(0, min=0, max=50, help="k-fold cross-validation instead of the hold-out (0: hold-out; "
                                             "else 2 to 50 folds)")
    subset: int = _opt(0, min=0, help="keep only this many training images, stratified (0: all)")
    image_size: int = _opt(0, min=0, help="streamed images: side after resizing (0: the model's weights' size)")
    resize: str = _opt("auto", choices=("auto", "stretch", "crop"),
                       help="streamed images: stretch to a square (the lab's), or resize + centre crop; "
                            "auto: what the model's weights were trained with")
    interpolation: str = _opt("auto", choices=("auto", *INTERPOLATIONS),
                              help="streamed images: the resampling filter (auto: the model's weights', "
                                   "else bilinear)")
    cache: bool | None = _opt(None, help="decode images once into a uint8 in-memory set; default: class "
                                         "folders and CSVs when they fit in 1 GiB, bird lists never")
    workers: int = _opt(-1, min=-1, help="decoding worker processes for streamed images (-1: cores - 1)")
    skip_bad_images: bool = _opt(False, help="leave out images that do not decode (reported by name)")
    image_column: str | None = _opt(None, help="Hugging Face / Parquet / Arrow data: the column of images "
                                               "(default: the one column of the Image feature type)")
    label_column: str | None = _opt(None, help="Hugging Face / Parquet / Arrow data: the column of labels "
                                               "(default: the one ClassLabel column, else one named label)")
    calibration_fraction: float = _opt(0.0, min=0.0, max=0.9,
                                       help="the seeded share of the validation split held out for the conformal "
                                            "sets' scores (the rest fits the temperature and the rejection rule); "
                                            "0: the whole validation split does both")
    leak_check: str = _opt("warn", choices=("warn", "error", "off"),
                           help="before training, look for test images with a near-exact duplicate (a perceptual "
                                "hash) in train or validation: warn (one line and leaks.csv in the experiment "
                                "folder), error (refuse to train), off")
    label_separator: str | None = _opt(None, help="multi-label CSV: what separates the labels of a cell (default: "
                                                 "';' or '|', detected)")
    label_columns: list[str] = _opt([], help="multi-label CSV: the 0/1 columns, one per class (default: every "
                                             "column of a path,... header but split)")
    sampler: str = _opt("uniform", choices=SAMPLERS,
                        help="how each epoch draws training images: uniform (every image once), balanced (every "
                             "class equally often) or sqrt (each class ∝ √its images); with replacement, seeded")


@dataclass
class AugmentConfig:
    """Keras ImageDataGenerator-style augmentation, applied batched on tensors."""

    rotation: float = _opt(0.0, min=0.0, max=180.0, help="maximum rotation in degrees")
    hflip: bool = _opt(False, help="random horizontal flip")
    shift: float = _opt(0.0, min=0.0, max=0.5, help="maximum width/height shift, fraction of size")
    zoom: float = _opt(0.0, min=0.0, max=0.5, help="maximum zoom: each image scaled by a factor drawn in "
                                                   "[1 - zoom, 1 + zoom], the same on both axes (Keras's "
                                                   "zoom_range draws the two separately)")
    fill: str = _opt("nearest", choices=("nearest", "zeros", "reflect"))
    crop: int = _opt(0, min=0, max=64, help="random crop: pad each side by this many pixels (reflecting the "
                                             "image) and cut a window of the original size; whole-pixel "
                                             "translations, the ResNet/airbench CIFAR augmentation")
    cutout: int = _opt(0, min=0, max=128, help="cutout: zero one random square of this side in each image")


@dataclass
class PreprocessConfig:
    normalize: str = _opt("none", choices=("none", "featurewise", "weights"),
                          help="featurewise: per-channel mean/std fitted on the training split; "
                               "weights: the mean/std the pretrained weights expect")
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimizerConfig:
    name: str = _opt("adam", choices=("adam", "adamw", "sgd"))
    lr: float = _opt(1e-3, gt=0.0)
    betas: tuple[float, float] = _opt((0.9, 0.999))
    # Keras's Adam uses eps=1e-7 (PyTorch's default is 1e-8); the lab's numbers came from Keras.
    eps: float = _opt(1e-7, gt=0.0)
    weight_decay: float = _opt(0.0, min=0.0)
    momentum: float = _opt(0.9, min=0.0, max=1.0)
    nesterov: bool = _opt(False)
    decay_norm_and_bias: bool = _opt(True, help="apply weight_decay to norm weights and biases too (tensors of one "
                                                "dimension); false: only to weight matrices and kernels, as "
                                                "nanoGPT and timm do (training/steps.py)")


@dataclass
class PhaseConfig:
    """One phase of a fine-tuning policy (fastai `fine_tune`, Lightning `BackboneFinetuning`).

    At the start of each phase the optimizer is rebuilt over the phase's trainable
    parameters (Keras's "recompile"), with its own learning rate and schedule.
    """

    name: str = _opt("train")
    epochs: int = _opt(1, min=1)
    trainable: list[str] = _opt(["all"], help="named parts to train: all, backbone, head, or a module path "
                                              "such as backbone.layer3 (it and everything after it in the list)")
    lr: float | None = _opt(None, gt=0.0, help="learning rate of this phase (default: train.optimizer.lr)")
    backbone_lr_mult: float = _opt(1.0, gt=0.0, help="learning-rate multiplier for trainable backbone parameters")
    backbone_lr_decay: float = _opt(1.0, gt=0.0, max=1.0,
                                    help="layer-wise learning-rate decay: the backbone's last stage trains at "
                                         "lr × backbone_lr_mult, each stage before it at this factor of the next")
    frozen_bn: str = _opt("eval", choices=("eval", "train"),
                          help="BatchNorm in frozen parts: eval keeps running statistics fixed")
    augment: bool = _opt(True, help="apply the experiment's augmentation in this phase; a head-only phase "
                                    "without it trains on cached backbone features")


MONITORS = ("val_loss", "val_acc", "val_bal_acc", "val_macro_f1", "val_map")
# what each task's validation rows hold (val_map: multi-label's mean average precision; val_macro_f1: both)
TASK_MONITORS = {"single": ("val_loss", "val_acc", "val_bal_acc", "val_macro_f1"),
                 "multilabel": ("val_loss", "val_map", "val_macro_f1")}


@dataclass
class EarlyStoppingConfig:
    """Stop a phase when its validation figure has not improved for `patience` epochs (Keras's EarlyStopping)."""

    monitor: str = _opt("off", choices=("off", *MONITORS))
    patience: int = _opt(5, min=1, help="epochs without an improvement larger than min_delta")
    min_delta: float = _opt(0.0, min=0.0, help="smallest change that counts as an improvement")


@dataclass
class TrainConfig:
    epochs: int = _opt(50, min=1)
    batch_size: int = _opt(64, min=1)
    eval_batch_size: int = _opt(1000, min=1, help="images per evaluation or feature-extraction batch; lowered for "
                                                  "large images (64 at 224×224) so memory stays bounded")
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: str = _opt("constant", choices=("constant", "cosine"))
    warmup_epochs: int = _opt(0, min=0)
    label_smoothing: float = _opt(0.0, min=0.0, max=0.9, help="one class an image: the target's ε spread over "
                                                               "the classes; multi-label: each 0/1 target moved "
                                                               "toward ½ by ε/2")
    loss: str = _opt("auto", choices=LOSSES,
                     help="ce (softmax cross-entropy: one class an image), bce (sigmoid + binary cross-entropy: "
                          "multi-label) or asl (asymmetric loss, Ridnik et al. 2021: multi-label with many easy "
                          "negatives); auto: the task's (ce or bce)")
    asl_gamma_neg: float = _opt(4.0, min=0.0, max=10.0, help="asl: focusing on negatives (γ−)")
    asl_gamma_pos: float = _opt(0.0, min=0.0, max=10.0, help="asl: focusing on positives (γ+)")
    asl_clip: float = _opt(0.05, min=0.0, max=0.5, help="asl: the probability margin m that shifts negatives")
    thresholds: str = _opt("f1", choices=THRESHOLD_MODES,
                           help="multi-label: each class's decision threshold, chosen on the validation split "
                                "(never the test split) to maximise its F1; fixed: 0.5 for every class")
    class_weights: str = _opt("none", choices=CLASS_WEIGHTS,
                              help="weigh each class in the training loss: balanced (inverse frequency) or "
                                   "effective (Cui et al. 2019's effective number, β = class_weights_beta)")
    class_weights_beta: float = _opt(0.999, gt=0.0, max=0.99999,
                                     help="β of train.class_weights: effective (→ 1: inverse frequency)")
    mixup: float = _opt(0.0, min=0.0, max=10.0,
                        help="mixup: blend each training image with another of the batch, the weight drawn "
                             "from Beta(α, α) (α, e.g. 0.2–1; 0: off); the loss weighs both labels")
    cutmix: float = _opt(0.0, min=0.0, max=10.0,
                         help="CutMix: paste a box of another image of the batch, its area from Beta(α, α) "
                              "(α, e.g. 1; 0: off); with mixup too, each batch takes one of the two")
    mix_prob: float = _opt(1.0, min=0.0, max=1.0, help="the share of training batches that mixup / CutMix mix "
                                                        "(the others are left as they are)")
    tta: str = _opt("off", choices=TTA_MODES,
                    help="test-time augmentation for validation, test and predictions: flip averages the "
                         "logits of each image and its mirror; flip_shift also those of both moved one pixel "
                         "up-left and down-right (6 views, 3× flip's cost)")
    accumulate: int = _opt(1, min=1, max=1024,
                           help="cut each batch into this many slices, one forward/backward each, their gradients "
                                "summed before one optimizer step: 1/N of the activation memory, the same update "
                                "(training/steps.py)")
    grad_clip: float = _opt(0.0, min=0.0, help="clip the gradients' global L2 norm to this value before each "
                                               "optimizer step (0: off)")
    ema: float = _opt(0.0, min=0.0, max=0.9999,
                      help="exponential moving average of the weights, decay per step (e.g. 0.999; 0: off); "
                           "validation, test and the saved weights use the average (training/ema.py)")
    channels_last: bool = _opt(True, help="channels-last memory format (CUDA and CPU; faster convolutions)")
    amp: str = _opt("auto", choices=("auto", "bf16", "fp16", "off"),
                    help="mixed precision (training/runtime.py): auto = bf16 on CUDA GPUs of compute capability "
                         ">= 8.0 and on CPUs with native bf16 (AVX512-BF16, AMX), fp16 with a gradient scaler on "
                         "older GPUs (T4, V100), fp32 elsewhere; bf16 or fp16 = that on CUDA and any CPU; off = fp32")
    compile: bool = _opt(False, help="torch.compile the model")
    threads: int = _opt(0, min=0, help="CPU threads of a run (0: every core; seeds trained together share them "
                                       "out and record their share here). BatchNorm's CPU reductions depend on "
                                       "it, so a run is reproduced exactly with the same value")
    feature_cache: bool = _opt(True, help="frozen backbone, no augmentation: compute features once, reuse "
                                          "them across epochs, seeds and heads")
    engine: str = _opt("auto", choices=ENGINES,
                       help="what extracts a frozen backbone's features: auto (OpenVINO, then ONNX Runtime on a "
                            "CPU when installed, else PyTorch), torch, openvino or onnxruntime")
    feature_cache_dir: str | None = _opt(None, help="default: $CNNLAB_CACHE/features or ~/.cache/cnnlab/features")
    phases: list[PhaseConfig] = _opt([], help="fine-tuning policy; empty: one phase, everything trainable, "
                                             "train.epochs long. With phases, the run lasts their total epochs")
    keep_best: str = _opt("off", choices=("off", *MONITORS),
                          help="test (and save) the weights of the epoch with the best validation figure; "
                               "off: the last epoch's, as the lab did")
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    calibration: str = _opt("temperature", choices=CALIBRATIONS,
                            help="after training, fit one temperature on the validation split (never the test "
                                 "split) that predict, serve and exported graphs divide the logits by; accuracy "
                                 "is unchanged; none: the raw softmax")
    conformal_score: str = _opt("lac", choices=CONFORMAL_SCORES,
                                help="the non-conformity score of conformal prediction sets (predict --coverage): "
                                     "lac (1 - p: the smallest sets; measured on the birds at 90 %: 92-93 % "
                                     "coverage with 1.1-1.2 classes), aps (adaptive: a hard image gets a larger set; "
                                     "answered deterministically it over-covers: 97 % with 1.6) or raps (aps + "
                                     "raps_lambda per rank beyond raps_k)")
    raps_lambda: float = _opt(0.01, min=0.0, max=1.0, help="RAPS's penalty per rank beyond raps_k")
    raps_k: int = _opt(1, min=0, help="RAPS: the ranks that cost no penalty")
    reject_score: str = _opt("energy", choices=REJECT_SCORES,
                             help="the score of the 'unknown' rule (predict --reject-rate): energy (temperature × "
                                  "logsumexp of the logits / temperature; measured on the birds against CIFAR "
                                  "images: AUROC 0.98, 7-12 % of them accepted) or msp (the maximum softmax "
                                  "probability: 0.89-0.93, 38-53 %; a little better against unseen species)")

    @property
    def total_epochs(self) -> int:
        """train.epochs, or with phases, their sum."""
        return sum(p.epochs for p in self.phases) if self.phases else self.epochs


@dataclass
class LogConfig:
    """Experiment trackers fed every epoch besides metrics.csv (optional extras: cnnlab[tensorboard], cnnlab[mlflow])."""

    trackers: list[str] = _opt([], item_choices=TRACKERS,
                               help="tensorboard: events in each seed folder's tensorboard/; mlflow: params, "
                                    "metrics and figures to an MLflow tracking store")
    mlflow_uri: str | None = _opt(None, help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db, a local file)")


@dataclass
class ExperimentConfig:
    """Everything that defines a run; saved resolved in every run folder."""

    model: str = _opt("basenet", help="a name from `cnnlab list`")
    model_args: dict = _opt({}, help="keyword arguments for the model builder")
    # Keras initialises kernels Glorot-uniform and biases to zero; PyTorch uses Kaiming-uniform
    # with a uniform bias. The lab's figures came from Keras, so its presets use "keras".
    init: str = _opt("keras", choices=("keras", "torch"))
    name: str | None = _opt(None, help="experiment name used for the run folder (default: model)")
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    task: str = _opt("auto", choices=TASKS, help="single (one class an image) or multilabel (several, possibly "
                                                 "none); auto: what the data holds. A run records the task")
    seeds: list[int] = _opt([1], item_range=SEED_RANGE)
    seeds_together: str = _opt("auto", choices=("auto", "on", "off"),
                               help="train the seeds at once in worker processes, the cores shared out between "
                                    "them (auto: images held in memory, on a GPU, or on a CPU with at least 2 "
                                    "cores for a small model: where one run cannot keep the device busy; "
                                    "$CNNLAB_SEEDS_TOGETHER, when set, is auto's answer)")
    device: str = _opt("auto", choices=DEVICES)
    out: str = _opt("runs", help="parent folder of the run folders")

    @property
    def experiment_name(self) -> str:
        return self.name or self.model


# --------------------------------------------------------------------------- loading

def _yaml_lines(text: str) -> dict[str, int]:
    """Map each dotted key of a YAML mapping to its 1-based line, for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key + ".")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is tuple:
        args = typing.get_args(tp)
        return f"a list of {len(args)} {_describe(args[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping", type(None): "null"}.get(tp, str(tp))


@dataclass(frozen=True)
class ModelSpec:
    """The model a run builds, read once from `model` and `model_args`: its name, its builder's arguments,
    and for a model on a pretrained backbone the backbone and weights (defaults in one place:
    catalogue.DEFAULT_BACKBONE, weights "default"). `shape_only()` is the one way to build it without
    reading or downloading weights (a preflight, a summary, trained tensors about to replace them)."""

    name: str
    args: dict
    pretrained: bool

    @classmethod
    def of(cls, model: str, model_args: dict | None) -> "ModelSpec":
        return cls(model, dict(model_args or {}), model in PRETRAINED_MODELS)

    @property
    def backbone(self) -> str | None:
        if "backbone" in self.args:
            return str(self.args["backbone"])
        return DEFAULT_BACKBONE if self.pretrained else None

    @property
    def weights(self) -> str:
        return str(self.args.get("weights", "default")) if self.pretrained else "none"

    def shape_only(self) -> dict:
        """Builder arguments that give the same architecture without reading or downloading weights."""
        return {**self.args, "weights": "none"} if self.pretrained else dict(self.args)


RESERVED_MODEL_ARGS = ("num_classes", "in_channels", "image_size")  # set by the data, never by model_args


def model_spec(cfg: "ExperimentConfig") -> ModelSpec:
    return ModelSpec.of(cfg.model, cfg.model_args)


def _model_args_rules(cfg, reader) -> None:
    """model_args, checked as the file is read: keys the data sets, and the types of a pretrained model's."""
    for key in RESERVED_MODEL_ARGS:
        if key in cfg.model_args:
            reader.fail(f"model_args.{key}", "set by the data (data.num_classes, the images' channels, "
                                             "data.image_size), not by model_args")
    spec = model_spec(cfg)
    if spec.pretrained:
        for key in ("backbone", "weights"):
            value = cfg.model_args.get(key)
            if value is not None and not isinstance(value, str):
                reader.fail(f"model_args.{key}", f"expected a string, got {value!r}")
        head = cfg.model_args.get("head")
        if head is not None and (not isinstance(head, list) or not all(isinstance(h, str) for h in head)):
            reader.fail("model_args.head", f"expected a list of layer strings (e.g. [\"dense:512\", \"dropout:0.5\"]), "
                                           f"got {head!r}")


# An experiment's options → the configuration keys they set: the one mapping the command line (`--epochs`)
# and the Python API (`Learner.from_experiment(..., epochs=5)`) share; an error about a key names the option.
OPTION_KEYS = {"data": "data.path", "source": "data.source", "epochs": "train.epochs",
               "batch_size": "train.batch_size", "seeds": "seeds", "device": "device", "out": "out",
               "folds": "data.folds", "backbone": "model_args.backbone", "weights": "model_args.weights",
               "log": "log.trackers", "mlflow_uri": "log.mlflow_uri", "seeds_together": "seeds_together",
               "engine": "train.engine"}


def option_overrides(values: dict[str, Any], *, spell=lambda option: f"--{option.replace('_', '-')}"
                     ) -> tuple[dict[str, Any], dict[str, str]]:
    """Options given (None: not given) → (dotted configuration keys, the option each came from, as `spell`
    writes it). An unknown option name is an error listing the known ones."""
    overrides, origins = {}, {}
    for option, value in values.items():
        if value is None:
            continue
        if option not in OPTION_KEYS:
            raise ConfigError(f"unknown option '{option}'; valid: {', '.join(OPTION_KEYS)}")
        key = OPTION_KEYS[option]
        overrides[key], origins[key] = value, spell(option)
    return overrides, origins


class _Reader:
    """Turns a plain dict into typed dataclasses, raising ConfigError with file:line: key."""

    def __init__(self, source: str, lines: dict[str, int], origins: dict[str, str] | None = None):
        self.source, self.lines, self.origins = source, lines, origins or {}

    def fail(self, key: str, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.where(key)}: key '{key}': {message}")

    def where(self, key: str) -> str:
        """What the user wrote that set `key`: an option (`--epochs`), else the file's line."""
        dotted = key.replace("[", ".").replace("]", "")
        probe = dotted
        while probe:  # the key itself or the closest parent that an option set
            if probe in self.origins:
                return self.origins[probe]
            probe = probe.rpartition(".")[0]
        below = sorted(k for k in self.origins if k.startswith(dotted + "."))
        if below:  # an option set a key under this one (`--set train.optimzer.lr=0.1` made 'train.optimzer')
            return self.origins[below[0]]
        probe, line = key, None
        while probe and line is None:  # the line of the key, or of its closest parent that has one
            line = self.lines.get(probe)
            probe = probe.rpartition(".")[0]
        return f"{self.source}:{line}" if line else self.source

    def build(self, cls: type, data: Any, prefix: str = "") -> Any:
        if not isinstance(data, dict):
            self.fail(prefix.rstrip(".") or "<top>", f"expected a mapping, got {data!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            if key not in fields:
                self.fail(dotted, f"unknown key; valid keys here: {', '.join(fields)}")
            kwargs[key] = self.value(hints[key], value, dotted, fields[key].metadata)
        return cls(**kwargs)

    def value(self, tp: Any, value: Any, key: str, meta: typing.Mapping) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, key + ".")
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)][0]
            return self.value(inner, value, key, meta)
        if origin is list:
            if not isinstance(value, list):
                self.fail(key, f"expected {_describe(tp)}, got {value!r}")
            (item_tp,) = typing.get_args(tp)
            low, high = meta.get("item_range") or (None, None)
            items = {"choices": meta.get("item_choices"), "min": low, "max": high}
            return [self.value(item_tp, v, f"{key}[{i}]", items) for i, v in enumerate(value)]
        if origin is tuple:
            args = typing.get_args(tp)
            if not isinstance(value, (list, tuple)) or len(value) != len(args):
                self.fail(key, f"expected {_describe(tp)}, got {value!r}")
            return tuple(self.value(a, v, f"{key}[{i}]", {}) for i, (a, v) in enumerate(zip(args, value)))
        if callable(meta.get("choices")):
            meta = {**meta, "choices": meta["choices"]()}
        if tp is str and isinstance(value, bool) and ("on" if value else "off") in (meta.get("choices") or ()):
            value = "on" if value else "off"  # YAML 1.1 reads an unquoted on/off as true/false
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
            dict: isinstance(value, dict),
        }.get(tp, True)
        if not ok:  # YAML reads `yes`/`on` as true: name the choices, not only the type
            wanted = f"one of {', '.join(map(str, meta['choices']))}" if meta.get("choices") else _describe(tp)
            self.fail(key, f"expected {wanted}, got {value!r}")
        if tp is float:
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                self.fail(key, f"expected a finite number, got {value!r}")
        self.check_range(key, value, meta)
        return value

    def check_range(self, key: str, value: Any, meta: typing.Mapping) -> None:
        choices = meta.get("choices")
        choices = choices() if callable(choices) else choices
        if choices and value not in choices:
            self.fail(key, f"expected one of {', '.join(map(str, choices))}; got {value!r}")
        if meta.get("min") is not None and value < meta["min"]:
            self.fail(key, f"expected a value >= {meta['min']}, got {value!r}")
        if meta.get("max") is not None and value > meta["max"]:
            self.fail(key, f"expected a value <= {meta['max']}, got {value!r}")
        if meta.get("gt") is not None and value <= meta["gt"]:
            self.fail(key, f"expected a value > {meta['gt']}, got {value!r}")


def _set_dotted(data: dict, dotted: str, value: Any, source: str) -> None:
    """Set `a.b.c` in nested mappings; an integer part indexes a list (`train.phases.0.epochs`)."""
    node: Any = data
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{source}: key '{dotted}': '{part}' is not an index of the "
                                  f"{len(node)}-item list at '{'.'.join(parts[:depth])}'")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"{source}: key '{dotted}': '{'.'.join(parts[:depth])}' is not a mapping")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]


def parse_experiment(data: Any, *, source: str = "<config>", text: str | None = None,
                     overrides: dict[str, Any] | None = None, origins: dict[str, str] | None = None
                     ) -> ExperimentConfig:
    """Validate a raw mapping (plus dotted-key overrides) into an ExperimentConfig.

    `origins` names where an override came from (`{"train.epochs": "--epochs"}`), so an
    error blames the option the user typed rather than the file it overrides.
    """
    if data is None:
        data = {}
    reader = _Reader(source, _yaml_lines(text) if text else {}, origins)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = copy.deepcopy(data)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value, source)
    cfg = reader.build(ExperimentConfig, data)
    _cross_key_rules(cfg, reader)
    if "train.epochs" in (overrides or {}) and len(cfg.train.phases) == 1:
        cfg.train.phases[0].epochs = cfg.train.epochs  # one phase: its length is the run's length
    elif "train.epochs" in (overrides or {}) and cfg.train.phases:
        raise ConfigError(f"{reader.where('train.epochs')}: key 'train.epochs': this experiment trains in phases "
                          f"({', '.join(f'{p.name}: {p.epochs}' for p in cfg.train.phases)}); "
                          "set train.phases.N.epochs instead (e.g. --set train.phases.0.epochs=5)")
    return cfg


def _cross_key_rules(cfg: ExperimentConfig, reader: _Reader) -> None:
    """The rules that hold one key against another (each key's own range is its field's `_opt`). Rules that
    need the model or the data are training/checks.py's."""
    _model_args_rules(cfg, reader)
    if not cfg.seeds:
        reader.fail("seeds", "expected at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        reader.fail("seeds", f"seeds must be distinct, got {cfg.seeds}")
    betas = cfg.train.optimizer.betas  # torch's Adam refuses them only when the optimizer is built, mid-run
    if not all(0.0 <= b < 1.0 for b in betas):
        reader.fail("train.optimizer.betas", f"expected two numbers in [0, 1), got {list(betas)}")
    if cfg.data.folds == 1:
        reader.fail("data.folds", "expected 0 (a hold-out split) or 2 to 50 folds, got 1")
    monitors = sorted({cfg.train.keep_best, cfg.train.early_stopping.monitor} - {"off"})
    if monitors and cfg.data.val_fraction == 0 and not cfg.data.folds:
        key = "train.keep_best" if cfg.train.keep_best != "off" else "train.early_stopping.monitor"
        reader.fail(key, f"{', '.join(monitors)} needs a validation split: set data.val_fraction > 0 "
                         "(or data.folds)")


def resolve_experiment_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a built-in experiment (see `cnnlab list`).

    A folder that happens to share a preset's name (`runs/` of an earlier `--out .`, say)
    never hides the preset: only a file, or a name ending in .yaml/.yml, is read as a path.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = BUILTIN_EXPERIMENTS / f"{name_or_path}.yaml"
    if path.suffix not in (".yaml", ".yml") and builtin.is_file():
        return builtin
    if path.suffix in (".yaml", ".yml") or path.exists():
        what = "is a folder, not an experiment file" if path.is_dir() else "experiment file not found"
        raise ConfigError(f"{path}: {what}")
    raise ConfigError(f"no experiment file or built-in experiment named '{name_or_path}'; "
                      f"built-in experiments: {', '.join(list_builtin_experiments())}")


def list_builtin_experiments() -> list[str]:
    return sorted(p.stem for p in BUILTIN_EXPERIMENTS.glob("*.yaml"))


# What one YAML document may expand to through its aliases (`*name`): an experiment file is a few hundred
# nodes; "billion laughs" (aliases of aliases of lists) expands a 1 kB file to 10^9 nodes in memory.
MAX_YAML_NODES = 100_000


def parse_yaml(text: str, source: str) -> Any:
    """YAML text → data, safely (no code), strictly: a key twice in one mapping, an alias expanding past
    MAX_YAML_NODES and syntax errors are one ConfigError naming `source` and the line."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_nodes(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else str(source)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_yaml_nodes(root: yaml.Node, source: str) -> None:
    """Duplicate keys, and the document's size with every alias expanded (counted, never expanded)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: a YAML alias refers to itself (a recursive anchor)")
        active.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise ConfigError(f"{source}:{line}: key '{key.value}' appears twice in one mapping (first on "
                                          f"line {seen[key.value]}); YAML would silently keep the last")
                    seen[key.value] = line
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        active.discard(id(node))
        sizes[id(node)] = total
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: expands to more than {MAX_YAML_NODES:,} values "
                              "through its aliases (*name); refused before reading it")
        return total

    size(root)


def read_yaml(path: Path) -> tuple[Any, str]:
    """Load a YAML file safely and strictly (parse_yaml); errors name the file and line."""
    text = read_text_file(path, what="YAML file", error=ConfigError)
    return parse_yaml(text, str(path)), text


def load_experiment(name_or_path: str | Path | None = None, *, overrides: dict[str, Any] | None = None,
                    origins: dict[str, str] | None = None) -> ExperimentConfig:
    """Load an experiment file (or built-in preset name) and apply dotted-key overrides."""
    if name_or_path is None:
        return parse_experiment({}, overrides=overrides, origins=origins)
    path = resolve_experiment_path(str(name_or_path))
    data, text = read_yaml(path)
    return parse_experiment(data, source=str(path), text=text, overrides=overrides, origins=origins)


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """Plain, YAML-safe dict (tuples become lists) that `parse_experiment` reads back."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        return obj

    return plain(dataclasses.asdict(cfg))


def flat_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The configuration as `section.key` → value (an empty mapping is a value of its own)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = value

    walk(config_to_dict(cfg), "")
    return flat


def save_config(cfg: ExperimentConfig, path: Path, **replace: Any) -> None:
    """Write `cfg` as YAML that `load_experiment` reads back (top-level keys replaced by `replace`)."""
    save_yaml({**config_to_dict(cfg), **replace}, path)


def save_yaml(data: dict, path: Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False))
