"""The MLP: shapes and parameter counts from the data, the course's numbers, its losses."""

from __future__ import annotations

import pytest
import torch

from denselab.training.module import MLPClassifier, classification_loss, count_parameters
from denselab.training.network import build_mlp


@pytest.mark.parametrize(
    "input_shape, hidden, classes, expected",
    [
        ((28, 28), [128], 10, 101_770),  # the course's MNIST network
        ((28, 28), [], 10, 7_850),  # the multinomial network
        ((64, 64, 3), [128, 128, 128], 17, 1_608_209),  # the course's Flowers network
    ],
)
def test_parameter_counts_match_the_course(input_shape, hidden, classes, expected):
    model = MLPClassifier(input_shape=input_shape, num_classes=classes, hidden_sizes=hidden)
    assert count_parameters(model) == expected


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_layers_follow_the_options(activation):
    net = build_mlp(12, [8, 4], 3, activation=activation, dropout=0.5, batch_norm=True)
    kinds = [type(layer).__name__ for layer in net]
    assert kinds.count("Linear") == 3 and kinds.count("BatchNorm1d") == 2
    assert kinds.count("Dropout") == 2
    assert net(torch.rand(5, 3, 4)).shape == (5, 3)


def test_mse_loss_compares_softmax_with_one_hot():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
    assert classification_loss("mse", logits, torch.tensor([0, 1])) < 1e-6
    assert classification_loss("mse", logits, torch.tensor([1, 0])) == pytest.approx(1.0, abs=1e-6)


def test_an_evaluation_holds_probabilities_loss_and_accuracy():
    from denselab.data.base import ImageDataModule, Split
    from denselab.reporting.evaluation import Evaluator

    model = MLPClassifier(input_shape=(2,), num_classes=2, hidden_sizes=[])
    with torch.no_grad():
        model.first_layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.first_layer.bias.zero_()
    data = ImageDataModule(dir="unused", eval_batch_size=2)
    data.class_names = ("a", "b")
    x = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    data.splits = {"test": Split(x, torch.tensor([0, 1, 1]))}

    evaluator = Evaluator(model, data)
    evaluation = evaluator.evaluation("test")
    assert evaluation.accuracy == pytest.approx(2 / 3) and evaluation.loss > 0
    assert evaluation.probs.shape == (3, 2) and list(evaluation.predicted) == [0, 1, 0]
    assert evaluation.class_names == ("a", "b") and evaluation.images.shape == (3, 2)
    # The same weights: the same object, no second pass. New weights: a new evaluation.
    assert evaluator.evaluation("test") is evaluation
    with torch.no_grad():
        model.first_layer.weight.mul_(-1)
    again = evaluator.evaluation("test")
    assert again is not evaluation and list(again.predicted) == [1, 0, 1]
    # An optimizer step changes the weights in place: it too is noticed.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    optimizer.step()
    assert evaluator.evaluation("test") is not again


def test_lightnings_summary_counts_each_layers_flops_from_an_example_image():
    # Without an example input Lightning's summary prints "Total FLOPs: 0".
    from pytorch_lightning.utilities.model_summary import ModelSummary

    model = MLPClassifier(input_shape=(28, 28), num_classes=10, hidden_sizes=[128])
    summary = ModelSummary(model)
    assert summary.total_flops == 2 * (784 * 128 + 128 * 10)  # a multiply and an add each
    assert summary.in_sizes == [[1, 28, 28]] and summary.out_sizes == [[1, 10]]
