"""Supporters and opponents of every class, read off the affinity ``f`` (section 3.2).

For a class j, class i != j is a *supporter* when it co-occurs with j
(``t_ij > 0``); supporters are ranked by the support they give j, ``f[i, j]``,
largest first. *Opponents* are the classes giving j the least support, ranked
by ``f[i, j]`` smallest first, classes that never co-occur with j first.

Ties are broken deterministically:

- supporters: larger ``f_ij``, then larger ``t_ij`` (more evidence), then smaller id i;
- opponents: never co-occurring before co-occurring, then smaller ``f_ij``, then
  larger ``t_ii`` (a class seen often yet never with j opposes it more clearly
  than a rare one), then smaller id i.

At most ``top_k`` of each are kept; a class with fewer than ``top_k``
co-occurring classes has fewer supporters, and a class absent from the split
has none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROLES = ("supporter", "opponent")


def rank_supporters(t: np.ndarray, f: np.ndarray, top_k: int) -> list[tuple[int, str, int, int]]:
    """Rows ``(j, role, rank, i)`` (rank from 1) for every class j, supporters before opponents."""
    k = t.shape[0]
    images = np.diag(t)  # (K,)
    rows: list[tuple[int, str, int, int]] = []
    for j in range(k):
        others = np.array([i for i in range(k) if i != j], np.int64)
        tij, fij = t[others, j], f[others, j]
        # np.lexsort sorts by the last key first.
        supporters = others[np.lexsort((others, -tij, -fij))]
        supporters = supporters[t[supporters, j] > 0][:top_k]
        opponents = others[np.lexsort((others, -images[others], fij, tij > 0))][:top_k]
        for role, ranked in zip(ROLES, (supporters, opponents)):
            rows += [(j, role, rank, int(i)) for rank, i in enumerate(ranked, start=1)]
    return rows


def supporters_frame(t: np.ndarray, f: np.ndarray, names: list[str], top_k: int) -> pd.DataFrame:
    """The table of ``supporters.parquet`` (columns documented in ``pipeline.stats``)."""
    rows = rank_supporters(t, f, top_k)
    j = np.array([row[0] for row in rows], np.int32)
    i = np.array([row[3] for row in rows], np.int32)
    return pd.DataFrame(
        {
            "j": j,
            "j_name": pd.array([names[x] for x in j], dtype="string"),
            "role": pd.array([row[1] for row in rows], dtype="string"),
            "rank": np.array([row[2] for row in rows], np.int32),
            "i": i,
            "i_name": pd.array([names[x] for x in i], dtype="string"),
            "f": f[i, j].astype(np.float64),
            "t": t[i, j].astype(np.int64),
        }
    )
