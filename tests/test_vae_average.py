"""`dgm train vae --ema D`: a moving average of the VAE's weights that everything but the training step uses.

Checked against independent computations: the average after a step against the lerp of the saved weights,
the averaged model's log-weights against a plain VAE given the average's tensors, the live samples against
a plain VAE given the live tensors, and a CLI run's checkpoint through dgm eval.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dgm_cli.checkpoint import load_checkpoint, save_checkpoint
from dgm_cli.models.base import ema_decay
from dgm_cli.models.vae import VAE, VAEConfig

sys.path.insert(0, str(Path(__file__).parent))
from cli_calls import ok  # noqa: E402

ARCHITECTURES = {
    1: {"zdim": 3, "hidden": 16},
    2: {"stochastic_layers": 2, "zdim": 4, "hidden": 16, "zdim2": 3, "hidden2": 8},
}


def images(n: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=torch.manual_seed(3))


def plain_copy(model: VAE, tensors: dict[str, torch.Tensor]) -> VAE:
    """A VAE without an average, its networks holding `tensors` (keyed as the live networks' state dict)."""
    config = VAEConfig(**{**model.config.__dict__, "ema": 0.0})
    plain = VAE(config)
    plain.load_state_dict(tensors, strict=True)
    return plain


def step(model: VAE, optimizer) -> None:
    loss = model.training_step(images())["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.optimizer_stepped(optimizer)


@pytest.mark.parametrize("layers", [1, 2])
def test_each_step_moves_the_average_by_the_warmed_up_decay_and_only_live_weights_are_optimized(layers):
    torch.manual_seed(0)
    model = VAE(VAEConfig(**ARCHITECTURES[layers], ema=0.9, init="glorot"))
    (optimizer,) = model.configure_optimizers()
    live = dict(model.live_networks().named_parameters())
    assert [id(p) for group in optimizer.param_groups for p in group["params"]] == [id(p) for p in live.values()]
    assert all(torch.equal(model.average.get_parameter(name), p) for name, p in live.items())  # starts at the live
    for t in range(3):
        before = {name: p.detach().clone() for name, p in model.average.named_parameters()}
        step(model, optimizer)
        decay = ema_decay(0.9, t)
        for name, p in live.items():
            expected = decay * before[name] + (1 - decay) * p.detach()
            torch.testing.assert_close(model.average.get_parameter(name), expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(model.average.get_parameter("decoder.0.weight"), live["decoder.0.weight"])


def test_the_weight_computed_on_the_device_is_the_warm_up_at_any_step_count():
    # On a GPU base.update_average weighs the live weights by a tensor made from the optimizer's step tensor,
    # so that the host never waits for a step; it must equal the closed form ema_decay, in the warm-up and past
    # it (min(0.99, s / (9 + s)) = 0.99 from s = 891). The lerp itself is checked on the CPU's path above.
    from dgm_cli.models.base import average_weight_on_device

    for steps in (1, 2, 80, 81, 890, 891, 5000):
        weight = average_weight_on_device(torch.tensor(float(steps)), 0.99)
        assert weight.item() == pytest.approx(1 - ema_decay(0.99, steps - 1), rel=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_eval_mode_scores_and_samples_with_the_average_and_train_mode_with_the_live_weights(layers):
    torch.manual_seed(1)
    model = VAE(VAEConfig(**ARCHITECTURES[layers], ema=0.5))
    (optimizer,) = model.configure_optimizers()
    for _ in range(3):
        step(model, optimizer)
    live_tensors = model.live_networks().state_dict()
    averaged = plain_copy(model, model.average.state_dict()).eval()
    live = plain_copy(model, live_tensors).eval()
    model.eval()
    batch = images(8)

    def scored(vae):
        torch.manual_seed(5)
        return vae.log_weights(batch, 7, proposal="posterior")

    torch.testing.assert_close(scored(model), scored(averaged))
    assert not torch.allclose(scored(model), scored(live))
    draw = lambda vae, **kind: vae.sample(4, generator=torch.Generator().manual_seed(2), **kind)  # noqa: E731
    torch.testing.assert_close(draw(model), draw(averaged))
    torch.testing.assert_close(draw(model, averaged=False), draw(live))
    torch.testing.assert_close(draw(model), draw(averaged))  # averaged=False did not stick
    model.train()
    torch.manual_seed(5)
    train_mode = model.log_weights(batch, 7, proposal="posterior")
    torch.testing.assert_close(train_mode, scored(live))


def test_the_papers_output_bias_starts_the_average_too():
    model = VAE(VAEConfig(**ARCHITECTURES[1], ema=0.99, init="paper"))
    model.initialize_from_data(images(64))
    torch.testing.assert_close(model.average["decoder"][-1].bias, model.decoder[-1].bias, rtol=0, atol=0)
    assert model.decoder[-1].bias.abs().sum() > 0


def test_a_run_with_ema_ships_the_average_and_eval_and_sample_use_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(
        "train",
        "vae",
        "--hidden",
        "16",
        "--zdim",
        "2",
        "--ema",
        "0.9",
        "--sample-epochs",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "100",
        "--dataset",
        "mnist-mini",
        "--device",
        "cpu",
        "--out",
        "run",
        "--checkpoint-dir",
        "ckpt",
    )
    tensors = load_file("run/last.safetensors")
    assert {name for name in tensors if name.startswith("average.")} == {
        f"average.{name}" for name in tensors if not name.startswith("average.")
    }
    assert not torch.equal(tensors["average.decoder.0.weight"], tensors["decoder.0.weight"])
    assert Path("run/samples/epoch_001_raw.png").exists()  # the live weights' grid beside the average's
    ok("sample", "vae", "run/last.safetensors", "-n", "4", "--raw", "--out", "raw.png")
    # The same evaluation of a checkpoint without an average, holding the average's tensors as its weights.
    trained, info = load_checkpoint(Path("run/last.safetensors"))
    plain = plain_copy(trained, trained.average.state_dict())
    save_checkpoint(Path("plain.safetensors"), plain, model_name="vae", config=plain.config, data={}, train={})
    reports = {}
    for name in ("run/last", "plain"):
        ok(
            "eval",
            "vae",
            f"{name}.safetensors",
            "--dataset",
            "mnist-mini",
            "--iw-samples",
            "10",
            "--mc-samples",
            "0",
            "--samples",
            "0",
            "--result",
            f"{name}.eval.json",
        )
        reports[name] = json.loads(Path(f"{name}.eval.json").read_text())["likelihood"]["importance_weighted"]["nats"]
    assert reports["run/last"] == reports["plain"]
