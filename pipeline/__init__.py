"""grar: the pipeline around the GRAr model (config, data, statistics, training, grids, reports)."""

__version__ = "0.1.0"
