"""Checkpoints: a faithful round trip, and every malformed file refused before any weight is used."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dgm_cli.checkpoint import load_checkpoint, read_header, save_checkpoint
from dgm_cli.errors import DgmError
from dgm_cli.registry import create_config, create_model

DATA = {"name": "mnist-mini", "train": 5000, "val": 1000, "test": 1000, "fallback": False}
TRAIN = {"epoch": 3, "step": 120, "seed": 7}


def saved_vae(path: Path, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("vae", zdim=3, hidden=16, **overrides)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    save_checkpoint(path, model, model_name="vae", config=model.config, data=DATA, train=TRAIN)
    return model


def rewrite(path: Path, *, tensors=None, **metadata_changes) -> None:
    """Rewrite a checkpoint with changed tensors or metadata, as a hand-edited or foreign file would be."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    metadata.update({key.replace("__", "."): value for key, value in metadata_changes.items()})
    metadata = {k: v for k, v in metadata.items() if v is not None}
    save_file(tensors if tensors is not None else load_file(str(path)), str(path), metadata=metadata)


def test_round_trip_restores_weights_config_and_metadata(tmp_path):
    original = saved_vae(tmp_path / "vae.safetensors", binarize="static")
    loaded, info = load_checkpoint(tmp_path / "vae.safetensors", expected_model="vae")
    assert info.model_name == "vae" and info.config == original.config
    assert info.data == DATA and info.train == TRAIN
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert not loaded.training
    z = torch.randn(4, 3)
    torch.testing.assert_close(loaded.decoder_logits(z), original.decoder_logits(z))
    assert info.as_dict()["parameters"] == sum(p.numel() for p in original.parameters())


def test_compile_and_ddp_prefixes_are_stripped(tmp_path):
    class Wrapper(torch.nn.Module):  # what torch.compile and DDP put around a module
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    model = create_model("vae", zdim=2, hidden=8)
    save_checkpoint(
        tmp_path / "c.safetensors", Wrapper(model), model_name="vae", config=model.config, data={}, train={}
    )
    assert all(not key.startswith("_orig_mod") for key in load_file(str(tmp_path / "c.safetensors")))
    load_checkpoint(tmp_path / "c.safetensors")


def test_saving_replaces_the_old_file_atomically(tmp_path):
    path = tmp_path / "vae.safetensors"
    saved_vae(path)
    before = path.read_bytes()

    class Exploding(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, Exploding(), model_name="vae", config=create_config("vae"), data={}, train={})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae.safetensors"]


class Booby:
    """Unpickling this would create a file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.safetensors"
    saved_vae(good)
    blob = good.read_bytes()
    cases = {}

    def case(name, content, message):
        path = tmp_path / f"{name}.safetensors"
        if isinstance(content, bytes):
            path.write_bytes(content)
        cases[name] = (path, message)
        return path

    case("missing", None, "does not exist")
    folder = case("folder", None, "is a folder")  # the library: not a file; a command: not a run folder either
    folder.mkdir()
    case("empty", b"", "is empty")
    for offset in (4, 9, 200, len(blob) // 2, len(blob) - 1):
        case(f"truncated-{offset}", blob[:offset], "not a readable safetensors checkpoint")
    case(
        "random",
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes(),
        "not a readable safetensors checkpoint",
    )
    case("pickle", pickle.dumps(Booby(tmp_path / "PWNED")), "not a readable safetensors checkpoint")
    plain = case("plain", None, "without dgm metadata")
    save_file({"w": torch.zeros(2)}, str(plain))
    for name, changes, message in [
        ("unknown-model", {"dgm__model": "vqvae"}, "unknown model 'vqvae'"),
        ("newer-format", {"dgm__format": "99"}, "format '99'"),
        ("bad-json", {"dgm__config": "{zdim: 3"}, "not valid JSON"),
        ("not-object", {"dgm__data": "[1, 2]"}, "must be a JSON object"),
        ("no-config", {"dgm__config": None}, "no dgm.config"),
        ("absurd-zdim", {"dgm__config": json.dumps({"zdim": 10**9})}, "zdim must be at most 1024"),
        ("wrong-type", {"dgm__config": json.dumps({"zdim": "3"})}, "zdim must be a whole number"),
        ("unknown-field", {"dgm__config": json.dumps({"zdim": 3, "depth": 9})}, "unknown VAEConfig field"),
        ("wrong-shapes", {"dgm__config": json.dumps({"zdim": 1000, "hidden": 16})}, "wrong shapes"),
    ]:
        path = case(name, blob, message)
        rewrite(path, **changes)
    tensors = load_file(str(good))
    missing = case("missing-tensor", None, "missing tensors decoder.2.bias")
    save_file({k: v for k, v in tensors.items() if k != "decoder.2.bias"}, str(missing), metadata=read_metadata(good))
    extra = case("extra-tensor", None, "unexpected tensors extra")
    save_file({**tensors, "extra": torch.zeros(1)}, str(extra), metadata=read_metadata(good))
    return cases


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_malformed_checkpoints_are_refused_with_a_reason(tmp_path):
    for name, (path, message) in bad_files(tmp_path).items():
        with pytest.raises(DgmError) as error:
            load_checkpoint(path)
        assert message in str(error.value), name
        assert "\n" not in str(error.value), name
    assert not (tmp_path / "PWNED").exists()


def test_a_checkpoint_of_another_model_is_refused_when_a_model_is_named(tmp_path):
    saved_vae(tmp_path / "vae.safetensors")
    with pytest.raises(DgmError, match="holds a vae model, not a gan"):
        read_header(tmp_path / "vae.safetensors", expected_model="gan")


def test_a_config_that_disagrees_with_the_tensors_is_refused_before_any_real_allocation(tmp_path, monkeypatch):
    from dgm_cli.models.vae import VAE

    path = tmp_path / "huge.safetensors"
    saved_vae(path)
    rewrite(path, dgm__config=json.dumps({"zdim": 1024, "hidden": 16384}))
    built_on = []
    original_init = VAE.__init__

    def recording_init(self, config):
        built_on.append(torch.get_default_device().type)
        original_init(self, config)

    monkeypatch.setattr(VAE, "__init__", recording_init)
    with pytest.raises(DgmError, match="wrong shapes"):
        load_checkpoint(path)
    assert built_on == ["meta"]
