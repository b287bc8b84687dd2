"""Datasets: sources (data/sources/: the built-in ones and the table; cnnlab/datasources.py: what a source is), in-memory
and streamed image sets, splits, batching and batched preprocessing.

Names are imported on first use (cnnlab/lazy.py), so the source modules, which the configuration
and `cnnlab list` import, do not import torch.
"""
from cnnlab.lazy import lazy_exports

_EXPORTS = {
    "epoch_generator": "cnnlab.data.batches", "iterate_batches": "cnnlab.data.batches",
    "num_batches": "cnnlab.data.batches", "DataSplits": "cnnlab.data.images", "ImageSet": "cnnlab.data.images",
    "load_splits": "cnnlab.data.loading", "holdout_split": "cnnlab.data.split", "kfold_splits": "cnnlab.data.split",
    "describe_sources": "cnnlab.data.sources", "detect_source": "cnnlab.data.sources",
    "register_source": "cnnlab.datasources",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
