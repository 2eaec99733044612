"""Supporters and opponents ranked by hand, with every tie-break rule exercised."""

from __future__ import annotations

import numpy as np
from stats_toy import NAMES, T

from pipeline.stats.affinity import frequency
from pipeline.stats.supporters import rank_supporters, supporters_frame


def ranked(t, normalisation, top_k=2):
    """{(j, role): [i, ...]} from ``rank_supporters``."""
    out: dict[tuple[int, str], list[int]] = {}
    for j, role, rank, i in rank_supporters(t, frequency(t, normalisation), top_k):
        out.setdefault((j, role), []).append(i)
        assert rank == len(out[(j, role)])
    return out


def test_printed_supporters_and_opponents_by_hand():
    got = ranked(T, "printed")
    assert got == {
        # sky: grass 2/4; plane and cow tie at 1/4 with t = 1 -> smaller id.
        # Its opponents: boat never co-occurs, then plane (tie with cow -> id).
        (0, "supporter"): [3, 1],
        (0, "opponent"): [4, 1],
        # plane: only sky co-occurs. Never co-occurring: grass (3 images) before cow (1), then boat (0).
        (1, "supporter"): [0],
        (1, "opponent"): [3, 2],
        # cow: sky and grass tie at 1/2 with t = 1 -> smaller id. Opponents: plane (1 image) before boat (0).
        (2, "supporter"): [0, 3],
        (2, "opponent"): [1, 4],
        # grass: sky 2/3, cow 1/3. Opponents: plane, boat.
        (3, "supporter"): [0, 2],
        (3, "opponent"): [1, 4],
        # boat is absent: no supporter; all four never co-occur: sky and grass (3 images, tie -> id).
        (4, "opponent"): [0, 3],
    }


def test_conditional_supporters_by_hand():
    got = ranked(T, "conditional")
    # Into sky: plane 1, cow 1 (tie, t = 1 -> id), grass 2/3. Opponents: boat never, then grass 2/3.
    assert got[(0, "supporter")] == [1, 2] and got[(0, "opponent")] == [4, 3]
    # Into grass: cow 1/1, sky 2/3.
    assert got[(3, "supporter")] == [2, 0]


def test_supporter_ties_prefer_more_evidence():
    # Conditional f[1, 0] = 1/1 and f[2, 0] = 2/2 tie; class 2 has seen it twice.
    t = np.array([[3, 1, 2], [1, 1, 0], [2, 0, 2]])
    got = ranked(t, "conditional", top_k=5)
    assert got[(0, "supporter")] == [2, 1]


def test_top_k_caps_the_lists():
    got = ranked(T, "printed", top_k=1)
    assert all(len(ids) == 1 for ids in got.values())


def test_frame_columns_and_values():
    f = frequency(T, "printed")
    frame = supporters_frame(T, f, NAMES, top_k=2)
    assert list(frame.columns) == ["j", "j_name", "role", "rank", "i", "i_name", "f", "t"]
    first = frame.iloc[0]
    assert (first.j, first.j_name, first.role, first["rank"], first.i, first.i_name, first.f, first.t) == (
        0,
        "sky",
        "supporter",
        1,
        3,
        "grass",
        2 / 4,
        2,
    )
    boat = frame[frame.j == 4]
    assert list(boat.role) == ["opponent", "opponent"] and list(boat.t) == [0, 0] and list(boat.f) == [0.0, 0.0]
    assert len(frame) == 4 + 3 + 4 + 4 + 2  # sky, plane (1 supporter), cow, grass, boat (none)
