"""GRAr: Eq. 2-4 against hand-written references, region pooling and mapping back, absent classes, switches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.heads import module_parameters
from model.heads.grar import GRArHead, RegionGraphReasoning, map_back, pool_regions, region_weights

# Two channels, three nodes; node 2 is an absent class (zero feature). Columns are nodes.
NODES = [[1.0, 2.0, 0.0], [3.0, -1.0, 0.0]]  # F[c][j]
# Asymmetric affinity, f[i][j] = support from node i to node j.
AFFINITY = [[1.0, 0.5, 0.2], [0.1, 1.0, 0.7], [0.4, 0.3, 1.0]]
W_POS, B_POS, LAMBDA = [[1.0, 2.0], [0.0, -1.0]], [0.5, -0.25], 0.5
W_NEG, B_NEG, LAMBDA_HAT = [[1.0, 2.0], [0.0, -1.0]], [0.5, -0.25], 0.25


def column(nodes, j):
    return [nodes[c][j] for c in range(len(nodes))]


def reference_reasoning(nodes, edges, weight, bias, scale, sign):
    """Eq. 2 (sign +1) / Eq. 3 (sign -1) with plain loops: F_j + sign * scale * (W sum_i F_i e[i][j] + b)."""
    channels, count = len(nodes), len(nodes[0])
    result = []
    for j in range(count):
        message = [sum(nodes[c][i] * edges[i][j] for i in range(count)) for c in range(channels)]
        conv = [sum(weight[o][c] * message[c] for c in range(channels)) + bias[o] for o in range(channels)]
        result.append([nodes[o][j] + sign * scale * conv[o] for o in range(channels)])
    return [[result[j][c] for j in range(count)] for c in range(channels)]  # back to F[c][j]


def negative_edges(affinity):
    return [[1 - value for value in row] for row in affinity]


def set_conv(conv, weight, bias):
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight)[..., None])
        conv.bias.copy_(torch.tensor(bias))


def reasoning(positive: bool, negative: bool, edges: str = "graph") -> RegionGraphReasoning:
    module = RegionGraphReasoning(2, 3, torch.tensor(AFFINITY), positive, negative, edges)
    if positive:
        set_conv(module.positive_conv, W_POS, B_POS)
        module.lambda_positive.data.fill_(LAMBDA)
    if negative:
        set_conv(module.negative_conv, W_NEG, B_NEG)
        module.lambda_negative.data.fill_(LAMBDA_HAT)
    return module


def select_last(module: RegionGraphReasoning) -> None:
    """Make Eq. 4's conv output the last concatenated term (F^p or F^n) unchanged."""
    weight = torch.zeros_like(module.fuse.weight)  # (C, kC, 1)
    weight[:, -2:, 0] = torch.eye(2)
    with torch.no_grad():
        module.fuse.weight.copy_(weight)
        module.fuse.bias.zero_()


def test_positive_reasoning_matches_eq_2():
    module = reasoning(positive=True, negative=False)
    select_last(module)
    out = module(torch.tensor([NODES]))[0]
    expected = reference_reasoning(NODES, AFFINITY, W_POS, B_POS, LAMBDA, +1)
    torch.testing.assert_close(out, torch.tensor(expected))
    # By hand, node 0: message = F_0*1 + F_1*0.1 + F_2*0.4 = (1.2, 2.9); conv = (7.5, -3.15);
    # F^p_0 = (1, 3) + 0.5 * (7.5, -3.15). The transposed edges would give another value.
    torch.testing.assert_close(out[:, 0], torch.tensor([4.75, 1.425]))


def test_negative_reasoning_matches_eq_3():
    module = reasoning(positive=False, negative=True)
    select_last(module)
    out = module(torch.tensor([NODES]))[0]
    expected = reference_reasoning(NODES, negative_edges(AFFINITY), W_NEG, B_NEG, LAMBDA_HAT, -1)
    torch.testing.assert_close(out, torch.tensor(expected))
    # By hand, node 1: e^n_i1 = (0.5, 0, 0.7); message = (0.5, 1.5); conv = (4, -1.75);
    # F^n_1 = (2, -1) - 0.25 * (4, -1.75).
    torch.testing.assert_close(out[:, 1], torch.tensor([1.0, -0.5625]))


def test_fusion_matches_eq_4_with_the_concatenation_order_f_fn_fp():
    module = reasoning(positive=True, negative=True)
    torch.manual_seed(0)
    fuse_weight = torch.randn(2, 6).tolist()
    fuse_bias = [0.1, -0.2]
    set_conv(module.fuse, fuse_weight, fuse_bias)
    out = module(torch.tensor([NODES]))[0]
    positive = reference_reasoning(NODES, AFFINITY, W_POS, B_POS, LAMBDA, +1)
    negative = reference_reasoning(NODES, negative_edges(AFFINITY), W_NEG, B_NEG, LAMBDA_HAT, -1)
    for j in range(3):
        concat = column(NODES, j) + column(negative, j) + column(positive, j)  # F_j ⊕ F^n_j ⊕ F^p_j
        expected = [sum(w * v for w, v in zip(fuse_weight[o], concat)) + fuse_bias[o] for o in range(2)]
        torch.testing.assert_close(out[:, j], torch.tensor(expected))


