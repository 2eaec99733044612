"""Class colours, the same in every figure, label map and overlay grar writes (no matplotlib: cheap to import).

``palette``: the PASCAL VOC bit-interleaving colour map shifted by one, so no
class is black; black is the ignore index.
"""

from __future__ import annotations

import numpy as np

from pipeline.datasets.layout import IGNORE_INDEX


def palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours: class c gets the PASCAL VOC colour of index c + 1 (deterministic, distinct)."""
    colours = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        index, rgb = c + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((index >> channel) & 1) << shift
            index >>= 3
        colours[c] = rgb
    return colours


def colourise(label: np.ndarray, colours: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8; the ignore index (and any id beyond the palette) is black."""
    out = np.zeros((*label.shape, 3), np.uint8)  # (H, W, 3)
    known = (label != ignore_index) & (label < len(colours))
    out[known] = colours[label[known]]
    return out
