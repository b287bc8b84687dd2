"""Several labels an image: the figures, the thresholds and the losses of multi-label classification,
as pure functions of logits (or probabilities) and multi-hot targets.

Targets are float32 (N, C) tensors / arrays of 0 and 1; an image with no label at all is a row of
zeros (legitimate: it counts as a negative for every class). The training loop reaches this
package through `training/task.py` (the task is one of the Learner's parts); predict, serve and the
report read the recorded thresholds and the saved predictions.
"""
from cnnlab.multilabel.losses import AsymmetricLoss, MultiLabelBCE, positive_weights
from cnnlab.multilabel.metrics import (EPOCH_SCORES, average_precisions, multilabel_figures, per_class_table,
                                       precision_recall_curve)
from cnnlab.multilabel.thresholds import fit_thresholds

__all__ = ["AsymmetricLoss", "MultiLabelBCE", "positive_weights", "EPOCH_SCORES", "average_precisions",
           "multilabel_figures", "per_class_table", "precision_recall_curve", "fit_thresholds"]
