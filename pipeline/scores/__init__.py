"""Scoring predictions: confusion matrices and mIoU, per-image counts, the paired bootstrap, and each grid's scores.

Modules: ``metrics`` (the confusion matrix, mIoU as in FCN, pixel and mean
accuracy), ``per_image`` (the sparse per-image confusion files of a run),
``bootstrap`` (the paired bootstrap over images and seeds behind every stated
difference), ``grid_scores`` (the DVC stage ``evaluate``: each grid cell's mean
scores, its interval against the FCN, and the training curves), ``folders``
(``grar evaluate``: a folder of PNG predictions against a folder of label maps).

Torch-free. May import: the shared ground (``pipeline/*.py``),
``pipeline.datasets.layout`` and ``pipeline.cluster.index`` (the grid indexes).
"""