def test_conv_edges_are_learnable_matrices_in_place_of_the_statistics():
    module = reasoning(positive=True, negative=True, edges="conv")
    learnt_positive = [[0.3, -0.2, 0.1], [0.0, 0.5, -0.4], [0.2, 0.2, 0.2]]
    learnt_negative = [[-0.1, 0.4, 0.0], [0.6, 0.1, 0.3], [0.0, -0.3, 0.5]]
    with torch.no_grad():
        module.positive_edges.copy_(torch.tensor(learnt_positive))
        module.negative_edges.copy_(torch.tensor(learnt_negative))
    select_last(module)  # keeps F^p
    out = module(torch.tensor([NODES]))[0]
    torch.testing.assert_close(out, torch.tensor(reference_reasoning(NODES, learnt_positive, W_POS, B_POS, LAMBDA, +1)))
    module.fuse.weight.data[:, -4:-2, 0] = torch.eye(2)  # now F^n + F^p
    module.fuse.weight.data[:, -2:, 0] = 0
    out = module(torch.tensor([NODES]))[0]
    # Eq. 3 with the learnt matrix as the negative edges: no "1 -", the minus sign kept.
    expected = reference_reasoning(NODES, learnt_negative, W_NEG, B_NEG, LAMBDA_HAT, -1)
    torch.testing.assert_close(out, torch.tensor(expected))
    out.sum().backward()
    assert module.negative_edges.grad.abs().sum() > 0
    assert not hasattr(module, "affinity")


LABELS = [[0, 0, 2, 2, 2], [0, 0, 2, 2, 2], [0, 2, 2, 2, 2]]  # class 1 absent


def hard_case():
    labels = torch.tensor([LABELS])  # (1, 3, 5)
    coarse = 5.0 * F.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # (1, 3, 3, 5), argmax = labels
    pixels = torch.stack([torch.arange(15.0), 100 + torch.arange(15.0)]).view(1, 2, 3, 5)  # value = c*100 + index
    return labels, coarse, pixels


def test_hard_region_pooling_is_the_region_mean_and_absent_classes_are_zero():
    _, coarse, pixels = hard_case()
    weights = region_weights(coarse, "hard")
    nodes = pool_regions(pixels.flatten(2), weights)
    # class 0: pixel indices 0, 1, 5, 6, 10 -> mean 4.4; class 2: the other ten -> 83 / 10 = 8.3.
    expected = torch.tensor([[[4.4, 0.0, 8.3], [104.4, 0.0, 108.3]]])
    torch.testing.assert_close(nodes, expected)


def test_mapping_back_gives_every_pixel_its_region_node():
    labels, coarse, _ = hard_case()
    weights = region_weights(coarse, "hard")
    nodes = torch.tensor([[[10.0, 20.0, 30.0], [-1.0, -2.0, -3.0]]])  # (1, C=2, N=3)
    mapped = map_back(nodes, weights).view(1, 2, 3, 5)
    expected = nodes[0][:, labels[0]]  # (2, 3, 5): node of the pixel's class
    torch.testing.assert_close(mapped[0], expected)


def test_soft_region_pooling_and_mapping_back_by_hand():
    coarse = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, K=2, 1, 2): probabilities (.5,.5), (.75,.25)
    pixels = torch.tensor([[2.0, 6.0]]).view(1, 1, 2)  # (1, C=1, hw=2)
    weights = region_weights(coarse, "soft")
    torch.testing.assert_close(weights, torch.tensor([[[0.5, 0.75], [0.5, 0.25]]]))
    nodes = pool_regions(pixels, weights)
    node0, node1 = (0.5 * 2 + 0.75 * 6) / 1.25, (0.5 * 2 + 0.25 * 6) / 0.75
    torch.testing.assert_close(nodes, torch.tensor([[[node0, node1]]]))
    torch.testing.assert_close(
        map_back(nodes, weights), torch.tensor([[[0.5 * node0 + 0.5 * node1, 0.75 * node0 + 0.25 * node1]]])
    )


