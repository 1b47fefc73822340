import numpy as np
import pytest
import torch

from condgen.evaluate.metrics import count_scores, exact_sets, frechet_distance, set_scores, top_k_accuracy


def reference_top_k_accuracy(scores: torch.Tensor, multi_hot: torch.Tensor) -> float:
    """The course's loop, one image at a time, with ties going to the lower class index."""
    hits = total = 0
    for score, truth in zip(scores.tolist(), multi_hot.tolist()):
        k = int(sum(truth))
        top = sorted(range(len(score)), key=lambda i: (-score[i], i))[:k]
        hits += int(sum(truth[i] for i in top))
        total += k
    return hits / total


def test_top_k_hand_example():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    truth = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    # image 0: top-2 = {0, 1}, one hit of 2; image 1: top-1 = {3}, a hit -> 2 / 3
    assert top_k_accuracy(scores, truth) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [None, 3])
def test_top_k_matches_reference_on_random_inputs(seed, levels):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(200, 24, generator=generator)
    if levels is not None:  # few distinct values: many ties
        scores = (scores * levels).floor() / levels
    truth = torch.zeros(200, 24)
    for row in truth:
        row[torch.randperm(24, generator=generator)[: torch.randint(1, 4, (1,), generator=generator)]] = 1
    assert top_k_accuracy(scores, truth) == pytest.approx(reference_top_k_accuracy(scores, truth), abs=1e-12)


def test_top_k_rejects_shape_mismatch_and_empty_labels():
    with pytest.raises(ValueError):
        top_k_accuracy(torch.rand(2, 24), torch.ones(3, 24))
    with pytest.raises(ValueError):
        top_k_accuracy(torch.rand(2, 24), torch.zeros(2, 24))


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with Tr sqrt(Sa Sb) from the eigenvalues of the (non-symmetric) product."""
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def test_frechet_matches_textbook_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.5, size=(300, 6)) @ rng.normal(size=(6, 6))
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        reference_frechet(a, b), rel=1e-6
    )


def test_frechet_of_a_set_with_itself_is_zero_and_grows_with_shift():
    features = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-6)
    # a pure shift by d in every dimension adds |d|^2 * D
    assert frechet_distance(features, features + 0.5) == pytest.approx(0.25 * 16, rel=1e-6)


def reference_set_scores(scores: torch.Tensor, multi_hot: torch.Tensor, threshold: float) -> dict[str, float]:
    """One image at a time, with Python sets."""
    exact = hits = detected_count = requested = 0
    for score, truth in zip(scores.tolist(), multi_hot.tolist()):
        detected = {i for i, s in enumerate(score) if s > threshold}
        wanted = {i for i, t in enumerate(truth) if t > 0.5}
        exact += detected == wanted
        hits += len(detected & wanted)
        detected_count += len(detected)
        requested += len(wanted)
    return {
        "exact_set": exact / len(scores),
        "precision": hits / detected_count if detected_count else 1.0,
        "recall": hits / requested,
    }


def test_exact_set_hand_example():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.9, 0.2, 0.7], [0.6, 0.1, 0.1]])
    truth = torch.tensor([[1.0, 1, 0], [1, 0, 0], [1, 1, 0]])
    # image 0 exact; image 1 has an extra object (top-1 accuracy forgives it); image 2 misses one
    result = set_scores(scores, truth)
    assert result == pytest.approx({"exact_set": 1 / 3, "precision": 4 / 5, "recall": 4 / 5})
    assert top_k_accuracy(scores[1:2], truth[1:2]) == 1.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_exact_set_matches_reference_on_random_inputs(seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    truth = torch.zeros(300, 24)
    for row in truth:
        row[torch.randperm(24, generator=generator)[: torch.randint(1, 4, (1,), generator=generator)]] = 1
    # scores that mostly agree with the truth, so that every case (exact, extra, missing) occurs
    scores = 0.45 * truth + 0.52 * torch.rand(300, 24, generator=generator)
    expected = reference_set_scores(scores, truth, threshold)
    assert 0 < expected["exact_set"] < 1 or threshold != 0.5
    assert set_scores(scores, truth, threshold) == pytest.approx(expected, abs=1e-12)


def test_count_scores_hand_example_where_a_duplicate_passes_the_exact_set_but_not_the_exact_scene():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1], [0.9, 0.1, 0.1], [0.9, 0.1, 0.7], [0.2, 0.9, 0.1]])
    truth = torch.tensor([[1.0, 1, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]])
    totals = torch.tensor([2, 3, 1, 2, 1])
    # 0: the scene asked for; 1: the same set with an object drawn twice (3 objects); 2: the scene asked for;
    # 3: an extra object the evaluator sees, counted; 4: a missing object, one object counted
    exact = exact_sets(scores, truth)
    assert exact.tolist() == [True, True, True, False, False]
    assert set_scores(scores, truth)["exact_set"] == pytest.approx(3 / 5)  # the duplicate passes the set measure
    result = count_scores(totals, truth, exact)
    assert result == pytest.approx({"count_exact": 2 / 5, "exact_scene": 2 / 5, "extra_objects": 2 / 5})
    duplicate = count_scores(totals[1:2], truth[1:2], exact[1:2])
    assert duplicate == {"count_exact": 0.0, "exact_scene": 0.0, "extra_objects": 1.0}


def test_an_exact_scene_needs_both_the_exact_set_and_the_count():
    truth = torch.tensor([[1.0, 1, 0], [1, 1, 0], [1, 0, 0]])
    totals = torch.tensor([2, 2, 1])
    exact = torch.tensor([False, True, True])  # image 0: the right count, but a substituted object
    assert count_scores(totals, truth, exact) == pytest.approx(
        {"count_exact": 1.0, "exact_scene": 2 / 3, "extra_objects": 0.0}
    )


def test_count_scores_rejects_inputs_of_different_lengths():
    truth = torch.tensor([[1.0, 0], [0, 1]])
    with pytest.raises(ValueError, match="must share N"):
        count_scores(torch.tensor([1, 1, 1]), truth, torch.tensor([True, True, True]))
    with pytest.raises(ValueError, match="must share N"):
        count_scores(torch.tensor([1, 1]), truth, torch.tensor([True]))
