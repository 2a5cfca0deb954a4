"""The Python API, through its public names only (`import dgm_cli as dgm`), errors included."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_calls import ok
from PIL import Image

import dgm_cli as dgm

FIXTURES = Path(__file__).parent / "fixtures" / "eval-reports"
VAE, FLOW, DIFFUSION = (FIXTURES / f"{name}.safetensors" for name in ("vae", "flow", "diffusion"))
SHIPPED_CLASSIFIER = Path(dgm.__file__).parent / "assets" / "classifier" / "classifier.safetensors"


def test_every_public_name_is_there_with_a_docstring():
    assert set(dgm.__all__) >= {
        "list_models",
        "create_model",
        "load",
        "load_dataset",
        "evaluate",
        "log_likelihood",
        "sample_quality",
        "train",
        "interpolate",
    }
    for name in dgm.__all__:
        if name != "__version__":
            assert getattr(dgm, name).__doc__, name
    with pytest.raises(AttributeError):
        _ = dgm.no_such_name


def test_models_are_listed_and_created_with_their_fields_checked():
    assert {"vae", "gan", "flow", "diffusion", "classifier"} <= set(dgm.list_models())
    model = dgm.create_model("vae", zdim=2, hidden=32)
    assert isinstance(model, torch.nn.Module) and model.config.zdim == 2 and model.latent_dim == 2
    with pytest.raises(dgm.DgmError, match="unknown model 'vea'; known models: classifier, diffusion, flow, gan, vae"):
        dgm.create_model("vea")
    with pytest.raises(dgm.DgmError, match="unknown VAEConfig field.*zdimm; its fields: .*zdim"):
        dgm.create_model("vae", zdimm=2)
    with pytest.raises(dgm.DgmError, match="zdim must be at least 1"):
        dgm.create_model("vae", zdim=0)


def test_load_gives_the_model_with_its_facts_and_refuses_another_family(tmp_path):
    model = dgm.load(VAE, device="cpu")
    assert model.config.zdim == 4 and not model.training
    assert model.data_facts["name"] == "mnist-mini" and model.training_facts["epoch"] == 1
    with pytest.raises(dgm.DgmError, match="holds a vae model, not a gan"):
        dgm.load(VAE, model="gan")
    with pytest.raises(dgm.DgmError, match="does not exist"):
        dgm.load(tmp_path / "missing.safetensors")


def test_save_writes_the_checkpoint_dgm_info_reads(tmp_path):
    model = dgm.load(VAE)
    model.save(tmp_path / "copy.safetensors")
    again = dgm.load(tmp_path / "copy.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    original, copied = (json.loads(ok("info", path, "--json").stdout) for path in (VAE, tmp_path / "copy.safetensors"))
    assert {k: copied[k] for k in ("config", "data", "train")} == {k: original[k] for k in ("config", "data", "train")}
    fresh = dgm.create_model("vae", zdim=2, hidden=16)
    fresh.save(tmp_path / "fresh.safetensors")  # a model that was never trained: empty facts
    assert json.loads(ok("info", tmp_path / "fresh.safetensors", "--json").stdout)["config"]["zdim"] == 2


def test_sample_takes_a_seed_and_sampler_options_as_arguments():
    vae, diffusion = dgm.load(VAE), dgm.load(DIFFUSION)
    images = vae.sample(6, seed=1)
    assert images.shape == (6, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, vae.sample(6, seed=1)) and not torch.equal(images, vae.sample(6, seed=2))
    two, three = diffusion.sample(2, seed=0, steps=2), diffusion.sample(2, seed=0, steps=3)
    assert not torch.equal(two, three) and torch.equal(two, diffusion.sample(2, seed=0, steps=2))
    assert torch.equal(
        diffusion.sample(2, seed=0, sampler="ancestral"), diffusion.sample(2, seed=0, sampler="ancestral")
    )
    with pytest.raises(dgm.DgmError, match="steps: not a sampler option of the vae; it draws in one pass"):
        vae.sample(2, steps=3)
    with pytest.raises(dgm.DgmError, match="guidance needs a conditional model"):
        diffusion.sample(2, guidance=2.0)


def test_a_flow_decodes_its_own_encoding_back_to_the_image():
    flow, images = dgm.load(FLOW), dgm.load_dataset("mnist-mini").test.images[:4]
    decoded = flow.decode(flow.encode(images))  # a bijection: the dequantized pixels come back
    assert decoded.shape == (4, 1, 28, 28)
    assert torch.allclose(decoded[:, 0] * 255, images.float(), atol=1.0)


def test_interpolate_walks_between_latents_with_exact_ends():
    vae = dgm.load(VAE)
    start, end = torch.randn(2, vae.latent_dim), torch.randn(2, vae.latent_dim)
    grid = dgm.interpolate(vae, start, end, steps=3)
    assert grid.shape == (2 * 5, 1, 28, 28)
    assert torch.allclose(grid[[0, 5]], vae.decode(start)) and torch.allclose(grid[[4, 9]], vae.decode(end))
    with pytest.raises(dgm.DgmError, match="latents of 4 numbers"):
        dgm.interpolate(vae, torch.randn(3), torch.randn(3))


def test_load_dataset_gives_the_splits_the_cli_uses():
    data = dgm.load_dataset("mnist-mini")
    assert (len(data.train), len(data.val), len(data.test)) == (5000, 1000, 1000)
    assert data.test.images.dtype == torch.uint8 and data.test.images.shape[1:] == (28, 28)


def test_evaluate_reports_what_dgm_eval_prints():
    options = {"iw_samples": 10, "mc_samples": 5, "samples": 200, "seed": 4, "limit": 50}
    report = dgm.evaluate(dgm.load(VAE), **options)
    flags = [item for key, value in options.items() for item in (f"--{key.replace('_', '-')}", value)]
    printed = json.loads(ok("eval", "vae", VAE, "--json", *flags).stdout)
    assert report.to_dict() == printed
    assert report.likelihood["images"] == 50 and report.sample_quality["samples"] == 200


def test_log_likelihood_takes_floats_or_bytes_and_reports_bits_per_dim():
    vae, pixels = dgm.load(VAE), dgm.load_dataset("mnist-mini").test.images[:20]
    from_bytes = dgm.log_likelihood(vae, pixels, iw_samples=8, mc_samples=0)
    from_floats = dgm.log_likelihood(vae, pixels.float().div(255)[:, None], iw_samples=8, mc_samples=0)
    weighted = from_bytes["importance_weighted"]
    assert torch.equal(weighted.per_image, from_floats["importance_weighted"].per_image)
    assert (weighted.per_image >= from_bytes["elbo"].per_image - 1e-9).all()  # Jensen, image by image
    assert weighted.summary()["bits_per_dim"] == pytest.approx(-weighted.mean / (784 * np.log(2)))
    with pytest.raises(dgm.DgmError, match=r"images must be \(N, 1, 28, 28\) or \(N, 28, 28\)"):
        dgm.log_likelihood(vae, torch.zeros(2, 3, 28, 28))
    with pytest.raises(dgm.DgmError, match="no likelihood"):
        dgm.log_likelihood(dgm.create_model("gan", latent_dim=4), pixels)


def test_sample_quality_scores_any_images_the_same_way(tmp_path):
    real = dgm.load_dataset("mnist-mini").test.images[:300]
    from_tensor = dgm.sample_quality(real.float()[:, None] / 255, dataset="mnist-mini")
    from_numpy = dgm.sample_quality(real.numpy(), dataset="mnist-mini")
    np.savez(tmp_path / "digits.npz", images=real.numpy())
    from_npz = dgm.sample_quality(tmp_path / "digits.npz", dataset="mnist-mini")
    (tmp_path / "pngs").mkdir()
    for index, image in enumerate(real.numpy()):
        Image.fromarray(image).save(tmp_path / "pngs" / f"{index:04d}.png")
    from_pngs = dgm.sample_quality(tmp_path / "pngs", dataset="mnist-mini")
    assert from_tensor == from_numpy == from_npz == from_pngs
    network = from_tensor["feature_network"]
    assert network["sha256"] == hashlib.sha256(SHIPPED_CLASSIFIER.read_bytes()).hexdigest()
    quality = from_tensor["sample_quality"]
    # Real test digits are a perfect generator's samples: within a few FID points of the floor's.
    assert quality["model"]["fid"] < 3 * quality["real_floor"]["fid"] and quality["model"]["classes_at_5_percent"] == 10


def test_sample_quality_refuses_images_it_cannot_measure(tmp_path):
    with pytest.raises(dgm.DgmError, match=r"images must be \(N, 1, 28, 28\) or \(N, 28, 28\), got \(4, 32, 32\)"):
        dgm.sample_quality(torch.rand(4, 32, 32), dataset="mnist-mini")
    with pytest.raises(dgm.DgmError, match=r"float images must lie in \[0, 1\]"):
        dgm.sample_quality(torch.rand(4, 28, 28) * 255, dataset="mnist-mini")
    with pytest.raises(dgm.DgmError, match="holds no .png files"):
        dgm.sample_quality(tmp_path, dataset="mnist-mini")


def test_dgm_score_prints_what_sample_quality_returns(tmp_path):
    real = dgm.load_dataset("mnist-mini").test.images[:200]
    np.savez(tmp_path / "digits.npz", real.numpy())
    printed = json.loads(ok("score", tmp_path / "digits.npz", "--dataset", "mnist-mini", "--json").stdout)
    assert {k: v for k, v in printed.items() if k != "images"} == dgm.sample_quality(real.numpy(), dataset="mnist-mini")


def test_train_returns_a_run_and_reports_each_epoch_as_it_ends(tmp_path):
    seen = []
    run = dgm.train(
        "vae",
        zdim=2,
        hidden=16,
        epochs=1,
        data="mnist-mini",
        out=tmp_path / "run",
        checkpoint_dir=tmp_path / "ck",
        sample_epochs=(),
        on_epoch=seen.append,
    )
    assert run.status == "finished" and [record["epoch"] for record in seen] == [0, 1]
    on_disk = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert run.records == on_disk and seen[1]["val_elbo"] == on_disk[1]["val_elbo"]
    assert run.best is not None and run.load().config.zdim == 2 and run.checkpoint.is_file()
    longer = dgm.train("vae", epochs=2, out=tmp_path / "run", resume=True)
    assert longer.status == "finished" and [record["epoch"] for record in longer.records] == [0, 1, 2]
    with pytest.raises(dgm.DgmError, match="leave out zdim="):
        dgm.train("vae", zdim=3, epochs=3, resume=tmp_path / "run")
    with pytest.raises(dgm.DgmError, match="already holds a training run"):
        dgm.train("vae", epochs=1, data="mnist-mini", out=tmp_path / "run")


def test_train_takes_a_config_object_whose_defaults_are_no_choice(tmp_path):
    config = dgm.create_config("flow", arch="realnvp-mlp", couplings=2, hidden=8, epochs=1, sample_epochs=())
    run = dgm.train("flow", config, data="mnist-mini", out=tmp_path / "run", checkpoint_dir=tmp_path / "ck")
    assert run.status == "finished" and run.load().config == config
