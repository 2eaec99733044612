"""Benchmarks the report and the GPU check print: the Table 3 context modules, and the training step on one device.

Modules: ``modules`` (the DVC stage ``bench``, ``grar bench modules``: parameters,
FLOPs, peak memory and latency of every head on Table 3's input), ``training``
(``grar bench train``: images/s, peak memory and finite losses of the training
step of Eq. 6).

May import: the shared ground (``pipeline/*.py``), ``model`` and ``pipeline.training``
(the model and criterion builders, the training step).
"""
