"""The figures render readably for MNIST's ten classes and Flowers' seventeen long names."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.text import Text
from PIL import Image

from denselab.data.flowers import CLASS_NAMES as FLOWER_NAMES
from denselab.reporting import analysis, figures

DIGITS = [str(d) for d in range(10)]
FLOWERS = list(FLOWER_NAMES)  # 17 long names: the hard case for labels
# (class names, one input image's shape): MNIST and the course's 64x64 RGB Flowers.
DATASETS = {"mnist": (DIGITS, (28, 28)), "flowers": (FLOWERS, (64, 64, 3))}


def synthetic(names, shape, n=300, seed=0):
    """Images in [0, 1], labels, probabilities that mostly agree, first-layer weights."""
    rng = np.random.default_rng(seed)
    k = len(names)
    targets = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), targets] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    images = rng.random((n, *shape))
    weights = rng.normal(scale=0.05, size=(k, int(np.prod(shape))))
    return images, targets, probs, weights


def all_figures(names, shape):
    """Each figure's name and a function that draws it."""
    images, targets, probs, weights = synthetic(names, shape)
    counts = analysis.confusion_counts(targets, probs.argmax(axis=1), len(names))
    typical = analysis.typical_indices(probs)
    wrong = analysis.confident_mistakes(probs, targets, 16)
    predicted = probs.argmax(axis=1)
    history = pd.DataFrame(
        {
            "train/loss": [1.0, 0.5, 0.3],
            "val/loss": [1.1, 0.7, 0.6],
            "train/acc": [0.6, 0.8, 0.9],
            "val/acc": [0.5, 0.7, 0.75],
        }
    )
    samples = [images[idx] for idx in analysis.class_sample_indices(targets, 10, len(names))]
    return {
        "confusion": lambda: figures.confusion_figure(
            counts, names, "Confusion matrix, test split"
        ),
        "weights": lambda: figures.weights_figure(
            analysis.weight_tiles(weights, shape), names, "Weights"
        ),
        "typical": lambda: figures.examples_figure(
            images[typical],
            [f"{n}\np = {probs[i, k]:.3f}" for k, (n, i) in enumerate(zip(names, typical))],
            "Typical",
        ),
        "mistakes": lambda: figures.examples_figure(
            images[wrong],
            [
                f"{names[targets[i]]}\n-> {names[predicted[i]]}\np = {probs[i, predicted[i]]:.3f}"
                for i in wrong
            ],
            "Most confident mistakes",
        ),
        "samples": lambda: figures.class_samples_figure(
            samples, names, "10 random training images of each class"
        ),
        "curves": lambda: figures.curves_figure(history, "Training curves"),
    }


def png(fig) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def drawn_tick_labels(ax):
    """The tick labels an axes shows: those of ticks inside its view limits."""
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        pairs = [
            *zip(axis.get_majorticklocs(), axis.get_majorticklabels()),
            *zip(axis.get_minorticklocs(), axis.get_minorticklabels()),
        ]
        slack = (high - low) * 1e-6
        yield from (label for loc, label in pairs if low - slack <= loc <= high + slack)


def visible_texts(fig):
    """Titles, axis labels and drawn tick labels that hold some text (not the counts written
    inside heatmap cells, which sit on the image by design)."""
    fig.canvas.draw()
    texts = [*fig.texts, *(t for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t)]
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        if ax.axison:
            texts += list(drawn_tick_labels(ax))
    unique = {id(t): t for t in texts}.values()  # fig.texts holds the suptitle too
    return [t for t in unique if t.get_visible() and t.get_text().strip()]


@pytest.mark.slow  # draws every figure of three datasets at full size (make test runs it)
@pytest.mark.parametrize("dataset", DATASETS)
def test_figures_render_readably(dataset):
    names, shape = DATASETS[dataset]
    for name, draw in all_figures(names, shape).items():
        fig = draw()
        pixels = png(fig)
        height, width = pixels.shape[:2]
        assert 300 <= width <= 2500 and 250 <= height <= 2500, (name, pixels.shape)
        assert pixels.std() > 0, name

        renderer = fig.canvas.get_renderer()
        frame = fig.bbox
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in visible_texts(fig)]
        for text, box in boxes:  # nothing cut off at the figure's edge
            assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, (name, text)
            assert frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, (name, text)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):  # no label over another
            assert not box_a.overlaps(box_b), (name, a, b)


