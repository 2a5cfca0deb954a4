"""Hostile input through the commands: every bad file or option gets one line, exit 1 or 2, no traceback, no output file.

The readers themselves are fuzzed with hypothesis: any bytes either load or
raise DgmError, never another exception.
"""

import gzip
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_checkpoint import bad_files, saved_vae
from typer.testing import CliRunner

from dgm_cli.checkpoint import load_checkpoint
from dgm_cli.cli import app
from dgm_cli.data import FILES, load_dataset, parse_idx, read_idx_gz
from dgm_cli.errors import DgmError
from dgm_cli.state import load_state

ASSETS = Path(__file__).resolve().parents[1] / "dgm_cli" / "assets" / "mnist-mini"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(code: int, *args, message: str, out: Path | None = None):
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    if code == 1:  # one line of error, the last thing printed (a training may have said what it starts first)
        lines = result.stderr.strip().splitlines()
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    if out is not None:
        assert not out.exists() and not list(out.parent.glob(f".{out.stem}.*")), "a partial output file was left"
    return result


# ---------------------------------------------------------------- checkpoints, through every command that reads one

COMMANDS = {
    "sample": lambda path, out: ["sample", "vae", path, "--out", out],
    "eval": lambda path, out: ["eval", "vae", path, "--iw-samples", "5", "--samples", "0"],
    "info": lambda path, out: ["info", path],
    "interpolate": lambda path, out: ["interpolate", "vae", path, "--out", out],
    "manifold": lambda path, out: ["manifold", "vae", path, "--out", out],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_malformed_checkpoint_is_refused_by_every_command(command, tmp_path):
    cases = bad_files(tmp_path)
    for name, (path, message) in cases.items():
        out = tmp_path / f"{name}-{command}.png"
        refused(1, *COMMANDS[command](path, out), message=message, out=out)
    assert not (tmp_path / "PWNED").exists()  # the pickle was never unpickled


def test_another_models_checkpoint_is_named_as_such(tmp_path):
    saved_vae(tmp_path / "vae.safetensors")
    for command in ("sample", "eval", "interpolate"):
        refused(1, command, "flow", tmp_path / "vae.safetensors", message="holds a vae model, not a flow")


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "args",
    [
        ["train", "flow", "--arch", "glow-xl"],
        ["train", "flow", "--alpha", "0"],
        ["train", "flow", "--hidden", "1000000000"],
        ["train", "flow", "--max-grad-norm", "-1"],
        ["train", "gan", "--ema", "1"],
        ["train", "vae", "--save-every", "0"],
        ["train", "vae", "--seed", "-1"],
        ["train", "vae", "--epochs", "ten"],
        ["train", "classifier", "--lr", "nan"],
        ["sample", "flow", "--temperature", "-0.5"],
        ["sample", "vae", "-n", "100000"],
        ["sample", "vae", "--nrow", "0"],
        ["eval", "flow", "--dequantization-draws", "-1"],
        ["eval", "vae", "--limit", "0"],
        ["eval", "vae", "--batch-size", "0"],
        ["interpolate", "vae", "--steps", "101"],
        ["interpolate", "vae", "--rows", "0"],
        ["interpolate", "vae", "--classes", "3"],
        ["manifold", "vae", "--edge", "0.6"],
        ["manifold", "vae", "--device", "gpu0"],
        ["info"],
    ],
)
def test_out_of_range_and_malformed_options_are_usage_errors(args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not Path("runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["flow", "--arch", "realnvp-ms", "--couplings", "4", "--hidden", "16"],
            "--couplings, --hidden would change nothing in this configuration (--couplings belongs to --arch "
            "realnvp-mlp or realnvp-conv; --hidden belongs to --arch realnvp-mlp); leave them out",
        ),
        (["flow", "--channels", "8"], "--channels belongs to --arch realnvp-ms"),
        (["flow", "--dequantization-steps", "2"], "--dequantization-steps belongs to --dequantization variational"),
        (["flow", "--lr-decay", "0.9"], "--lr-decay belongs to --lr-schedule exponential"),
        (["vae", "--zdim2", "10"], "--zdim2 belongs to --stochastic-layers 2"),
    ],
)
def test_options_of_another_configuration_are_refused_not_stored(args, message, tmp_path):
    refused(1, "train", *args, "--dataset", "mnist-mini", "--out", tmp_path / "run", message=message)
    assert not (tmp_path / "run").exists()


def test_resume_of_what_is_not_a_run_says_so(tmp_path):
    refused(1, "train", "vae", "--resume", tmp_path / "nowhere", message="nowhere: it does not exist")
    (tmp_path / "empty").mkdir()
    refused(1, "train", "vae", "--resume", tmp_path / "empty", message="holds no state.safetensors")
    run_folder = tmp_path / "broken"
    run_folder.mkdir()
    (run_folder / "state.safetensors").write_bytes(b"\x00" * 100)
    refused(1, "train", "vae", "--resume", run_folder, message="is not a readable training state")
    refused(1, "train", "vae", "--resume", "last", message="no run of the vae to resume")


