"""Training and inference of one run: the model built from params, the loop, its checkpoints, evaluation, prediction.

Modules: ``build`` (model, criterion and the training step from params: parts by
name, pretrained weights, GRAr's affinity and the SR-Loss weights from the
statistics), ``data`` (reading a prepared split, joint augmentation, batches),
``losses`` (SR-Loss, Eq. 5-6, and the weighted terms), ``distributed`` (devices,
DDP, SyncBatchNorm, bf16 autocast), ``loop`` (the training loop: optimiser,
schedule, signals), ``checkpoint`` (``checkpoint.pt``, ``train_log.csv``,
divergence and preemption), ``inference`` (``infer``, the one inference
function, and the run's val evaluation, single scale and multi-scale + flip),
``run`` (a run's life cycle: ``run_cell`` and ``load_run``), ``predict``
(``grar predict``: label maps for new images).

May import: the shared ground (``pipeline/*.py``), ``model``, ``pipeline.datasets.layout``,
``pipeline.stats`` (the statistics files and Eq. 1) and ``pipeline.scores`` (confusion
counts). Imports torch; nothing outside this folder may import it at module level
where a command must answer without torch (``grar grid status``).
"""
