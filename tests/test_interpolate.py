"""Interpolation paths against closed forms, and the command on real checkpoints."""

import math
import shutil

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dgm_cli.cli import app
from dgm_cli.interpolation import path_between as interpolate
from dgm_cli.interpolation import prior_endpoints

runner = CliRunner()


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_ends_are_exact(method):
    torch.manual_seed(0)
    a, b = torch.randn(100), torch.randn(100)
    path = interpolate(a, b, 7, method)
    assert path.shape == (9, 100)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)


def test_slerp_is_a_rotation_on_the_circle():
    path = interpolate(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 1, "slerp")
    torch.testing.assert_close(path[1], torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    path = interpolate(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0]), 2, "slerp")
    angles = torch.atan2(path[:, 1], path[:, 0])
    torch.testing.assert_close(angles, torch.tensor([0.0, math.pi / 6, math.pi / 3, math.pi / 2]))
    torch.testing.assert_close(path.norm(dim=1), torch.full((4,), 2.0))


def test_slerp_keeps_gaussian_norms_where_linear_shrinks_them():
    torch.manual_seed(0)
    a, b = torch.randn(100), torch.randn(100)
    slerp_norms = interpolate(a, b, 7, "slerp").norm(dim=1)
    linear_middle = interpolate(a, b, 1, "linear")[1].norm()
    ends = torch.stack([a.norm(), b.norm()])
    assert slerp_norms.min() > 0.9 * ends.min() and slerp_norms.max() < 1.1 * ends.max()
    assert linear_middle == pytest.approx(math.sqrt(100 / 2), rel=0.15)  # the hollow middle of the Gaussian


def test_parallel_endpoints_fall_back_to_a_straight_line():
    a = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(interpolate(a, 3 * a, 1, "slerp")[1], 2 * a)


def test_prior_endpoints_use_one_seed_per_row():
    starts, ends = prior_endpoints(5, 2, seed=0, seed_a=10, seed_b=20)
    assert torch.equal(starts[1], torch.randn(5, generator=torch.Generator().manual_seed(11)))
    assert torch.equal(ends[0], torch.randn(5, generator=torch.Generator().manual_seed(20)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    for args in (["gan", "--latent-dim", "16"], ["vae", "--hidden", "16"]):
        result = runner.invoke(
            app,
            [
                "train",
                *args,
                "--epochs",
                "0",
                "--dataset",
                "mnist-mini",
                "--out",
                str(folder / args[0]),
                "--checkpoint-dir",
                str(folder),
            ],
        )
        assert result.exit_code == 0, result.output
        # an untrained model is not published to --checkpoint-dir: take the run's own file
        shutil.copy(folder / args[0] / "last.safetensors", folder / f"{args[0]}.safetensors")
    return folder


def columns_and_rows(path) -> tuple[int, int]:
    width, height = Image.open(path).size
    return (width // 2 - 2) // 30, (height // 2 - 2) // 30


def test_interpolate_command_draws_rows_of_steps_plus_two(checkpoints, tmp_path):
    result = runner.invoke(
        app,
        [
            "interpolate",
            "gan",
            str(checkpoints / "gan.safetensors"),
            "--rows",
            "3",
            "--out",
            str(tmp_path / "g.png"),
            "--seed-a",
            "1",
            "--seed-b",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert columns_and_rows(tmp_path / "g.png") == (9, 3)
    runner.invoke(
        app,
        [
            "interpolate",
            "gan",
            str(checkpoints / "gan.safetensors"),
            "--rows",
            "3",
            "--out",
            str(tmp_path / "again.png"),
            "--seed-a",
            "1",
            "--seed-b",
            "2",
        ],
    )
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "again.png").read_bytes()


def test_vae_walks_between_two_real_images(checkpoints, tmp_path):
    result = runner.invoke(
        app,
        [
            "interpolate",
            "vae",
            str(checkpoints / "vae.safetensors"),
            "--from-images",
            "--image-a",
            "0",
            "--image-b",
            "1",
            "--steps",
            "3",
            "--method",
            "linear",
            "--out",
            str(tmp_path / "v.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test images 0->1" in result.stderr
    assert columns_and_rows(tmp_path / "v.png") == (5, 1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["gan", "GAN", "--from-images"], "no encoder"),
        (["vae", "VAE", "--from-images", "--image-a", "5000"], "outside the split"),
        (["vae", "VAE", "--image-a", "1"], "add --from-images"),
    ],
)
def test_interpolation_errors(checkpoints, tmp_path, args, message):
    path = str(checkpoints / f"{args[0]}.safetensors")
    result = runner.invoke(app, ["interpolate", args[0], path, *args[2:], "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert not (tmp_path / "x.png").exists()