def test_confusion_matrix_names_both_axes_and_grows_with_the_class_count():
    digits = all_figures(DIGITS, (28, 28))["confusion"]()
    flowers = all_figures(FLOWERS, (64, 64, 3))["confusion"]()
    ax = flowers.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == FLOWERS
    assert [t.get_text() for t in ax.get_yticklabels()] == FLOWERS
    assert len(ax.texts) > 17  # every non-empty cell carries its count
    assert flowers.get_size_inches()[0] > digits.get_size_inches()[0]
    assert flowers.get_size_inches()[1] > digits.get_size_inches()[1]


def test_weight_colours_are_green_positive_purple_negative_white_at_zero():
    tiles = np.zeros((2, 4, 4))
    tiles[0, 0, 0], tiles[0, 0, 1] = 1.0, -1.0
    image = figures.weights_mosaic(tiles, zoom=1).astype(float) / 255
    positive, negative, zero = image[1, 1], image[1, 2], image[2, 2]
    assert positive[1] > positive[0] and positive[1] > positive[2]  # green
    assert negative[0] > negative[1] and negative[2] > negative[1]  # purple
    assert zero == pytest.approx(np.array(to_rgb("white")), abs=0.04)
    assert image.shape == (1 + 4 + 1, 1 + 4 + 1 + 4 + 1, 3)  # two tiles in a row, 1-pixel gaps
    # Near-square, as MLflow's UI shows the series in a square card: 3 x 4, zoom 3.
    assert figures.weights_mosaic(np.zeros((10, 28, 28))).shape == (3 * 88, 3 * 117, 3)
    assert figures.weights_mosaic(np.zeros((16, 8, 8))).shape == (10 * 37, 10 * 37, 3)


def test_rgb_weight_tiles_say_how_they_were_scaled():
    _, _, _, weights = synthetic(FLOWERS, (64, 64, 3))
    fig = figures.weights_figure(analysis.weight_tiles(weights, (64, 64, 3)), FLOWERS, "Weights")
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert figures.RGB_NOTE in texts
    grey = figures.weights_figure(
        analysis.weight_tiles(weights[:, :784], (28, 28)), FLOWERS, "Weights"
    )
    assert figures.RGB_NOTE not in [t.get_text() for t in grey.findobj(Text)]


def test_grey_weight_tiles_share_a_scale_symmetric_about_zero():
    tiles = np.zeros((3, 4, 4))
    tiles[1, 0, 0], tiles[2, 1, 1] = 0.2, -0.5
    fig = figures.weights_figure(tiles, ["a", "b", "c"], "Weights")
    limits = {ax.images[0].get_clim() for ax in fig.axes if ax.images}
    assert limits == {(-0.5, 0.5)}


def test_confusion_matrix_draws_true_classes_down_and_predicted_across():
    # Non-symmetric on purpose: a transposed drawing would move the 7 of "true 0, predicted 2".
    pairs = [(0, 2)] * 7 + [(0, 0)] * 50 + [(1, 0)] * 3 + [(1, 1)] * 40 + [(2, 2)] * 30
    truth = np.zeros((3, 3), dtype=int)
    for true, predicted in pairs:
        truth[true, predicted] += 1
    targets, predicted = np.array(pairs).T
    counts = analysis.confusion_counts(targets, predicted, 3)
    fig = figures.confusion_figure(counts, ["a", "b", "c"], "Confusion")
    ax = fig.axes[0]

    drawn = ax.images[0].get_array()
    assert np.array_equal(drawn.filled(0), truth)
    assert drawn.mask.tolist() == (truth == 0).tolist()  # empty cells stay white
    # each count written in its cell: x = predicted class, y = true class
    cells = [(t.get_position(), t.get_text()) for t in ax.texts]
    written = {(round(y), round(x)): text for (x, y), text in cells}
    assert written == {(t, p): str(n) for (t, p), n in np.ndenumerate(truth) if n}
    assert ax.yaxis_inverted()  # row 0, the first true class, at the top


def test_first_layer_weight_figure_draws_positive_green_negative_purple():
    tiles = np.zeros((1, 4, 4))
    tiles[0, 0, 0], tiles[0, 3, 3] = 0.3, -0.3
    fig = figures.weights_figure(tiles, ["unit 0"], "Weights")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
    ax = next(ax for ax in fig.axes if ax.images and ax.get_title() == "unit 0")

    def colour(row, col):
        x, y = ax.transData.transform((col, row))  # display pixels, y from the bottom
        return pixels[pixels.shape[0] - 1 - int(y), int(x)]

    positive, negative, zero = colour(0, 0), colour(3, 3), colour(1, 2)
    assert positive[1] > max(positive[0], positive[2]) + 0.1  # green
    assert min(negative[0], negative[2]) > negative[1] + 0.1  # purple
    assert zero == pytest.approx(np.array(to_rgb("white")), abs=0.04)
