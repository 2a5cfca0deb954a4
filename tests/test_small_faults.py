"""Small faults a tutorial runs into: pictures that overwrite each other, help that names an option twice, a data
folder that is a file."""

from pathlib import Path

from conftest import invoke_dgm


def test_default_picture_names_carry_the_model_so_a_tutorial_keeps_every_picture():
    for args in (
        ("sample", "vae", "-n", "4"),
        ("sample", "gan", "-n", "4"),
        ("interpolate", "vae", "--rows", "1", "--steps", "1"),
        ("manifold", "vae-zdim2", "--grid", "3"),
    ):
        result = invoke_dgm(*args)
        assert result.exit_code == 0, result.output
    pictures = ["vae-samples.png", "gan-samples.png", "vae-interpolation.png", "vae-zdim2-manifold.png"]
    assert sorted(path.name for path in Path(".").glob("*.png")) == sorted(pictures)


def test_the_number_of_samples_is_one_option_with_two_names():
    help_text = invoke_dgm("sample", "--help").stdout
    assert "--images" in help_text and "--n " not in help_text
    result = invoke_dgm("sample", "vae", "--images", "2", "--out", "two.png")
    assert result.exit_code == 0 and "wrote 2 samples" in result.stderr


def test_a_data_folder_that_is_a_file_is_named_as_such(tmp_path):
    Path("not-a-folder").write_text("")
    for env, args in (
        ({"DGM_DATA_DIR": str(tmp_path / "not-a-folder")}, ()),
        ({}, ("--data-dir", "not-a-folder")),
    ):
        result = invoke_dgm("train", "vae", "--epochs", "0", "--dataset", "mnist", "--out", "run", *args, env=env)
        assert result.exit_code == 1 and "which is a file; name the folder that holds MNIST/raw" in result.stderr
        assert "Download failed" not in result.stderr and not Path("run").exists()


def test_a_dangling_link_in_an_image_folder_is_a_bad_file_like_any_other(tmp_path):
    import numpy as np
    from PIL import Image

    for digit in "01":
        (tmp_path / "glyphs" / digit).mkdir(parents=True)
        for index in range(6):
            pixels = np.random.default_rng(index).integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "glyphs" / digit / f"{index}.png")
    (tmp_path / "glyphs" / "0" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    common = ("train", "vae", "--epochs", "1", "--hidden", "8", "--dataset", tmp_path / "glyphs")
    refused = invoke_dgm(*common, "--out", "strict")
    assert refused.exit_code == 1 and "gone.png cannot be read as an image" in refused.stderr
    assert "--skip-bad-images" in refused.stderr and not Path("strict").exists()
    skipped = invoke_dgm(*common, "--skip-bad-images", "--out", "lenient")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 file(s) that cannot be read as images (first: 0/gone.png" in skipped.stderr


BROKEN_TORCHVISION = """
import sys
class Broken:  # what a torchvision built for another torch does on import
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")
sys.meta_path.insert(0, Broken())
from dgm_cli.cli import main
sys.argv = ["dgm", *sys.argv[1:]]
main()
"""


def test_a_torchvision_that_does_not_match_torch_is_named_in_one_line():
    import os
    import subprocess
    import sys

    import torch

    online = {key: value for key, value in os.environ.items() if key != "DGM_OFFLINE"}  # it fails before any download

    def run(*args):
        command = [sys.executable, "-c", BROKEN_TORCHVISION, *args]
        return subprocess.run(command, capture_output=True, text=True, env=online)

    quality = run("eval", "vae", "--dataset", "mnist-mini", "--iw-samples", "0", "--mc-samples", "0", "--samples", "50")
    download = run("train", "vae", "--epochs", "0", "--dataset", "mnist", "--out", "run")  # no MNIST here: a download
    for result in (quality, download):
        assert result.returncode == 1, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("error: torchvision ") and f"does not work with torch {torch.__version__}" in line
        assert "operator torchvision::nms does not exist" in line and "Traceback" not in result.stderr


def test_eval_of_a_run_finds_its_data_where_the_run_read_them(mnist_root):
    trained = invoke_dgm(
        "train",
        "vae",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--batch-size",
        "1000",
        "--sample-epochs",
        "",
        "--dataset",
        "mnist",
        "--data-dir",
        mnist_root,
        "--out",
        "run",
    )
    assert trained.exit_code == 0, trained.output
    # no --data-dir, and DGM_DATA_DIR (set by conftest) names an empty folder: the run's own record is used
    result = invoke_dgm(
        "eval", "vae", "run", "--limit", "20", "--iw-samples", "5", "--mc-samples", "0", "--samples", "0"
    )
    assert result.exit_code == 0, result.output


def test_a_disk_full_at_the_first_checkpoint_leaves_a_folder_the_same_command_accepts(monkeypatch):
    from safetensors import SafetensorError

    import dgm_cli.checkpoint as checkpoint

    real_save = checkpoint.save_file

    def full_disk(tensors, filename, metadata=None):  # what safetensors itself raises on ENOSPC
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })'
        )

    command = ("train", "vae", "--epochs", "1", "--hidden", "8", "--dataset", "mnist-mini", "--out", "run")
    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    failed = invoke_dgm(*command)
    assert failed.exit_code == 1 and len(failed.stderr.strip().splitlines()[-1:]) == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: cannot write run/") and "no space left on the disk of run" in last and "MB free" in last
    )
    assert "Traceback" not in failed.output and not list(Path("run").glob("*.safetensors"))
    assert not [path for path in Path("run").iterdir() if ".tmp" in path.name]
    monkeypatch.setattr(checkpoint, "save_file", real_save)  # space freed: the same command now runs
    again = invoke_dgm(*command)
    assert again.exit_code == 0, again.output
    assert Path("run/last.safetensors").is_file() and Path("run/state.safetensors").is_file()
