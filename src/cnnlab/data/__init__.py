"""Datasets: sources, in-memory image sets, splits, batching and batched preprocessing."""
from cnnlab.data.batches import epoch_generator, iterate_batches, num_batches
from cnnlab.data.images import DataSplits, ImageSet
from cnnlab.data.sources import SOURCES, describe_sources, detect_source, load_splits
from cnnlab.data.split import holdout_split, kfold_splits

__all__ = ["DataSplits", "ImageSet", "SOURCES", "describe_sources", "detect_source", "epoch_generator",
           "holdout_split", "iterate_batches", "kfold_splits", "load_splits", "num_batches"]
