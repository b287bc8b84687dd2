"""The record that travels with trained weights and exported graphs, checked field by field.

`Learner.inference_record` writes it into `model.safetensors`' metadata; `cnnlab export` copies it into the
ONNX graph's metadata or the OpenVINO IR's runtime info. Whoever reads one back — `load_trained`, an exported
graph, `predict`, `serve` — goes through `check_record`, so a damaged or hostile record is one line naming
the file and the field, never a tensor of 100,000 × 100,000 pixels or a division by a zero std.
"""
from __future__ import annotations

import cnnlab.records as records
from cnnlab.errors import CheckpointError

# What the record beside trained weights must hold (Learner.inference_record writes it; an exported graph
# carries it too): every field checked before it sizes a tensor, picks a filter or normalises a pixel.
MAX_SIDE = 4096  # pixels: a record asking for 100,000 × 100,000 images is refused, not allocated
RECORD_SCHEMA = {
    "model": records.text(), "model_args": records.optional(records.mapping()),
    "class_names": records.texts(min_len=1, max_len=1_000_000),
    "input_size": records.list_of(records.integer(at_least=1, at_most=MAX_SIDE), length=3),
    "resize": records.choice("stretch", "crop", default="stretch"),
    "crop_ratio": records.number(above=0.0, at_most=1.0, default=0.875),
    "interpolation": records.choice("bilinear", "bicubic", "nearest", "lanczos", default="bilinear"),
    "mean": records.optional(records.list_of(records.number(at_least=-1e6, at_most=1e6), min_len=1, max_len=4)),
    "std": records.optional(records.list_of(records.number(above=0.0, at_most=1e6), min_len=1, max_len=4)),
    "tta": records.optional(records.text()), "uint8_input": records.optional(records.boolean()),
    "experiment": records.optional(records.text()), "seed": records.optional(records.integer(at_least=0)),
    "trust": records.optional(records.mapping()),  # checked field by field by trust.Trust.from_record
    # multi-label (several labels an image): each class's threshold, chosen on the run's validation split
    "task": records.choice("single", "multilabel", default="single"),
    "thresholds": records.optional(records.list_of(records.number(at_least=0.0, at_most=1.0), min_len=1,
                                                   max_len=1_000_000)),
}


def check_record(record, source) -> dict:
    """The record of trained weights or of an exported graph, checked field by field (cnnlab/records.py)."""
    record = records.check(record, RECORD_SCHEMA, source, what="the record of a trained model")
    channels = record["input_size"][0]
    if channels not in (1, 3, 4):
        raise CheckpointError(f"{source}: field 'input_size': expected 1, 3 or 4 channels first, got {channels}")
    if record["input_size"][1] != record["input_size"][2]:
        raise CheckpointError(f"{source}: field 'input_size': expected square images, got {record['input_size']}")
    if record["task"] == "multilabel" and (record["thresholds"] is None
                                           or len(record["thresholds"]) != len(record["class_names"])):
        raise CheckpointError(f"{source}: field 'thresholds': a multi-label model needs one threshold per class "
                              f"({len(record['class_names'])}), got {record['thresholds']}")
    for name in ("mean", "std"):
        if record[name] is not None and len(record[name]) != channels:
            raise CheckpointError(f"{source}: field '{name}': expected one value per channel ({channels}), "
                                  f"got {record[name]}")
    return record
