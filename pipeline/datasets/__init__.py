"""Datasets: download and verify archives, extract them safely, and convert each dataset (or generate the
embedded one) into the canonical layout ``data/<name>/{train,val}/{images,labels}/`` + ``classes.csv``.

Modules: ``layout`` (the canonical layout: the contract every reader relies on,
the class-table reader, the ignore index, the class colours), ``download`` (resumable, verified
downloads; the archives of each dataset), ``extract`` (safe extraction),
``prepare`` (a dataset into the layout, atomically; the sources' fingerprint),
``common`` (what the converters share), one converter per dataset
(``ade20k``, ``pascal_context``, ``coco_stuff``, ``folder`` for your own),
``embedded`` (the synthetic dataset of the embedded profile).

May import: the shared ground (``pipeline/*.py``); nothing else of the project.
"""
