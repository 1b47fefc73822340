import math

import pytest
import torch

from condgen.nn.ranking import keep_best, set_log_likelihood


def test_set_log_likelihood_matches_a_plain_loop():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 24) * 3, (torch.rand(5, 24) < 0.2).float()
    expected = [
        sum(math.log(1 / (1 + math.exp(-x))) if y else math.log(1 - 1 / (1 + math.exp(-x))) for x, y in zip(row, want))
        for row, want in zip(logits.tolist(), labels.tolist())
    ]
    assert set_log_likelihood(logits, labels).tolist() == pytest.approx(expected, rel=1e-5)


def test_an_extra_object_ranks_below_the_exact_set():
    labels = torch.tensor([[1.0, 1.0, 0.0]] * 3)
    exact, extra, missing = [4.0, 4.0, -4.0], [4.0, 4.0, 4.0], [4.0, -4.0, -4.0]
    candidates = torch.arange(3.0).view(3, 1)  # candidate i is the number i
    for order in ([exact, extra, missing], [extra, missing, exact], [missing, exact, extra]):
        kept = keep_best(candidates, torch.tensor(order), labels, k=3)
        assert kept.tolist() == [[float(order.index(exact))]]


def test_keep_best_picks_per_request():
    candidates = torch.arange(12.0).view(6, 2)  # 2 requests x 3 candidates, each a row of 2 numbers
    labels = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0], [1.0, 1.0], [5.0, -5.0], [-5.0, 5.0], [0.0, 5.0]])
    assert keep_best(candidates, logits, labels, k=3).tolist() == [[2.0, 3.0], [8.0, 9.0]]
