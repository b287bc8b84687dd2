"""A trained model ready for inference: `load_trained(RUN_DIR, model.safetensors, model.onnx or model.xml)`.

`model.safetensors` carries, as JSON in its metadata, the model's name and arguments, the
class names, the input size, how images of another size are resized, and the normalisation
(fitted mean/std included, which BaseNet++ needs): the file alone predicts correctly. An exported
graph (`cnnlab export`: ONNX, OpenVINO IR, int8 or not) carries the same record, so it predicts and
serves the same way without PyTorch's model. `engine` says what runs the network (engines.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

import cnnlab.layout as layout
from cnnlab.config import TTA_MODES, ModelSpec, PreprocessConfig
from cnnlab.data.preprocess import BatchPreprocessor
from cnnlab.errors import CheckpointError, RunError
from cnnlab.inference.record import check_record
from cnnlab.fileio import read_state_file
from cnnlab.models import Classifier, create_model, get_model_entry
from cnnlab.engines import compile_module, resolve_engine
from cnnlab.training.loop import tta_logits
from cnnlab.training.allocator import keep_freed_memory
from cnnlab.training.device import resolve_device
from cnnlab.trust import Trust

WEIGHTS_FILE = layout.WEIGHTS_FILE


@dataclass
class TrainedModel:
    model: Classifier | None  # None for an exported graph (then `forward` runs it)
    record: dict  # what train wrote beside the weights (see Learner.inference_record)
    source: Path
    device: torch.device
    engine: str = "torch"
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the network's logits, on `engine`

    @property
    def class_names(self) -> list[str]:
        return self.record["class_names"]

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.record["input_size"])  # type: ignore[return-value]

    @property
    def mean(self) -> list[float] | None:
        return self.record.get("mean")

    @property
    def std(self) -> list[float] | None:
        return self.record.get("std")

    def __post_init__(self) -> None:
        mean = None if self.mean is None else torch.tensor(self.mean)
        std = None if self.std is None else torch.tensor(self.std)
        self._preprocessor = BatchPreprocessor(PreprocessConfig(), mean, std)  # no augmentation
        if self.forward is None:
            self.forward = self.model
        # what the run fitted on its validation split (trust/): the temperature every probability is divided
        # by, the conformal scores of --coverage, the rule of --reject-rate; None for weights before 0.13
        self.trust = Trust.from_record(self.record.get("trust"), self.source)

    @property
    def multilabel(self) -> bool:
        """Several labels an image: sigmoid probabilities, each class decided at its own threshold."""
        return self.record.get("task") == "multilabel"

    @property
    def thresholds(self) -> torch.Tensor | None:
        """A multi-label model's threshold per class (chosen on the run's validation split); None otherwise."""
        return torch.tensor(self.record["thresholds"], dtype=torch.float32) if self.multilabel else None

    def labels(self, images) -> list[list[str]]:
        """A multi-label model's answer: each image's classes whose probability reaches their threshold, most
        likely first (an empty list: none of them)."""
        return self.labels_of(self.probabilities(images).cpu())

    def labels_of(self, probabilities: torch.Tensor) -> list[list[str]]:
        """The labels of probabilities already computed (N, classes)."""
        if not self.multilabel:
            raise RunError(f"{self.source}: a single-label model answers one class an image (predict); labels "
                           "above thresholds are a multi-label model's")
        above = probabilities >= self.thresholds
        return [[self.class_names[i] for i in row.argsort(descending=True).tolist() if hit[i]]
                for row, hit in zip(probabilities, above)]

    def require_trust(self, what: str) -> Trust:
        """The run's trust record, or one line saying why `what` cannot be answered."""
        if self.multilabel:
            raise RunError(f"{self.source}: {what} is a single-label model's (one class an image); a multi-label "
                           "model answers each image's labels above the thresholds chosen on its validation split")
        if self.trust is None:
            raise RunError(f"{self.source}: {what} needs the scores the run fitted on its validation split, and its "
                           "record holds none (trained by cnnlab before 0.13, or without a validation split: "
                           "retrain with data.val_fraction > 0)")
        return self.trust

    @property
    def uint8_input(self) -> bool:
        """An exported graph that scales and normalises inside itself takes uint8 NHWC pixels."""
        return bool(self.record.get("uint8_input"))

    def use_engine(self, engine: str) -> "TrainedModel":
        """Run the network on `engine` (auto: the fastest installed for the device), compiled once here."""
        resolved = resolve_engine(engine, self.device)
        if self.model is None:  # an exported graph: its engine was chosen when it was loaded
            return self
        if resolved != "torch":
            self.model.to("cpu").eval()
            self.forward = compile_module(self.model, torch.zeros(2, *self.input_size), resolved)
        self.engine = resolved
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW images at the input size → the batch the network takes (float, normalised; or the
        uint8 NHWC pixels of a graph that preprocesses inside itself)."""
        if self.uint8_input:
            return images.permute(0, 2, 3, 1).contiguous()
        return self._preprocessor(images.to(self.device), train=False)

    @property
    def tta(self) -> str:
        """The test-time augmentation the run tested with (train.tta); predictions do the same."""
        tta = self.record.get("tta", "off")
        return tta if tta in TTA_MODES else "off"  # written by a later cnnlab: fall back to the plain view

    def pixels(self, images) -> torch.Tensor:
        """Paths, PIL images, numpy arrays or tensors (one or many; inference/inputs.py) → the uint8 NCHW
        batch at the input size, resized as the weights expect (the resize `cnnlab predict` applies)."""
        from cnnlab.inference.inputs import pixels

        return pixels(images, size=self.input_size[1], resize=self.record.get("resize", "stretch"),
                      crop_ratio=self.record.get("crop_ratio", 0.875),
                      interpolation=self.record.get("interpolation", "bilinear"))

    def batch_of(self, images) -> torch.Tensor:
        """A uint8 NCHW batch at the input size as it is; anything else through `pixels`."""
        is_batch = (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4
                    and tuple(images.shape[1:]) == tuple(self.input_size))
        return images if is_batch else self.pixels(images)

    def probabilities(self, images) -> torch.Tensor:
        """Class probabilities (N, classes) as the run was tested, for image files, PIL images, numpy arrays or
        tensors of any size (see inference/inputs.py); `cnnlab predict` answers the same for the same files."""
        return self.batch_probabilities(self.batch_of(images))

    def predict(self, images, *, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Each image's `top_k` (class name, probability) pairs, most likely first."""
        probabilities = self.probabilities(images).cpu()
        k = min(top_k, len(self.class_names))
        values, index = probabilities.topk(k, dim=1)
        return [[(self.class_names[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
                for row_p, row_i in zip(values, index)]

    def prediction_sets(self, images, *, coverage: float = 0.9) -> list[list[str]]:
        """Each image's conformal set of class names for `coverage`, most likely first (`cnnlab predict
        --coverage`): calibrated on the run's validation split (trust/conformal.py)."""
        trust = self.require_trust("a prediction set")
        return [[self.class_names[i] for i in s] for s in trust.sets(self.probabilities(images).cpu(), coverage)]

    def decisions(self, images, *, reject_rate: float = 0.05) -> list[str]:
        """Each image's top class, or 'unknown' where it is less familiar than the `reject_rate` least familiar
        validation images (`cnnlab predict --reject-rate`; trust/rejection.py)."""
        trust = self.require_trust("an 'unknown' decision")
        logits = self.batch_logits(self.batch_of(images)).cpu()
        return [self.class_names[int(row.argmax())] if ok else "unknown"
                for row, ok in zip(logits, trust.accepted(logits, reject_rate))]

    @torch.no_grad()
    def batch_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The network's raw logits (float32, averaged over train.tta's views) for a uint8 NCHW batch."""
        if self.uint8_input:  # the views (whole-pixel flips and shifts) are made of the pixels, then fed as uint8
            pixels = images.to(self.device).float()
            graph = lambda view: self.forward(view.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous())  # noqa: E731
            return tta_logits(graph, pixels, self.tta)
        return tta_logits(self.forward, self.preprocess(images), self.tta)

    def logits_to_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of raw logits: divided by the run's temperature first, if it fitted one; a
        multi-label model's are each class's sigmoid (they need not sum to 1)."""
        if self.multilabel:
            return torch.sigmoid(logits.float())
        return self.trust.probabilities(logits) if self.trust is not None else torch.softmax(logits.float(), dim=1)

    def batch_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (calibrated softmax of the logits) for a uint8 NCHW batch at the input size."""
        return self.logits_to_probabilities(self.batch_logits(images))


def _read_record(path: Path) -> dict:
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:
        raise CheckpointError(f"{path}: not a readable safetensors file") from None
    if "cnnlab" not in metadata:
        raise CheckpointError(f"{path}: holds no record of its model and preprocessing (written by cnnlab "
                              "before 0.2, or not by cnnlab); retrain it, or load the tensors with safetensors")
    try:
        record = json.loads(metadata["cnnlab"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: its record is not valid JSON ({exc})") from None
    return check_record(record, path)


EXPORTED_SUFFIXES = (".onnx", ".xml")  # cnnlab export's ONNX graphs and OpenVINO IR


def trained_runs(path: Path) -> list[Path]:
    """The weights files under PATH: itself, a run folder's, or every finished seed of an experiment folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / WEIGHTS_FILE).is_file():
        return [path / WEIGHTS_FILE]
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder or weights file")
    found = sorted(path.glob(f"*/{WEIGHTS_FILE}"), key=lambda p: p.parent.name)
    if not found:
        raise RunError(f"{path}: no trained weights here ({WEIGHTS_FILE} in it or in its seed folders); "
                       "is the run finished?")
    return found


def pick_run(path: Path, seed: int | None, choose: str = "--seed S, or average them with --ensemble") -> Path:
    """One weights file: the seed asked for, or the only one. `choose`: what the calling command offers."""
    runs = trained_runs(path)
    if seed is not None:
        chosen = [r for r in runs if r.parent.name in (layout.seed_folder(seed), layout.fold_folder(seed))]
        if not chosen:
            raise RunError(f"{path}: no finished seed {seed}; found {', '.join(r.parent.name for r in runs)}")
        return chosen[0]
    if len(runs) > 1:
        raise RunError(f"{path} holds {len(runs)} trained runs ({', '.join(r.parent.name for r in runs)}): "
                       f"choose one with {choose}")
    return runs[0]


def load_trained(path: str | Path, *, seed: int | None = None, device: str | torch.device = "cpu",
                 engine: str = "torch", choose: str = "seed=S") -> TrainedModel:
    """The trained model at PATH (a weights file, a run folder, an experiment folder with `seed`, or an
    exported .onnx / OpenVINO .xml graph), its network run by `engine`."""
    if Path(path).suffix.lower() in EXPORTED_SUFFIXES and Path(path).is_file():
        from cnnlab.inference.exported import graph_engine

        record, resolved, forward = graph_engine(Path(path), engine)
        return TrainedModel(None, record, Path(path), torch.device("cpu"), engine=resolved, forward=forward)
    weights = pick_run(Path(path), seed, choose)
    record = _read_record(weights)
    get_model_entry(record["model"])  # an unknown model is named here
    args = ModelSpec.of(record["model"], record.get("model_args")).shape_only()  # the trained tensors replace
    # the pretrained ones: nothing to read or download
    channels, height, _ = record["input_size"]
    model = create_model(record["model"], num_classes=len(record["class_names"]), in_channels=channels,
                         image_size=height, **args)
    state = read_state_file(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit model '{record['model']}' "
                              f"({str(exc).splitlines()[0]})") from None
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type == "cpu":
        keep_freed_memory()  # large activations reuse freed memory (training/allocator.py)
    return TrainedModel(model.to(device).eval(), record, weights, device).use_engine(engine)


def run_data(trained: TrainedModel):
    """The data the run was trained on, read again from its recorded configuration (test split exact)."""
    from cnnlab.config import load_experiment
    from cnnlab.data.loading import load_splits
    from cnnlab.models import model_preprocessing

    config = trained.source.parent / "config.yaml"
    if not config.is_file():
        raise RunError(f"{trained.source.parent}: no config.yaml beside the weights; the run's data is unknown")
    cfg = load_experiment(config)
    return load_splits(cfg.data, model_preprocessing(cfg.model, cfg.model_args), log=lambda s: None,
                       default_size=trained.input_size[1])
