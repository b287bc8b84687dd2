"""Datasets: sources (cnnlab/datasources.py is their table, data/sources/ the built-in ones), in-memory
and streamed image sets, splits, batching and batched preprocessing.

Names are imported on first use (cnnlab/lazy.py), so the source modules, which the configuration
and `cnnlab list` import, do not import torch.
"""
from cnnlab.lazy import lazy_exports

_EXPORTS = {
    "epoch_generator": "cnnlab.data.batches", "iterate_batches": "cnnlab.data.batches",
    "num_batches": "cnnlab.data.batches", "DataSplits": "cnnlab.data.images", "ImageSet": "cnnlab.data.images",
    "load_splits": "cnnlab.data.loading", "holdout_split": "cnnlab.data.split", "kfold_splits": "cnnlab.data.split",
    "describe_sources": "cnnlab.datasources", "detect_source": "cnnlab.datasources",
    "register_source": "cnnlab.datasources",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
