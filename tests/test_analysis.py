"""The numbers behind the figures, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from denselab.reporting import analysis

K = 5
NAMES = ["zero", "one", "two", "three", "four"]


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray]:
    """400 random probability rows over K classes, and labels the argmax mostly agrees with."""
    rng = np.random.default_rng(3)
    targets = rng.integers(0, K, size=400)
    logits = rng.normal(size=(400, K))
    logits[np.arange(400), targets] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


def test_confusion_counts_equal_a_direct_count(predictions):
    probs, targets = predictions
    predicted = probs.argmax(axis=1)
    counts = analysis.confusion_counts(targets, predicted, K)
    for true in range(K):
        for guess in range(K):
            assert counts[true, guess] == np.sum((targets == true) & (predicted == guess))
    assert counts.sum() == len(targets)


def test_confusion_frame_names_rows_true_and_columns_predicted():
    counts = analysis.confusion_counts(np.array([0, 0, 1]), np.array([1, 1, 1]), 2)
    frame = analysis.confusion_frame(counts, ["cat", "dog"])
    assert (
        frame.loc["cat", "dog"] == 2
        and frame.loc["dog", "dog"] == 1
        and frame.loc["cat", "cat"] == 0
    )


def test_most_confused_pairs_are_the_largest_off_diagonal_cells(predictions):
    probs, targets = predictions
    counts = analysis.confusion_counts(targets, probs.argmax(axis=1), K)
    table = analysis.most_confused(counts, NAMES, top_k=5)

    off_diagonal = sorted(
        ((counts[t, p], t, p) for t in range(K) for p in range(K) if t != p), reverse=True
    )
    assert list(table["count"]) == [c for c, _, _ in off_diagonal[:5]]
    for row in table.itertuples():
        true, guess = NAMES.index(row.true), NAMES.index(row.predicted)
        assert true != guess and counts[true, guess] == row.count
        assert row.share_of_true == pytest.approx(row.count / counts[true].sum())
        assert row.mistake == f"{row.true} taken for {row.predicted}"


def test_most_confused_reads_like_the_course_and_skips_pairs_that_never_happened():
    # 4s taken for 9s most often, then 3s for 5s; nothing else goes wrong.
    targets = np.array([4] * 10 + [3] * 10 + [7] * 5)
    predicted = np.array([9] * 6 + [4] * 4 + [5] * 3 + [3] * 7 + [7] * 5)
    counts = analysis.confusion_counts(targets, predicted, 10)
    table = analysis.most_confused(counts, [str(d) for d in range(10)], top_k=5)
    assert list(table["mistake"]) == ["4 taken for 9", "3 taken for 5"]
    assert list(table["share_of_true"]) == pytest.approx([0.6, 0.3])


def test_typical_examples_are_the_argmax_indices(predictions):
    probs, _ = predictions
    indices = analysis.typical_indices(probs)
    assert indices.shape == (K,)
    for k, i in enumerate(indices):
        assert probs[i, k] == probs[:, k].max()


def test_confident_mistakes_are_wrong_and_most_confident_first(predictions):
    probs, targets = predictions
    indices = analysis.confident_mistakes(probs, targets, top_k=16)
    predicted = probs.argmax(axis=1)
    assert len(indices) == 16
    assert all(predicted[i] != targets[i] for i in indices)
    confidence = probs[indices, predicted[indices]]
    assert np.all(np.diff(confidence) <= 0)
    wrong = predicted != targets
    assert confidence[-1] >= np.sort(probs.max(axis=1)[wrong])[-16]


def test_weight_tiles_are_the_reshaped_weight_rows():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(128, 28 * 28))
    tiles = analysis.weight_tiles(weights, (28, 28), units=16)
    assert tiles.shape == (16, 28, 28)
    for unit in range(16):
        assert np.array_equal(tiles[unit].ravel(), weights[unit])
    assert tiles[3, 2, 5] == weights[3, 2 * 28 + 5]  # row-major, like the flattened input

    rgb = analysis.weight_tiles(rng.normal(size=(17, 8 * 8 * 3)), (8, 8, 3))
    assert rgb.shape == (17, 8, 8, 3)


def test_rgb_tiles_are_scaled_to_the_unit_interval_each_on_its_own():
    tiles = np.stack([np.linspace(-2, 6, 12).reshape(2, 2, 3), np.full((2, 2, 3), 0.5)])
    scaled = analysis.scale_per_tile(tiles)
    assert scaled[0].min() == 0.0 and scaled[0].max() == 1.0
    assert np.allclose(scaled[0].ravel(), np.linspace(0, 1, 12))
    assert np.all(scaled[1] == 0.0)  # a flat tile has no range to stretch


def test_class_metrics_recall_is_the_diagonal_over_the_row_sums(predictions):
    probs, targets = predictions
    table = analysis.class_metrics(probs, targets, NAMES)
    counts = analysis.confusion_counts(targets, probs.argmax(axis=1), K)
    assert list(table["class"]) == NAMES
    assert table["recall"].to_numpy() == pytest.approx(np.diag(counts) / counts.sum(axis=1))
    assert table["precision"].to_numpy() == pytest.approx(np.diag(counts) / counts.sum(axis=0))
    p, r = table["precision"].to_numpy(), table["recall"].to_numpy()
    assert table["f1"].to_numpy() == pytest.approx(2 * p * r / (p + r), rel=1e-5)
    assert list(table["support"]) == list(counts.sum(axis=1))


def test_class_samples_are_random_members_of_each_class():
    targets = np.array([0] * 30 + [1] * 3 + [2] * 30)
    samples = analysis.class_sample_indices(targets, per_class=10, num_classes=3, seed=1)
    assert [len(s) for s in samples] == [10, 3, 10]  # class 1 has only three images
    for k, indices in enumerate(samples):
        assert np.all(targets[indices] == k) and len(set(indices)) == len(indices)
    again = analysis.class_sample_indices(targets, per_class=10, num_classes=3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(samples, again))
    (only,) = analysis.class_sample_indices(targets, 20, num_classes=3, seed=1, classes=[2])
    assert len(only) == 20 and np.all(targets[only] == 2)


@pytest.mark.parametrize(
    "max_epochs, every", [(1, 1), (10, 1), (20, 1), (21, 2), (100, 5), (-1, 1)]
)
def test_image_series_is_every_epoch_for_short_runs(max_epochs, every):
    assert analysis.image_series_every(max_epochs) == every
