"""Choosing on label lists that are never the test files (condgen.diffusion.selection): the guidance scale by the
evaluator's accuracy on train.json lists, the sampling function it scores, and a noisy classifier's set likelihood."""

import dataclasses

import pytest
import torch

from condgen.data.iclevr import load_codec
from condgen.data.splits import train_label_lists
from condgen.diffusion.run import DiffusionModel
from condgen.diffusion.sampling import SampleConfig, generate
from condgen.diffusion.selection import SELECTION_LABELS, choose_guidance, classifier_likelihood, image_maker
from condgen.diffusion.trainer import DiffusionConfig
from condgen.diffusion.unet import UNet, UNetConfig
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.nn.ranking import set_log_likelihood


class FirstPixels(torch.nn.Module):
    """An evaluator network that reads an image's first C values as its per-object probabilities."""

    def __init__(self, objects: int):
        super().__init__()
        self.objects = objects
        self.device_marker = torch.nn.Parameter(torch.zeros(1))  # the evaluator finds the device by a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, : self.objects]


def images_right_at(scales: set[float], calls: list):
    """``make_images`` whose images hold exactly the requested objects at the guidance ``scales`` and every other
    object elsewhere."""

    def make_images(labels: torch.Tensor, sample: SampleConfig) -> torch.Tensor:
        calls.append((labels, sample))
        images = torch.zeros(len(labels), 3, 8, 8)
        images.view(len(labels), -1)[:, : labels.shape[1]] = labels if sample.guidance in scales else 1 - labels
        return images

    return make_images


def test_the_scale_with_the_best_accuracy_on_train_json_lists_is_chosen(dataset):
    codec = load_codec(dataset)
    evaluator = Evaluator(FirstPixels(len(codec)), codec)
    sample, calls = SampleConfig(sampler="ddim", steps=50, eta=1.0, guidance_min_t=100), []
    chosen = choose_guidance(images_right_at({3.0, 5.0}, calls), sample, evaluator, dataset, [2.0, 3.0, 5.0], lists=6)
    assert chosen["accuracy_by_scale"] == {2.0: 0.0, 3.0: 1.0, 5.0: 1.0} and chosen["chosen"] == 3.0  # first of a tie
    assert chosen["label_lists"] == "6 drawn from train.json (seed 0)"
    assert chosen["sampler"] == "ddim-50, eta 1.0, trailing spacing, guidance from t = 100"  # as the results say
    drawn = train_label_lists(dataset, codec, 6)
    for (labels, used), scale in zip(calls, [2.0, 3.0, 5.0]):
        assert torch.equal(labels, drawn) and used == dataclasses.replace(sample, guidance=scale)


def test_the_lists_can_be_drawn_otherwise_and_a_choice_needs_a_scale(dataset):
    codec = load_codec(dataset)
    evaluator, calls = Evaluator(FirstPixels(len(codec)), codec), []
    chosen = choose_guidance(images_right_at({1.0}, calls), SampleConfig(), evaluator, dataset, [1.0], 5, 2, 3)
    assert chosen["label_lists"] == "5 drawn from train.json (seed 2, 3 objects each)" and chosen["chosen"] == 1.0
    assert torch.equal(calls[0][0], train_label_lists(dataset, codec, 5, 2, 3))
    assert SELECTION_LABELS == 128  # the benchmarks' default: their recorded selections were made on 128 lists
    with pytest.raises(CondgenError, match="guidance scales"):
        choose_guidance(images_right_at(set(), []), SampleConfig(), evaluator, dataset, [])


def test_image_maker_samples_with_the_settings_given_and_decodes(one_thread):
    torch.manual_seed(0)
    network = UNet(UNetConfig(channels=8, channel_mults=(1, 2), attention_resolutions=(), heads=1, patch_size=4))
    diffusion = DiffusionConfig(num_steps=10).build()
    loaded = DiffusionModel(network.eval(), diffusion, config=None, meta={}, decode=lambda x: x / 2)
    labels = torch.zeros(2, 24)
    labels[0, 3] = labels[1, [1, 7]] = 1
    sample = SampleConfig(sampler="ddim", steps=4, guidance=3.0, seed=5)
    with torch.no_grad():
        expected = generate(network, diffusion, labels, sample) / 2
        assert torch.equal(image_maker(loaded)(labels, sample), expected)
        assert not torch.equal(image_maker(loaded)(labels, sample.changed(seed=6)), expected)


class FixedLogits(torch.nn.Module):
    """A noisy classifier whose logits are a fixed function of x, recording the noise levels it is asked at."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(12, 4))
        self.levels: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.levels.append(t)
        return x.flatten(1) @ self.weight


def test_classifier_likelihood_reads_finished_samples_at_t_0_in_batches():
    torch.manual_seed(0)
    classifier, x = FixedLogits(), torch.randn(300, 3, 2, 2)
    labels = (torch.rand(300, 4) > 0.5).float()
    likelihood = classifier_likelihood(classifier, x, labels)
    assert [len(t) for t in classifier.levels] == [256, 44] and all((t == 0).all() for t in classifier.levels)
    with torch.no_grad():
        assert torch.allclose(likelihood, set_log_likelihood(x.flatten(1) @ classifier.weight, labels))
