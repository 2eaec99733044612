"""Counting t = P^T P and pixels over label PNGs; every bad input is a DataError naming the file and value."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from stats_toy import LABELS, PIXELS, REPO, T, write_label

from pipeline.errors import DataError
from pipeline.stats import counting
from pipeline.stats.counting import count_labels, find_labels


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_by_hand(toy_labels, workers):
    counts = count_labels(find_labels(toy_labels, 5), workers)
    np.testing.assert_array_equal(counts.t, T)
    np.testing.assert_array_equal(counts.pixels, PIXELS)
    assert counts.images == 4
    assert counts.t.dtype == np.int64


def test_digest_is_the_documented_one_for_any_chunking(toy_labels, monkeypatch):
    expected = hashlib.sha256()
    for stem in sorted(LABELS):
        data = (toy_labels / f"{stem}.png").read_bytes()
        expected.update(f"{stem}.png".encode() + b"\0" + hashlib.sha256(data).digest())
    expected.update(b"table bytes")
    labels = find_labels(toy_labels, 5)
    digests = {count_labels(labels, workers, extra=b"table bytes").sha256 for workers in (1, 2)}
    monkeypatch.setattr(counting, "CHUNK_MAX", 3)  # chunks of 3 + 1 files
    digests.add(count_labels(labels, 1, extra=b"table bytes").sha256)
    assert digests == {expected.hexdigest()}


def test_digest_changes_with_a_label(toy_labels):
    before = count_labels(find_labels(toy_labels, 5)).sha256
    write_label(toy_labels / "c.png", [[0, 0, 0], [3, 3, 3], [3, 3, 2]])
    assert count_labels(find_labels(toy_labels, 5)).sha256 != before


def test_palette_labels_count_indices_not_colours(tmp_path):
    write_label(tmp_path / "p.png", [[0, 1, 1], [2, 2, 255]], mode="P")
    counts = count_labels(find_labels(tmp_path, 3))
    np.testing.assert_array_equal(counts.pixels, [1, 2, 2])
    np.testing.assert_array_equal(counts.t, [[1, 1, 1], [1, 1, 1], [1, 1, 1]])


def test_other_ignore_index(tmp_path):
    write_label(tmp_path / "a.png", [[0, 7, 7], [1, 1, 7], [0, 0, 0]])
    counts = count_labels(find_labels(tmp_path, 2, ignore_index=7))
    np.testing.assert_array_equal(counts.pixels, [4, 2])


@pytest.mark.parametrize("workers", [1, 2])
def test_value_not_a_class_names_file_and_value(toy_labels, workers):
    with pytest.raises(
        DataError,
        match=r"b\.png: label value 3 \(25 pixels\) is neither a class id \(0\.\.2\) "
        r"nor the ignore index 255",
    ):
        count_labels(find_labels(toy_labels, 3), workers)


def test_ignore_index_is_the_only_exception(toy_labels):
    # With K = 4 and class 3 declared the ignore index, d.png's 255 is out of range.
    with pytest.raises(DataError, match=r"d\.png: label value 255 \(7 pixels\)"):
        count_labels(find_labels(toy_labels, 3, ignore_index=3))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "I;16", "1"])
def test_colour_or_wide_label_is_refused(tmp_path, mode):
    write_label(tmp_path / "x.png", [[0, 1, 0]], mode=mode)
    with pytest.raises(DataError, match=rf"x\.png: label image has mode '{mode}'.*not colours"):
        count_labels(find_labels(tmp_path, 3))


def test_truncated_png(toy_labels):
    data = (toy_labels / "b.png").read_bytes()
    (toy_labels / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"b\.png: unreadable or truncated PNG"):
        count_labels(find_labels(toy_labels, 5))


def test_not_a_png(toy_labels):
    (toy_labels / "b.png").write_text("not an image")
    with pytest.raises(DataError, match=r"b\.png: unreadable or truncated PNG"):
        count_labels(find_labels(toy_labels, 5))


def test_label_and_image_sizes_must_match(toy_labels):
    images = toy_labels.parent / "images"
    images.mkdir()
    for stem, values in LABELS.items():
        height, width = np.asarray(values).shape
        Image.new("RGB", (width, height)).save(images / f"{stem}.jpg")
    assert count_labels(find_labels(toy_labels, 5, images=images)).images == 4
    Image.new("RGB", (7, 6)).save(images / "c.jpg")
    with pytest.raises(DataError, match=r"c\.png: label size 3x3 differs from its image .*c\.jpg \(7x6\)"):
        count_labels(find_labels(toy_labels, 5, images=images))
    (images / "c.jpg").unlink()
    Image.new("RGB", (3, 3)).save(images / "c.png")
    assert count_labels(find_labels(toy_labels, 5, images=images)).images == 4
    (images / "c.png").unlink()
    with pytest.raises(DataError, match=r"c\.png: no image c\.jpg or c\.png in"):
        count_labels(find_labels(toy_labels, 5, images=images))


def test_empty_or_missing_split(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "note.jpg").write_text("a JPEG is not a label")
    with pytest.raises(DataError, match="no label PNGs .* empty split"):
        find_labels(tmp_path / "labels", 5)
    with pytest.raises(DataError, match="label folder not found"):
        find_labels(tmp_path / "nowhere", 5)


def test_chunks_cover_files_in_order(toy_labels):
    labels = find_labels(toy_labels, 5)
    for workers in (1, 2, 3):
        chunks = list(counting.split_chunks(labels, workers))
        assert [name for chunk in chunks for name in chunk.files] == ["a.png", "b.png", "c.png", "d.png"]


def test_real_ade20k_labels_match_a_naive_count():
    """Three real ADE20K label maps (raw ids: 0 = other, 1..150) against np.unique / np.bincount."""
    folder = REPO / "tests" / "fixtures" / "ade20k_sample" / "ADEChallengeData2016" / "annotations" / "validation"
    t = np.zeros((151, 151), np.int64)
    pixels = np.zeros(151, np.int64)
    for path in sorted(folder.glob("*.png")):
        label = np.asarray(Image.open(path))
        present = np.unique(label)
        t[np.ix_(present, present)] += 1
        pixels += np.bincount(label.ravel(), minlength=151)
    counts = count_labels(find_labels(folder, 151), 2)
    np.testing.assert_array_equal(counts.t, t)
    np.testing.assert_array_equal(counts.pixels, pixels)
    assert counts.images == 3 and counts.pixels.sum() == 683 * 512 + 500 * 364 + 400 * 300