def test_a_state_that_does_not_fit_its_model_is_refused(tmp_path):
    import json

    from dgm_cli.registry import create_config
    from dgm_cli.state import TrainingState, save_state

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"seed": 0, "data": load_dataset("mnist-mini", None).describe()}))
    alien = torch.nn.Linear(2, 2)
    save_state(
        folder / "state.safetensors",
        TrainingState(
            "vae",
            create_config("vae"),
            0,
            0,
            [{"epoch": 0}],
            None,
            alien.state_dict(),
            [],
            {"rng.torch": torch.get_rng_state()},
        ),
    )
    refused(1, "train", "vae", "--resume", folder, message="does not fit its own model and optimizers")
    refused(1, "train", "gan", "--resume", folder, message="holds a vae run; resume it with dgm train vae")


# ---------------------------------------------------------------- data folders


def data_folder(tmp_path: Path, name: str, damage) -> Path:
    raw = tmp_path / name / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for file in FILES.values():
        shutil.copy(ASSETS / file, raw / file)
    damage(raw / FILES["train_images"])
    return tmp_path / name


def rewrite_gz(path: Path, change) -> None:
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


DAMAGE = {
    "wrong-size": (lambda p: rewrite_gz(p, lambda b: b[:-784]), "does not hold the expected data"),
    "wrong-magic": (lambda p: rewrite_gz(p, lambda b: b"\x00\x00\x07\x77" + b[4:]), "does not hold the expected data"),
    "corrupt-gzip": (lambda p: p.write_bytes(p.read_bytes()[:3000] + b"\xff" * 50), "cannot be unpacked"),
    "not-gzip": (lambda p: p.write_bytes(b"<html>404</html>"), "cannot be unpacked"),
    "empty": (lambda p: p.write_bytes(b""), "does not hold the expected data"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_data_files_are_named_and_nothing_is_written(name, tmp_path):
    damage, message = DAMAGE[name]
    folder = data_folder(tmp_path, name, damage)
    result = refused(
        1, "train", "vae", "--dataset", "mnist", "--data-dir", folder, "--out", tmp_path / "run", message=message
    )
    assert FILES["train_images"] in result.stderr
    assert not (tmp_path / "run").exists()


def test_idx_headers_that_lie_about_their_size_are_refused_before_allocating():
    with pytest.raises(DgmError, match="needs"):
        parse_idx(b"\x00\x00\x08\x03" + (2**31 - 1).to_bytes(4, "big") * 3, what="x")  # claims 10^28 pixels
    with pytest.raises(DgmError, match="needs"):
        parse_idx(b"\x00\x00\x08\x01" + (-5).to_bytes(4, "big", signed=True), what="x")


# ---------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "good.safetensors"
    saved_vae(path)
    return path.read_bytes()


def mutate(blob: bytes, data) -> bytes:
    """Flip, delete or insert bytes, mostly in the JSON header where the reader's decisions are made."""
    blob = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        limit = data.draw(st.sampled_from([min(len(blob), 600), len(blob)]))
        if not blob:
            break
        where = data.draw(st.integers(0, max(0, limit - 1)))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            blob[where] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del blob[where : where + data.draw(st.integers(1, 16))]
        elif action == "insert":
            blob[where:where] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del blob[where:]
    return bytes(blob)


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints_load_or_raise_dgm_error(checkpoint_bytes, tmp_path, data):
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(mutate(checkpoint_bytes, data))
    try:
        model, _ = load_checkpoint(path)
    except DgmError as error:
        assert "\n" not in str(error)
    else:
        assert sum(p.numel() for p in model.parameters()) < 10**7


@FUZZ
@given(data=st.data())
def test_fuzzed_training_states_load_or_raise_dgm_error(tmp_path, data):
    from dgm_cli.registry import create_config
    from dgm_cli.state import TrainingState, save_state

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    good = tmp_path / "good.safetensors"
    save_state(
        good,
        TrainingState(
            "vae",
            create_config("vae"),
            1,
            5,
            [{"epoch": 1}],
            -100.0,
            model.state_dict(),
            [optimizer.state_dict()],
            {"rng.torch": torch.get_rng_state()},
        ),
    )
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(mutate(good.read_bytes(), data))
    try:
        load_state(path)
    except DgmError as error:
        assert "\n" not in str(error)


@FUZZ
@given(blob=st.binary(max_size=64), head=st.sampled_from([b"", b"\x00\x00\x08\x03", b"\x00\x00\x08\x01"]))
def test_fuzzed_idx_bytes_parse_or_raise_dgm_error(blob, head):
    try:
        values = parse_idx(head + blob, what="fuzz")
    except DgmError:
        return
    assert values.dtype == torch.uint8 and values.numel() == len(head + blob) - (16 if values.dim() == 3 else 8)


@FUZZ
@given(cut=st.integers(0, 5000), junk=st.binary(max_size=32))
def test_fuzzed_gzip_files_read_or_raise_dgm_error(tmp_path, cut, junk):
    original = (ASSETS / FILES["test_labels"]).read_bytes()
    path = tmp_path / "labels.gz"
    path.write_bytes(original[:cut] + junk)
    try:
        read_idx_gz(path, content_md5=None)
    except DgmError as error:
        assert "\n" not in str(error)


def test_the_bundled_subset_still_loads():  # the fixtures above copy it; make sure they copied real data
    assert len(load_dataset("mnist-mini", None).train) == 5000
