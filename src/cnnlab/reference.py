"""The lab report's own figures (../shared/spec/LAB.md), shown beside cnnlab's results.

Each entry: the test (loss, accuracy) of every run the lab reported, accuracy as a fraction.
"""
from __future__ import annotations

LAB_RESULTS: dict[str, dict] = {
    "basenet": {"runs": [(3.8687, 0.4260), (4.1393, 0.3972), (3.6088, 0.4176)],
                "note": "Keras, official CIFAR-100 split, 3 runs"},
    "basenet_pp": {"runs": [(1.2123, 0.6528), (1.0908, 0.6816), (1.2021, 0.6532)],
                   "note": "Keras, official CIFAR-100 split, 3 runs"},
    # Experiment 3: one run each, ResNet50 (Keras, Caffe weights) on 200-class CUB-200 (2010).
    "birdnet_v0": {"runs": [(2.3210, 0.4257)], "note": "Keras ResNet50, CUB-200 (2010), 200 classes, 1 run"},
    "birdnet_v1": {"runs": [(2.5046, 0.4049)], "note": "Keras ResNet50, CUB-200 (2010), 200 classes, 1 run"},
    "birdnet_v2": {"runs": [(3.2539, 0.2961)], "note": "Keras ResNet50, CUB-200 (2010), 200 classes, 1 run"},
    "birdnet_v3": {"runs": [(4.7275, 0.2130)], "note": "Keras ResNet50, CUB-200 (2010), 200 classes, 1 run"},
    "birdnet_v4": {"runs": [(2.1333, 0.5018)], "note": "Keras ResNet50, CUB-200 (2010), 200 classes, 1 run"},
}

# The data each lab experiment used: a run compares with the lab's figure as an equal only when
# its data has these sizes (train + validation images, test images, classes).
LAB_DATA: dict[str, dict] = {
    "basenet": {"num_classes": 25, "train_images": 12500, "test_images": 2500},
    "basenet_pp": {"num_classes": 25, "train_images": 12500, "test_images": 2500},
    **{f"birdnet_v{i}": {"num_classes": 200} for i in range(5)},
}
# Where the lab's data comes from: only data read from these sources, with the lab's classes, is the lab's
# (a re-split subset in .npz files, or your own photos, is other data however its sizes compare).
LAB_SOURCES: dict[str, tuple[str, ...]] = {
    "basenet": ("cifar100", "cifar100-folder"), "basenet_pp": ("cifar100", "cifar100-folder"),
    **{f"birdnet_v{i}": ("cub200-2010", "cub200-2011", "cub-lab") for i in range(5)},
}

# The lab's ablation ("Cuadro 3"): one run per step, BaseNet is its 3-run mean.
LAB_ABLATION: dict[str, tuple[float, float]] = {
    "baseline": (3.8723, 0.4136),
    "augment": (1.7321, 0.4860),
    "wide": (1.6450, 0.5532),
    "batchnorm": (1.1583, 0.6476),
    "dropout": (1.2123, 0.6528),
}


def lab_reference(name: str) -> dict | None:
    """The lab's runs for an experiment name, with their mean, or None."""
    entry = LAB_RESULTS.get(name)
    if entry is None:
        return None
    losses, accs = zip(*entry["runs"])
    return {"runs": [{"test_loss": l, "test_acc": a} for l, a in entry["runs"]],
            "mean_test_loss": sum(losses) / len(losses), "mean_test_acc": sum(accs) / len(accs),
            "note": entry["note"]}


def lab_data_kind_matches(name: str, *, source: str, num_classes: int, train_images: int, test_images: int) -> bool:
    """Whether data read by `source` with these classes is the lab's data for experiment `name` (sizes aside)."""
    return source in LAB_SOURCES.get(name, ()) and LAB_DATA.get(name, {}).get("num_classes") == num_classes


def lab_data_differences(name: str, *, num_classes: int, train_images: int, test_images: int) -> list[str]:
    """How data of these sizes differs from the lab's (train + validation images, test images, classes)."""
    found = {"num_classes": num_classes, "train_images": train_images, "test_images": test_images}
    return [f"{key.replace('_', ' ')} {found[key]} (lab {value})" for key, value in LAB_DATA.get(name, {}).items()
            if found[key] != value]


def lab_data_matches(name: str, *, num_classes: int, train_images: int, test_images: int) -> bool:
    """Whether data of these sizes is the data the lab's experiment `name` used."""
    expected = LAB_DATA.get(name)
    found = {"num_classes": num_classes, "train_images": train_images, "test_images": test_images}
    return expected is not None and all(found[key] == value for key, value in expected.items())
