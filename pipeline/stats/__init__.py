"""Class co-occurrence statistics (section 3.2, Eq. 1): the affinity graph GRAr's edges are made of.

``grar stats NAME`` (DVC stage ``stats@NAME``) counts the train split of the
prepared dataset ``data/NAME`` into ``artifacts/stats/NAME``; ``grar stats
--labels DIR --num-classes K --out DIR`` counts any folder of label PNGs.

Modules: ``counting`` (decode labels in worker processes, ``t = P^T P``),
``affinity`` (Eq. 1 in its readings, the 0/0 case, the clustering),
``supporters`` (ranking and tie-breaking), ``heatmaps`` (figures), ``svg``
(writing them as SVG text), ``files`` (the files below: names, schemas,
``load_affinity``, ``load_counts``), ``compute`` (one run, written atomically).

May import: the shared ground (``pipeline/*.py``) and ``pipeline.datasets`` (the
layout of a prepared dataset); never torch.

Output folder (written whole or not at all)
-------------------------------------------
``cooccurrence.parquet``: one row per ordered pair (i, j), i = j included,
K * K rows in row-major order (i, then j).

========  =======  =====================================================
column    type     meaning
========  =======  =====================================================
``i``     int32    class id of the supporter
``j``     int32    class id of the supported class
``t``     int64    images holding both i and j (``t`` at i = j: images holding i)
``f``     float64  affinity f[i, j] under the recorded normalisation
                   (Eq. 1 as printed, or P(j | i); see ``affinity``)
========  =======  =====================================================

``classes.parquet``: one row per class, in id order.

==========  =======  =================================================
column      type     meaning
==========  =======  =================================================
``id``      int32    class id, 0..K-1
``name``    string   from the class table (``class_<id>`` without one)
``images``  int64    images holding the class (= t[id, id])
``pixels``  int64    labelled pixels of the class over the split
==========  =======  =================================================

``supporters.parquet``: for every class j, up to ``top_k`` supporters then up
to ``top_k`` opponents (ranking and tie-breaking: ``supporters``).

==========  =======  =================================================
column      type     meaning
==========  =======  =================================================
``j``       int32    the supported (or opposed) class
``j_name``  string   its name
``role``    string   ``supporter`` or ``opponent``
``rank``    int32    1 = strongest
``i``       int32    the supporting (or opposing) class
``i_name``  string   its name
``f``       float64  f[i, j]
``t``       int64    t[i, j]
==========  =======  =================================================

Schema metadata of all three files (text values): ``dataset`` (the dataset
name; in ``--labels`` mode the label folder as given), ``split`` (``train``;
empty in ``--labels`` mode), ``images`` (images counted), ``num_classes`` (K),
``ignore_index``, ``normalisation`` (``printed`` | ``conditional`` | ``row``),
``f_definition`` (the formula in words), ``inputs_sha256`` (SHA-256 over, per
label file in sorted order, its relative path, a NUL byte and the SHA-256 of its
bytes, then the class table's bytes), ``grar_version``; ``supporters.parquet``
adds ``top_k``.

Figures (SVG): ``heatmap.svg``, ``clusters/cluster_NN.svg``,
``bars/classes_AAA-BBB.svg`` (see ``heatmaps``).

``load_affinity(path, num_classes)`` reads ``f`` back for the model;
``load_counts(path, num_classes)`` reads ``t``, from which the trainer
recomputes ``f`` under its own ``stats.normalisation``.
"""

from pipeline.stats.files import load_affinity

__all__ = ["load_affinity"]