def absent_class_head() -> tuple[GRArHead, torch.Tensor]:
    torch.manual_seed(0)
    affinity = torch.rand(3, 3).fill_diagonal_(1)
    head = GRArHead(6, 3, 4, affinity).eval()
    head.reasoning.lambda_positive.data.fill_(1.0)
    head.reasoning.lambda_negative.data.fill_(1.0)
    coarse = head.coarse_classifier[1]
    coarse.weight.data.zero_()
    coarse.weight.data[0, 0] = coarse.weight.data[2, 1] = 1.0  # class 0 where channel 0 wins, class 2 where 1 does
    coarse.bias.data[:] = torch.tensor([0.0, -1e4, 0.0])  # class 1 is never in the coarse mask
    x = torch.randn(1, 6, 7, 9)
    present = head.coarse_classifier(head.adapt(x)).argmax(1).unique().tolist()
    assert present == [0, 2]
    return head, x


def test_an_absent_class_neither_sends_nor_receives():
    head, x = absent_class_head()
    with torch.no_grad():
        before = head(x)["out"]
        head.reasoning.affinity[1, :] = torch.tensor([0.9, 1.0, 0.05])  # edges from the absent class
        head.reasoning.affinity[:, 1] = torch.tensor([0.01, 1.0, 0.8])  # edges to the absent class
        after = head(x)["out"]
    torch.testing.assert_close(after, before)


def test_edges_between_present_classes_do_change_the_output():
    head, x = absent_class_head()
    with torch.no_grad():
        before = head(x)["out"]
        head.reasoning.affinity[0, 2] = 1 - head.reasoning.affinity[0, 2]
        after = head(x)["out"]
    assert not torch.allclose(after, before)


def test_gradients_reach_lambda_and_lambda_hat_from_their_initial_zero():
    torch.manual_seed(0)
    head = GRArHead(6, 3, 4, torch.rand(3, 3).fill_diagonal_(1))
    assert head.reasoning.lambda_positive.item() == 0 and head.reasoning.lambda_negative.item() == 0
    head(torch.randn(2, 6, 5, 7))["out"].square().sum().backward()
    assert head.reasoning.lambda_positive.grad.abs() > 0
    assert head.reasoning.lambda_negative.grad.abs() > 0


def test_affinity_is_a_saved_buffer_not_a_parameter():
    affinity = torch.rand(3, 3).fill_diagonal_(1)
    head = GRArHead(6, 3, 4, affinity)
    torch.testing.assert_close(head.state_dict()["reasoning.affinity"], affinity)
    assert all(name != "reasoning.affinity" for name, _ in head.named_parameters())


@pytest.mark.parametrize(
    ("positive", "negative", "fuse_in"), [(True, True, 12), (True, False, 8), (False, True, 8), (False, False, 4)]
)
def test_switches_remove_their_branch(positive, negative, fuse_in):
    head = GRArHead(6, 3, 4, torch.eye(3), positive=positive, negative=negative)
    assert head.reasoning.fuse.in_channels == fuse_in
    assert hasattr(head.reasoning, "positive_conv") == positive
    assert hasattr(head.reasoning, "lambda_negative") == negative
    assert head(torch.randn(2, 6, 3, 5))["out"].shape == (2, 3, 3, 5)


def test_conv_edges_need_no_affinity_and_add_two_n_by_n_matrices():
    graph = GRArHead(6, 3, 4, torch.eye(3))
    conv = GRArHead(6, 3, 4, None, edges="conv")
    assert module_parameters(conv) - module_parameters(graph) == 2 * 3 * 3


def test_concat_combination_feeds_pixels_and_nodes_to_the_classifier():
    torch.manual_seed(0)
    head = GRArHead(6, 3, 4, torch.eye(3), combine="concat").eval()
    x = torch.randn(1, 6, 5, 7)
    outputs = head(x)
    assert head.feature_channels == 8 and outputs["features"].shape == (1, 8, 5, 7)
    torch.testing.assert_close(outputs["features"][:, :4], head.adapt(x))


@pytest.mark.parametrize(
    ("affinity", "message"),
    [
        (torch.ones(3, 4), r"shape \(3, 4\), expected \(3, 3\) for 3 classes"),
        (torch.full((3, 3), 1.5), r"in \[0, 1\]"),
        (torch.full((3, 3), float("nan")), r"in \[0, 1\]"),
    ],
)
def test_bad_affinity_is_a_clear_error(affinity, message):
    with pytest.raises(ValueError, match=message):
        GRArHead(6, 3, 4, affinity)


def test_graph_edges_without_affinity_and_unknown_switches_are_clear_errors():
    with pytest.raises(ValueError, match="needs the affinity matrix"):
        GRArHead(6, 3, 4, None)
    with pytest.raises(ValueError, match="valid: graph, conv"):
        GRArHead(6, 3, 4, torch.eye(3), edges="graf")
    with pytest.raises(ValueError, match="valid: hard, soft"):
        GRArHead(6, 3, 4, torch.eye(3), pooling="mean")
    with pytest.raises(ValueError, match="valid: sum, concat"):
        GRArHead(6, 3, 4, torch.eye(3), combine="add")
