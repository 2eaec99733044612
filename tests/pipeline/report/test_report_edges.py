"""Prior vs learned edges: a conv run's e^p and e^n from its checkpoint beside f, rank correlations."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.report.edges import NEGATIVE, POSITIVE, learned_vs_prior, off_diagonal_spearman
from pipeline.stats.affinity import cluster_order, frequency

# t of four classes: 0 and 1 always together, 2 and 3 together, the two pairs seldom.
T = np.array([[10, 9, 1, 2], [9, 12, 2, 1], [1, 2, 8, 6], [2, 1, 6, 9]], np.int64)


def write_run(folder, positive, negative, normalisation="conditional"):
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"stats": {"normalisation": normalisation}}))
    torch.save(
        {
            "model": {
                POSITIVE: torch.tensor(positive, dtype=torch.float32),
                NEGATIVE: torch.tensor(negative, dtype=torch.float32),
            }
        },
        folder / "checkpoint.pt",
    )


@pytest.fixture
def cooccurrence(tmp_path):
    i, j = np.divmod(np.arange(16), 4)
    path = tmp_path / "cooccurrence.parquet"
    pq.write_table(pa.table({"i": i, "j": j, "t": T[i, j]}), path)
    return path


def test_spearman_off_the_diagonal():
    a = np.array([[9.0, 1, 2], [3, 9, 4], [5, 6, 9]])
    assert off_diagonal_spearman(a, a + 100 * np.eye(3)) == pytest.approx(1.0)  # the diagonal does not count
    assert off_diagonal_spearman(a, -a) == pytest.approx(-1.0)


def test_learned_edges_beside_f_in_cluster_order(tmp_path, cooccurrence):
    f = frequency(T, "conditional")
    write_run(tmp_path / "run", positive=f**2, negative=f)  # e^p ranks as f; e^n ranks as f, against 1 - f
    edges = learned_vs_prior(tmp_path / "run", cooccurrence, ["a", "b", "c", "d"])
    order, _ = cluster_order(T)
    assert edges.order.tolist() == order.tolist() and edges.names == [["a", "b", "c", "d"][c] for c in order]
    assert np.allclose(edges.prior, f[np.ix_(order, order)]) and edges.normalisation == "conditional"
    assert np.allclose(edges.positive, (f**2)[np.ix_(order, order)], atol=1e-6)
    assert edges.rho_positive == pytest.approx(1.0) and edges.rho_negative == pytest.approx(-1.0)


def test_a_graph_run_has_no_learned_edges(tmp_path, cooccurrence):
    (tmp_path / "run").mkdir()
    torch.save({"model": {"head.reasoning.affinity": torch.eye(4)}}, tmp_path / "run" / "checkpoint.pt")
    assert learned_vs_prior(tmp_path / "run", cooccurrence, list("abcd")) is None
