import math

import pytest
import torch

from condgen.data.labels import LabelCodec
from condgen.evaluate.counter import DensityCounter, ObjectCounter
from condgen.evaluate.evaluator import build_resnet18_evaluator
from condgen.evaluate.ranker import image_ranking
from condgen.nn.ranking import (
    COUNT_WEIGHT,
    Reading,
    as_reading,
    best_candidates,
    candidate_scores,
    keep_best,
    set_log_likelihood,
)


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


def test_a_counting_reading_prefers_the_requested_number_of_objects():
    labels = torch.tensor([[1.0, 1.0, 0.0]] * 3)  # two objects requested
    logits = torch.tensor([[5.0, 5.0, -5.0], [4.0, 4.0, -5.0], [-5.0, -5.0, -5.0]])
    objects = torch.tensor([3.2, 2.1, 0.0])  # the likeliest set paints a requested object twice
    candidates = torch.arange(3.0).view(3, 1)
    assert keep_best(candidates, logits, labels, k=3).tolist() == [[0.0]]  # the set alone cannot tell
    assert keep_best(candidates, Reading(logits, objects), labels, k=3).tolist() == [[1.0]]
    scores = candidate_scores(Reading(logits, objects), labels)
    expected = set_log_likelihood(logits, labels) - COUNT_WEIGHT * torch.tensor([1.2, 0.1, 2.0])
    assert torch.allclose(scores, expected)
    # one object off still wins over an exact count whose set is more than e^COUNT_WEIGHT times less likely
    far = torch.tensor([[9.0, 9.0, -9.0], [-5.0, 2.0, -9.0]])
    assert best_candidates(Reading(far, torch.tensor([3.0, 2.0])), labels[:2], k=2).tolist() == [0]


def test_plain_logits_rank_as_a_reading_without_counts():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 24) * 3, (torch.rand(3, 24) < 0.2).float().repeat_interleave(4, dim=0)
    assert torch.equal(candidate_scores(as_reading(logits), labels), set_log_likelihood(logits, labels))
    candidates = torch.randn(12, 2)
    plain = keep_best(candidates, logits, labels, k=4)
    assert torch.equal(plain, keep_best(candidates, Reading(logits), labels, k=4))
    picks = set_log_likelihood(logits, labels).view(3, 4).argmax(dim=1)
    assert torch.equal(plain, candidates.view(3, 4, 2)[torch.arange(3), picks])


def test_a_mirrored_reading_averages_each_image_and_its_mirror():
    torch.manual_seed(0)
    network = build_resnet18_evaluator(num_classes=3, width=8).eval()
    counter = ObjectCounter(DensityCounter(num_classes=3, width=8).eval(), LabelCodec(["a", "b", "c"]))
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    plain = image_ranking(network, lambda x: x, counter=counter)
    mirrored = image_ranking(network, lambda x: x, counter=counter, mirror=True)
    reading, flipped, both = plain(images), plain(images.flip(-1)), mirrored(images)
    assert not torch.allclose(reading.logits, flipped.logits)  # the network itself is not mirror-invariant
    assert torch.allclose(both.logits, (reading.logits + flipped.logits) / 2, atol=1e-5)
    assert torch.allclose(both.objects, (reading.objects + flipped.objects) / 2, atol=1e-5)
    assert torch.allclose(mirrored(images.flip(-1)).logits, both.logits, atol=1e-5)  # a scene reads as its mirror
