"""A folder of the user's own images as a dataset: layouts, conversions, splits, the cache, bad input, and every
command on such a dataset. The folders are written in each test with Pillow from the bundled digits."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dgm_cli import image_folder
from dgm_cli.cli import app
from dgm_cli.data import load_bundled, load_dataset
from dgm_cli.errors import DgmError
from dgm_cli.feature_network import SHIPPED, feature_network, fits

runner = CliRunner()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return load_bundled()


def write_labelled(root: Path, digits, count: int, classes=(0, 1, 2)) -> list[tuple[Path, np.ndarray, int]]:
    """count 28x28 grayscale PNGs of the given digit classes, one folder per class (named after the digit)."""
    written = []
    images, labels = digits.train.images, digits.train.labels
    chosen = [i for i in range(len(labels)) if int(labels[i]) in classes][:count]
    for i in chosen:
        folder = root / f"digit-{int(labels[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(images[i].numpy()).save(path)
        written.append((path, images[i].numpy(), int(labels[i])))
    return written


def all_images(dataset) -> torch.Tensor:
    return torch.cat([dataset.train.images, dataset.val.images, dataset.test.images])


# ---------------------------------------------------------------- conversion of each kind of file


def test_each_mode_becomes_the_grayscale_image_it_shows(tmp_path, digits):
    """The decoded pixels against an independent computation of what each file holds."""
    pixels = digits.train.images[7].numpy()
    root = tmp_path / "modes"
    root.mkdir()
    Image.fromarray(pixels).save(root / "gray.png")
    Image.fromarray((pixels.astype(np.uint16) * 257)).save(root / "sixteen.png")  # 16-bit: 65535 is white
    alpha = np.full((28, 28), 128, dtype=np.uint8)
    rgba = np.dstack([np.full((28, 28), 255, np.uint8)] * 3 + [alpha])  # white at half opacity over black
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    rgb = np.dstack([pixels, np.zeros_like(pixels), np.zeros_like(pixels)])  # red channel only
    Image.fromarray(rgb, "RGB").save(root / "red.bmp")
    Image.fromarray(pixels).convert("P").save(root / "palette.png")
    decoded = {name: image_folder.decode_file(str(root / name), "crop") for name in os.listdir(root)}
    assert np.array_equal(decoded["gray.png"][0], pixels) and decoded["gray.png"][1:] == (False, False)
    assert np.array_equal(decoded["sixteen.png"][0], pixels) and decoded["sixteen.png"][1]
    assert np.abs(decoded["rgba.png"][0].astype(int) - 128).max() <= 1  # 255 * 128/255 over black
    # ITU-R 601-2 luma of pure red: L = 0.299 R
    assert np.abs(decoded["red.bmp"][0].astype(int) - np.rint(0.299 * pixels)).max() <= 1
    assert np.array_equal(decoded["palette.png"][0], pixels)


def test_sizes_crop_and_pad_to_28_by_28(tmp_path):
    """A 56-wide, 84-high image, bright in its middle 56 rows: crop keeps those rows (all bright); pad puts
    black bands of 14 columns beside the image, so the bright rows end before the sides."""
    tall = np.zeros((84, 56), dtype=np.uint8)
    tall[14:70] = 255
    path = tmp_path / "tall.png"
    Image.fromarray(tall).save(path)
    cropped, _, resized = image_folder.decode_file(str(path), "crop")
    padded, _, _ = image_folder.decode_file(str(path), "pad")
    assert resized and cropped.shape == (28, 28) and cropped.min() >= 250
    # padded: an 84x84 canvas, bright where rows and columns both lie in 14..70 (5..23 of 28); Lanczos rings a little
    assert padded[10:18, 10:18].min() >= 250
    assert padded[10:18, :3].max() <= 8 and padded[10:18, -3:].max() <= 8 and padded[:3].max() <= 8


# ---------------------------------------------------------------- layouts and splits


def test_class_folders_give_labels_and_a_seeded_split(tmp_path, digits):
    written = write_labelled(tmp_path / "three", digits, 70)
    (tmp_path / "three" / "README.txt").write_text("not an image")
    dataset = load_dataset(str(tmp_path / "three"))
    assert dataset.kind == "image-folder" and dataset.classes == 3
    assert dataset.class_names == ("digit-0", "digit-1", "digit-2")
    # a seventh for test, a sixth of the rest for validation
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (50, 10, 10)
    by_pixels = {pixels.tobytes(): label for _, pixels, label in written}
    for split in dataset.splits.values():
        for image, label in zip(split.images, split.labels):
            assert by_pixels[image.numpy().tobytes()] == label  # every image keeps its folder's class
    assert any("ignored 1 file" in note for note in dataset.notes)
    again = load_dataset(str(tmp_path / "three"))
    assert dataset.identity() == again.identity()  # the same split every time
    assert dataset.preparation["split_seed"] == 0 and dataset.preparation["seeded_splits"] == ["test", "val"]


def test_test_and_val_folders_are_the_splits(tmp_path, digits):
    for split, count in (("train", 30), ("val", 6), ("test", 9)):
        write_labelled(tmp_path / "given" / split, digits, count)
    dataset = load_dataset(str(tmp_path / "given"))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (30, 6, 9)
    assert dataset.preparation["split_folders"] == ["val", "test"] and dataset.preparation["split_seed"] is None


def test_a_flat_folder_is_unlabelled(tmp_path, digits):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(14):
        Image.fromarray(digits.train.images[i].numpy()).save(root / f"{i}.png")
    dataset = load_dataset(str(root))
    assert dataset.classes == 0 and (dataset.train.labels == -1).all()
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 14


def test_parallel_decoding_equals_serial(tmp_path, digits):
    write_labelled(tmp_path / "many", digits, 60)
    listing = image_folder.scan(tmp_path / "many")
    serial = image_folder.decode_all(listing, "crop", workers=1)
    parallel = image_folder.decode_all(listing, "crop", workers=2)
    assert torch.equal(serial.images, parallel.images) and serial.failed == parallel.failed == []


# ---------------------------------------------------------------- the cache


def test_the_cache_is_used_and_a_changed_folder_is_read_again(tmp_path, digits, monkeypatch):
    written = write_labelled(tmp_path / "cached", digits, 21)
    first = load_dataset(str(tmp_path / "cached"))
    assert first.notes[0].startswith("decoded 21 images")
    assert len(list((tmp_path / "cache" / "image-folders").glob("*.safetensors"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds this listing")

    monkeypatch.setattr(image_folder, "decode_all", no_decoding)
    second = load_dataset(str(tmp_path / "cached"))
    assert second.notes[0].startswith("read 21 images") and second.identity() == first.identity()
    monkeypatch.undo()
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    Image.fromarray(255 - written[0][1]).save(written[0][0])  # same name, new contents and time
    os.utime(written[0][0], ns=(1, 1))
    third = load_dataset(str(tmp_path / "cached"))
    assert third.notes[0].startswith("decoded") and third.identity() != first.identity()


# ---------------------------------------------------------------- bad input


def test_bad_folders_get_one_line_errors(tmp_path, digits):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    (tmp_path / "file.png").write_bytes(b"")
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "empty"): "is empty",
        str(tmp_path / "texts"): "holds no images (1 other file(s))",
        str(tmp_path / "file.png"): "is a file, not a folder",
    }
    for path, message in cases.items():
        with pytest.raises(DgmError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_dataset(path)
    mixed = tmp_path / "mixed"
    write_labelled(mixed, digits, 10)
    Image.fromarray(digits.train.images[0].numpy()).save(mixed / "loose.png")
    with pytest.raises(DgmError, match="beside the class folders"):
        load_dataset(str(mixed))


def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path, digits):
    root = tmp_path / "broken"
    write_labelled(root, digits, 20)
    bad = root / "digit-1" / "zz-corrupt.png"
    good = (root / "digit-1").iterdir().__next__().read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated PNG
    with pytest.raises(DgmError, match="zz-corrupt.png cannot be read as an image.*--skip-bad-images"):
        load_dataset(str(root))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))  # nothing written
    dataset = load_dataset(str(root), skip_bad=True)
    assert len(all_images(dataset)) == 20 and dataset.preparation["skipped"] == 1
    assert any(note.startswith("skipped 1 file(s)") for note in dataset.notes)


def test_a_folder_too_large_for_memory_is_refused_before_decoding():
    with pytest.raises(DgmError, match="holds 1,000,000 images.*GiB.*fewer images"):
        image_folder.check_memory(Path("big"), 1_000_000, available=2**30)
    image_folder.check_memory(Path("small"), 1000, available=2**30)


# ---------------------------------------------------------------- feature networks


def test_the_shipped_classifier_that_fits_is_chosen():
    assert fits({"name": "mnist"}, {"name": "mnist-mini"}) and not fits({"name": "mnist"}, {"name": "fashion-mnist"})
    assert feature_network({"name": "mnist-mini"}, "cpu").path == SHIPPED["mnist"]
    assert feature_network({"name": "fashion-mnist"}, "cpu").path == SHIPPED["fashion-mnist"]
    assert feature_network({"name": "x", "kind": "image-folder"}, "cpu") is None
    with pytest.raises(DgmError, match="trained on mnist, not on fashion-mnist"):
        feature_network({"name": "fashion-mnist"}, "cpu", classifier=SHIPPED["mnist"])


# ---------------------------------------------------------------- every command on a folder


def test_train_sample_eval_interpolate_on_a_folder(tmp_path, digits):
    write_labelled(tmp_path / "own", digits, 140)
    small = ["--epochs", "1", "--batch-size", "32", "--checkpoint-dir", str(tmp_path / "ck")]
    result = runner.invoke(
        app,
        [
            "train",
            "vae",
            "--dataset",
            "own",
            "--zdim",
            "2",
            "--hidden",
            "32",
            "--conditional",
            "--out",
            "runs/cvae",
            *small,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "decoded 140 images in 3 classes" in result.stderr
    config = json.loads(Path("runs/cvae/config.json").read_text())
    assert config["config"]["classes"] == 3 and config["data"]["kind"] == "image-folder"
    result = runner.invoke(app, ["sample", "vae", "runs/cvae", "-n", "6", "--out", "s.png"])
    assert result.exit_code == 0 and Image.open("s.png").size[0] > 0, result.output
    result = runner.invoke(app, ["sample", "vae", "runs/cvae", "--label", "3"])
    assert result.exit_code == 1 and "not one of this model's classes (0..2)" in result.stderr
    result = runner.invoke(app, ["interpolate", "vae", "runs/cvae", "--from-images", "--out", "i.png"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["manifold", "vae", "runs/cvae", "--label", "2", "--grid", "3", "--out", "m.png"])
    assert result.exit_code == 0, result.output

    # Without a classifier of these images, sample quality is skipped with a note, never measured by MNIST's.
    quick = ["--iw-samples", "5", "--mc-samples", "0", "--samples", "60", "--json"]
    result = runner.invoke(app, ["eval", "vae", "runs/cvae", *quick])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "sample_quality" not in report and "no classifier fits the image folder" in report["sample_quality_skipped"]
    result = runner.invoke(app, ["eval", "vae", "runs/cvae", *quick, "--classifier", str(SHIPPED["mnist"])])
    assert result.exit_code == 1 and "trained on mnist, not on the image folder" in result.stderr

    result = runner.invoke(app, ["train", "classifier", "--dataset", "own", "--out", "runs/cls", *small])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", "vae", "runs/cvae", *quick, "--classifier", "runs/cls/last.safetensors"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["feature_network"]["checkpoint"] == "runs/cls/last.safetensors"
    assert report["feature_network"]["classes"] == 3 and len(report["sample_quality"]["model"]["histogram"]) == 3
    assert len(report["conditional_quality"]["per_class_accuracy"]) == 3
    assert len(report["class_mixture"]["generative_classifier"]["per_class_accuracy"]) == 3

    # The folder changes: the checkpoint's data are refused, by content.
    victim = next((tmp_path / "own" / "digit-0").iterdir())
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(victim)
    result = runner.invoke(app, ["eval", "vae", "runs/cvae", *quick])
    assert result.exit_code == 1 and "are not the data" in result.stderr and "content_md5" in result.stderr


def test_unlabelled_folder_trains_but_refuses_labels(tmp_path, digits):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(30):
        Image.fromarray(digits.train.images[i].numpy()).save(root / f"{i}.png")
    small = ["--dataset", str(root), "--epochs", "1", "--checkpoint-dir", str(tmp_path / "ck")]
    result = runner.invoke(app, ["train", "gan", "--out", "runs/gan", "--batch-size", "8", *small])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "vae", "--conditional", "--out", "runs/cvae", *small])
    assert result.exit_code == 1 and "needs class labels" in result.stderr and not Path("runs/cvae").exists()
    result = runner.invoke(app, ["train", "classifier", "--out", "runs/cls", *small])
    assert result.exit_code == 1 and "a classifier needs class labels" in result.stderr


def test_resume_finds_a_moved_folder_by_content(tmp_path, digits):
    write_labelled(tmp_path / "first", digits, 40)
    small = ["--epochs", "1", "--batch-size", "16", "--hidden", "16", "--checkpoint-dir", str(tmp_path / "ck")]
    result = runner.invoke(app, ["train", "vae", "--dataset", str(tmp_path / "first"), "--out", "runs/v", *small])
    assert result.exit_code == 0, result.output
    (tmp_path / "first").rename(tmp_path / "moved")
    result = runner.invoke(app, ["train", "vae", "--resume", "runs/v", "--epochs", "2"])
    assert result.exit_code == 1 and "pass --data-dir" in result.stderr
    result = runner.invoke(
        app, ["train", "vae", "--resume", "runs/v", "--epochs", "2", "--data-dir", str(tmp_path / "moved")]
    )
    assert result.exit_code == 0, result.output
