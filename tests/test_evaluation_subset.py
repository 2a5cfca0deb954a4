"""--limit N evaluates a seeded random subset of the split, never its first N images: a data file's order is
not random, so the first images would be a biased sample. Every estimator reads the same subset, and the
report says which one it was."""

import dataclasses
import json

import pytest
import torch
from conftest import invoke_dgm

import dgm_cli as dgm
from dgm_cli.data import Split


def test_limit_draws_from_the_whole_split_even_when_it_is_sorted_by_class():
    data = dgm.load_dataset("mnist-mini")
    order = torch.argsort(data.test.labels, stable=True)  # the worst case of a file's order: class by class
    by_class = dataclasses.replace(data, test=Split(data.test.images[order], data.test.labels[order]))
    classifier = dgm.load("classifier", device="cpu")
    report = dgm.evaluate(classifier, by_class, limit=100, samples=0)
    # the first 100 images would all be zeros; a random subset holds every class
    assert all(accuracy is not None for accuracy in report.classification["per_class_accuracy"])
    assert report.to_dict()["subset"] == {"images": 100, "of": 1000, "seed": 0, "how": "seeded random subset"}
    again = dgm.evaluate(classifier, by_class, limit=100, samples=0)
    assert again.classification == report.classification  # the same seed, the same subset
    whole = dgm.evaluate(classifier, by_class, samples=0)
    assert "subset" not in whole.to_dict() and whole.classification["images"] == 1000


def eval_vae(*options):
    """dgm eval of the pretrained VAE over mnist-mini, without samples, with these options."""
    return invoke_dgm("eval", "vae", "--dataset", "mnist-mini", "--samples", "0", "--json", *options)


def test_every_estimator_reads_the_same_subset_and_the_command_says_so():
    result = eval_vae("--limit", "40", "--iw-samples", "20", "--mc-samples", "20", "--seed", "3")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["subset"]["images"] == report["likelihood"]["images"] == 40 and report["subset"]["seed"] == 3
    assert "random subset of 40 of the test split's 1,000 images (seed 3)" in result.stderr


def test_one_image_has_no_standard_error_and_the_report_stays_valid_json():
    result = eval_vae("--limit", "1", "--iw-samples", "5", "--mc-samples", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON report"))
    assert report["likelihood"]["elbo"]["standard_error"] is None
    assert "nan" not in result.stderr.lower()
