"""The command-line contract: `cnnlab run|ablation|compare|summary|list|resume ...`.

Only argparse and the configuration's lists are imported here, so `cnnlab --help` is fast.
Values are checked once, by the configuration, whose errors name the option typed.
"""
from __future__ import annotations

import argparse

from cnnlab.config import DEVICES, ENGINES
from cnnlab.version import __version__

def number(kind: type = int, *, at_least: float | None = None, above: float | None = None,
           at_most: float | None = None):
    """An argparse `type` that reads an int (or float) and checks its range, so every option of every command
    is refused before any work starts, in argparse's one error line (`argument --top-k: expected ...`)."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if at_least is not None and value < at_least:
            raise argparse.ArgumentTypeError(f"expected {what} >= {at_least}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"expected {what} > {above}, got {text}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"expected {what} <= {at_most}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


# ONNX opsets the exporters of the supported torch releases write (torch.onnx: 7..23; cnnlab's graphs need 13+
# for per-channel quantisation and dynamic shapes).
OPSETS = (13, 23)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="experiment YAML file (or a built-in preset name)")
    p.add_argument("--data", metavar="PATH", help="dataset folder or file (layout detected), hf:OWNER/NAME[:CONFIG] "
                                                  "(a Hugging Face Hub dataset), or the CIFAR-100 cache folder")
    p.add_argument("--source", metavar="NAME", help="dataset layout: auto (default) or a name of `cnnlab list sources`")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--batch-size", type=int, metavar="N")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="one independent training per seed")
    p.add_argument("--seeds-together", metavar="auto|on|off",
                   help="train the seeds at once, one process each, the cores split between them (auto: for "
                        "images held in memory, on a GPU, or on a CPU of 2+ cores for a small model; off: one "
                        "after another)")
    p.add_argument("--device", metavar="NAME", help=f"{', '.join(DEVICES)} (default: auto)")
    p.add_argument("--out", metavar="DIR", help="parent folder for run folders (default: runs)")
    p.add_argument("--folds", type=int, metavar="K",
                   help="k-fold cross-validation on the training set instead of the hold-out split")
    p.add_argument("--backbone", metavar="NAME",
                   help="pretrained backbone of a BirdNet: one of cnnlab's (resnet50, efficientnet_lite0, ...), "
                        "timm/NAME[.TAG] or torchvision/NAME (`cnnlab list backbones PATTERN`)")
    p.add_argument("--weights", metavar="default|none|PATH",
                   help="backbone weights: default (downloaded once by the backbone's library), none (random "
                        "init), an entry name, or a local file / Hub-style folder (machines without internet)")
    p.add_argument("--engine", metavar="NAME", help=f"what runs a frozen backbone to extract its features (a phase that "
                                                    f"trains a head on cached features); training itself is always "
                                                    f"PyTorch: {', '.join(ENGINES)} (default: auto, the fastest "
                                                    "installed)")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="recompute a frozen backbone's features every epoch instead of caching them")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override configuration keys, e.g. --set train.optimizer.lr=3e-4 train.epochs=5 "
                        "(one or more; repeatable)")
    p.add_argument("--log", action="append", metavar="TRACKER",
                   help="also log to tensorboard or mlflow (repeatable; pip install \"cnnlab[tensorboard]\" "
                        "or \"cnnlab[mlflow]\")")
    p.add_argument("--mlflow-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")


def _add_study_options(p: argparse.ArgumentParser) -> None:
    """What a study built on an experiment takes besides its own options (tune, lr-find): `run`'s
    experiment options, mapped to the same keys (config.OPTION_KEYS)."""
    p.add_argument("--data", metavar="PATH", help="dataset folder or file (layout detected), or hf:OWNER/NAME")
    p.add_argument("--source", metavar="NAME", help="dataset layout: auto (default) or a name of `cnnlab list sources`")
    p.add_argument("--backbone", metavar="NAME", help="pretrained backbone of a BirdNet (as `cnnlab run --backbone`)")
    p.add_argument("--weights", metavar="default|none|PATH", help="backbone weights (as `cnnlab run --weights`)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--batch-size", type=int, metavar="N")
    p.add_argument("--engine", metavar="NAME", help=f"what runs a frozen backbone to extract its features (training "
                                                    f"is PyTorch): {', '.join(ENGINES)}")
    p.add_argument("--out", metavar="DIR", help="parent folder (default: runs)")
    p.add_argument("--device", metavar="NAME", help=f"{', '.join(DEVICES)} (default: auto)")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="recompute a frozen backbone's features every epoch instead of caching them")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override configuration keys (one or more; repeatable)")


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    """Where and how a trained model runs on images: predict's and ood's options."""
    p.add_argument("--device", metavar="NAME", default="auto", help=f"{', '.join(DEVICES)} (default: auto)")
    p.add_argument("--engine", metavar="NAME", default="auto",
                   help=f"what runs the network: {', '.join(ENGINES)} (default: auto, the fastest installed: "
                        "OpenVINO, then ONNX Runtime on a CPU; an exported .onnx / .xml needs one of them)")
    p.add_argument("--batch-size", type=number(at_least=1), default=64, metavar="N")
    p.add_argument("--workers", type=number(at_least=0), default=None, metavar="N",
                   help="decoding processes (default: cores - 1)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Train, fine-tune and compare image classifiers with honest numbers.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="train a model over one or more seeds and report mean ± std",
                         description="Train MODEL (or the model named in --config) on each seed, evaluate on "
                                     "the test split and print the results table. Options override the file.")
    run.add_argument("model", nargs="?", metavar="MODEL", help="a model or preset from `cnnlab list`")
    _add_run_options(run)

    summary = sub.add_parser("summary", help="print a Keras-style model summary",
                             description="Layers with output shapes and parameter counts; trainable and "
                                         "non-trainable totals counted the way Keras counts them.")
    summary.add_argument("model", metavar="MODEL")
    summary.add_argument("--num-classes", type=number(at_least=2), default=None, metavar="N")
    summary.add_argument("--config", metavar="FILE", help="take model_args from this experiment file")
    summary.add_argument("--backbone", metavar="NAME")

    ablation = sub.add_parser(
        "ablation", help="train each cumulative improvement step over N seeds and test each gain",
        description="Run an ablation (a built-in one such as basenet_pp, or --config FILE listing the steps): "
                    "every step over N seeds (or K folds), then a table of mean ± std per step with a "
                    "Welch t-test and a bootstrap interval of each step's gain over the previous one.")
    ablation.add_argument("ablation", nargs="?", metavar="NAME", help="built-in ablation (basenet_pp)")
    _add_run_options(ablation)

    compare = sub.add_parser(
        "compare", help="run several experiments over the same seeds and print one table",
        description="Each EXPERIMENT (a preset such as birdnet_v0 ... birdnet_v4, birdnet_recipe, or a YAML file) "
                    "runs with the same options; --classic adds scikit-learn heads on the cached features.")
    compare.add_argument("experiments", nargs="+", metavar="EXPERIMENT")
    compare.add_argument("--classic", nargs="*", default=[], metavar="HEAD",
                         help="classic heads on pooled features: logreg, linear_svm, knn")
    _add_run_options(compare)

    predict = sub.add_parser(
        "predict", help="class probabilities of a trained model for image files and folders",
        description="Run a trained model (a seed folder, an experiment folder or a model.safetensors file) on "
                    "images and folders of images; print the top-k classes and write them as CSV "
                    "(path, pred_1, prob_1, ...; a multi-label model adds its labels). Images in class folders named like "
                    "the classes also give accuracy.")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS")
    predict.add_argument("--top-k", type=number(at_least=1), default=5, metavar="K")
    predict.add_argument("--out", metavar="CSV", help="where to write the CSV (default: predictions.csv, never "
                                                      "overwriting: predictions-1.csv, ...)")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--seed", type=number(at_least=0), metavar="S", help="the seed of an experiment folder to use")
    which.add_argument("--ensemble", action="store_true", help="average the probabilities of every seed")
    _add_inference_options(predict)
    predict.add_argument("--strict", action="store_true", help="an unreadable image is an error (default: skipped)")
    predict.add_argument("--coverage", type=number(float, above=0.0, at_most=0.9999), metavar="P",
                         help="add each image's conformal prediction set: the classes that hold the true one with "
                              "probability >= P (e.g. 0.9), calibrated on the run's validation split (a 'set' column)")
    predict.add_argument("--reject-rate", type=number(float, at_least=0.0, at_most=0.9999), metavar="R",
                         help="answer 'unknown' for images less familiar than the R least familiar share of the "
                              "validation images (e.g. 0.05: accepts 95 %% of them; a 'decision' column)")
    predict.add_argument("--all-classes", action="store_true",
                         help="add every class's probability to the CSV (p_<class> columns); a multi-label model's "
                              "CSV always has a 'labels' column: the classes at or above their thresholds")

    audit = sub.add_parser(
        "audit", help="find mislabeled images, duplicates and train/test leaks, and outliers in a dataset",
        description="Read DATA as `cnnlab run --data DATA` would (the same split), extract a backbone's features "
                    "(cached), then: label issues from K-fold out-of-fold probabilities and confident learning "
                    "(cleanlab); exact and near duplicates within and across splits (perceptual hash, feature "
                    "similarity); outliers (far in feature space, near-blank, tiny, extreme aspect). Writes CSVs, "
                    "thumbnails and a page into runs/audit/<time>/; nothing under DATA is changed.")
    audit.add_argument("data", metavar="DATA", help="a dataset folder or file, or hf:OWNER/NAME (as --data of run)")
    audit.add_argument("--backbone", metavar="NAME", help="whose features (default: efficientnet_lite0, offline)")
    audit.add_argument("--weights", metavar="default|none|PATH", help="the backbone's weights (as run's --weights)")
    audit.add_argument("--folds", type=number(at_least=2, at_most=50), default=5, metavar="K",
                       help="folds of the out-of-fold predictions (default 5)")
    audit.add_argument("--similar", type=number(float, above=0.0, at_most=1.0), default=0.92, metavar="COSINE",
                       help="feature cosine similarity from which two images are called duplicates (default 0.92: "
                            "measured with efficientnet_lite0 on photos; another backbone may need another)")
    audit.add_argument("--source", metavar="NAME", help="dataset layout: auto (default) or a name of `cnnlab list sources`")
    audit.add_argument("--out", metavar="DIR", help="parent folder of the audit folder (default: runs)")
    audit.add_argument("--write-split", metavar="FILE.csv",
                       help="also write a path,label,split CSV without the flagged training/validation images and "
                            "leaked copies (test split unchanged); `cnnlab run --data FILE.csv` trains on it")
    audit.add_argument("--relabel", action="store_true",
                       help="with --write-split: keep flagged images under their suggested label instead of dropping them")
    audit.add_argument("--device", metavar="NAME", help=f"{', '.join(DEVICES)} (default: auto)")
    audit.add_argument("--engine", metavar="NAME", help=f"what extracts the features: {', '.join(ENGINES)} (default: auto)")
    audit.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                       help="configuration keys, e.g. --set data.split_seed=1 data.image_size=288")
    audit.add_argument("--no-progress", action="store_true")

    ood = sub.add_parser(
        "ood", help="how well a trained model's 'unknown' rule tells its classes from foreign images",
        description="Score the run's test split (in-distribution) and the images under --images (classes the "
                    "model never saw) with the maximum softmax probability and the energy score; print AUROC, "
                    "the false-positive rate at 95 %% true-positive rate, and what the run's rule "
                    "(--reject-rate, chosen on validation) accepts of each.")
    ood.add_argument("run_dir", metavar="RUN_DIR")
    ood.add_argument("--images", nargs="+", required=True, metavar="IMAGES_OR_FOLDERS",
                     help="images of classes outside the model's (files or folders, searched recursively)")
    ood.add_argument("--seed", type=number(at_least=0), metavar="S", help="the seed of an experiment folder to use")
    ood.add_argument("--reject-rate", type=number(float, at_least=0.0, at_most=0.9999), default=0.05, metavar="R",
                     help="the rule measured: refuse what scores below this share of validation images (default 0.05)")
    ood.add_argument("--out", metavar="JSON", help="also write the figures to this JSON file (never overwritten)")
    _add_inference_options(ood)

    export = sub.add_parser(
        "export", help="export a trained model (ONNX or OpenVINO, fp32 or int8) and check it",
        description="Write the trained model as ONNX (or OpenVINO IR) with a dynamic batch size, its classes, "
                    "preprocessing and test-time views in its metadata, then run it on test images and compare "
                    "with PyTorch. --int8 quantises it, calibrated on training images, and reports both "
                    "accuracies on the test split.")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", choices=("onnx", "openvino"), default="onnx")
    export.add_argument("--out", metavar="FILE", help="default: model.onnx (model.xml + .bin) in the run folder")
    export.add_argument("--int8", action="store_true", help="static int8 quantisation (QDQ), calibrated on the "
                                                            "run's training images")
    export.add_argument("--calibration", type=number(at_least=1), default=300, metavar="N", help="training images calibrating "
                                                                                  "int8 (default 300, seeded)")
    export.add_argument("--int8-tolerance", type=number(float, at_least=0.0, at_most=100.0), default=1.0, metavar="POINTS",
                        help="refuse int8 when it loses more test accuracy than this (default 1.0 point)")
    export.add_argument("--force", action="store_true", help="keep the int8 graph whatever it loses")
    export.add_argument("--seed", type=number(at_least=0), metavar="S", help="the seed of an experiment folder to export")
    export.add_argument("--uint8-input", action="store_true",
                        help="take uint8 NHWC pixels and preprocess inside the graph")
    export.add_argument("--opset", type=number(at_least=OPSETS[0], at_most=OPSETS[1]), default=17)

    tune = sub.add_parser(
        "tune", help="search hyperparameters on validation with Optuna, then test tuned against untuned",
        description="Trials of EXPERIMENT sample the keys of SPACE.yaml (Optuna's TPE, seeded), train on the "
                    "training split and are judged on validation only (pruned early by ASHA or the median rule); "
                    "the study lives in the study folder's SQLite file (or --storage) and the same command continues "
                    "it. Then best.yaml is retrained beside the untuned experiment over --final-seeds and only then "
                    "tested: one table with the gain, Welch's p and a bootstrap interval.")
    tune.add_argument("experiment", metavar="EXPERIMENT", help="a preset or an experiment file")
    tune.add_argument("--space", required=True, metavar="SPACE.yaml", help="configuration keys → ranges")
    tune.add_argument("--trials", type=number(at_least=1), default=20, metavar="N", help="finished trials wanted (default 20)")
    tune.add_argument("--timeout", type=number(float, above=0.0), default=None, metavar="MIN", help="stop starting trials after MIN")
    tune.add_argument("--workers", type=number(at_least=1, at_most=256), default=1, metavar="K", help="trials at once on this machine")
    tune.add_argument("--storage", metavar="URL", help="Optuna RDB storage shared by workers on several machines "
                                                       "(default: sqlite in the study folder)")
    tune.add_argument("--pruner", default="asha", metavar="asha|median|none")
    tune.add_argument("--seeds", type=number(at_least=0, at_most=2 ** 32 - 1), nargs="+", default=[], metavar="S", help="each trial's seeds (mean); "
                                                                                    "default the experiment's first")
    tune.add_argument("--final-seeds", type=number(at_least=0, at_most=2 ** 32 - 1), nargs="+", default=[1, 2, 3], metavar="S")
    tune.add_argument("--study", metavar="NAME", help="the study's name (default EXPERIMENT-SPACE)")
    tune.add_argument("--skip-final", action="store_true", help="run trials only (extra workers of a shared study)")
    tune.add_argument("--no-progress", action="store_true")
    _add_study_options(tune)

    lrfind = sub.add_parser(
        "lr-find", help="the learning-rate range test: a plot and a suggested learning rate",
        description="Train EXPERIMENT's first phase (or --phase N) for ~100 steps while the learning rate grows "
                    "exponentially, plot the smoothed loss and suggest the rate of its steepest descent; the "
                    "model is left as it was. Then: cnnlab run EXPERIMENT --set train.optimizer.lr=...")
    lrfind.add_argument("experiment", metavar="EXPERIMENT")
    lrfind.add_argument("--phase", type=number(at_least=0), default=0)
    lrfind.add_argument("--start", type=number(float, above=0.0), default=1e-7)
    lrfind.add_argument("--end", type=number(float, above=0.0), default=10.0)
    lrfind.add_argument("--steps", type=number(at_least=5, at_most=100_000), default=100)
    _add_study_options(lrfind)

    serve = sub.add_parser(
        "serve", help="serve a trained model: an HTTP API (POST /v1/predict) and a web page",
        description="Load RUN_DIR (a seed or experiment folder with --seed, or an exported .onnx / .xml) once and "
                    "answer POST /v1/predict (multipart 'file', repeated; ?top_k=N), GET /v1/model, GET /healthz, "
                    "and a page at / to drop photos on; API docs at /docs. Concurrent requests are batched.")
    serve.add_argument("run_dir", metavar="RUN_DIR|MODEL_FILE")
    serve.add_argument("--seed", type=number(at_least=0), metavar="S", help="the seed of an experiment folder to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=number(at_least=1, at_most=65535), default=8000)
    serve.add_argument("--engine", metavar="NAME", default="auto",
                       help=f"what runs the network for each request: {', '.join(ENGINES)} (default: auto, the fastest "
                            "installed: OpenVINO, then ONNX Runtime on a CPU; an exported .onnx / .xml needs one of them)")
    serve.add_argument("--workers", type=number(at_least=1, at_most=64), default=1, help="server processes, each with its own model")
    serve.add_argument("--max-batch", type=number(at_least=1, at_most=4096), default=32, metavar="N", help="images batched into one forward")
    serve.add_argument("--max-wait-ms", type=number(float, at_least=0.0, at_most=60_000.0), default=10.0, metavar="MS",
                       help="how long a request waits for others to share its batch (default 10 ms)")

    interpret = sub.add_parser(
        "interpret", help="confusion matrix, per-class figures, top losses and Grad-CAM of a finished run",
        description="Recompute the interpretation files of a seed folder (or of every seed of an experiment "
                    "folder, then pooled) on its test split; --gradcam N adds gradcam.png for N test images.")
    interpret.add_argument("run_dir", metavar="RUN_DIR")
    interpret.add_argument("--gradcam", type=number(at_least=0), default=0, metavar="N", help="Grad-CAM maps of N test images")
    interpret.add_argument("--layer", metavar="NAME", help="the layer Grad-CAM explains (default: the backbone's "
                                                           "last layer with a feature map)")

    report = sub.add_parser(
        "report", help="one self-contained HTML (or Markdown) report of runs, experiments, ablations, comparisons",
        description="Tables, learning curves, confusion matrix, per-class figures, top losses, Grad-CAM, "
                    "configuration and environment of each PATH, read from its files; several PATHs are shown "
                    "side by side. The HTML file has its images and CSS inside: it opens offline and prints to PDF.")
    report.add_argument("paths", nargs="+", metavar="PATH",
                        help="a seed folder, an experiment, ablation or comparison folder")
    report.add_argument("--out", metavar="FILE", help="default: report.html in PATH (or here, for several PATHs)")
    report.add_argument("--format", choices=("html", "md"), default=None,
                        help="html (default) or md: Markdown with the images in a folder beside it")

    listing = sub.add_parser("list", help="list models, experiment presets, backbones and data sources",
                             description="Everything cnnlab offers by name; `cnnlab list backbones PATTERN` also "
                                         "lists the timm and torchvision models whose names contain PATTERN.")
    listing.add_argument("what", nargs="?", choices=("backbones", "sources"), help="only the backbones, or only the "
                         "data sources")
    listing.add_argument("pattern", nargs="?", metavar="PATTERN",
                         help="with backbones: the zoos' names containing PATTERN (a glob with * for timm)")

    probe = sub.add_parser(
        "probe", help="which backbone for your data: a linear probe on each one's cached features, one table",
        description="For each backbone, its features are extracted once (cached) and a linear probe (the V0 head) "
                    "trains on them over the seeds; one table of validation and test accuracy, ImageNet top-1, "
                    "parameters, multiply-adds and extraction speed, and a recommendation chosen on validation "
                    "only. Images are sized as each backbone's weights expect unless --set data.* says otherwise.")
    probe.add_argument("--backbones", nargs="+", required=True, metavar="NAME")
    probe.add_argument("--classic", nargs="*", default=[], metavar="HEAD",
                       help="also classic heads on the same features: logreg, linear_svm, knn")
    _add_run_options(probe)

    resume = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint",
                            description="RUN_DIR is a seed folder (…/seed-1), an experiment folder or an "
                                        "ablation folder; everything unfinished that it belongs to is finished.")
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument("--device", metavar="NAME", help=f"{', '.join(DEVICES)} (default: the run's own)")
    resume.add_argument("--no-progress", action="store_true")
    return parser
