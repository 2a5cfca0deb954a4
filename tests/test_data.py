"""Data loading against real files and torchvision's own reader."""

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from conftest import load_script

from dgm_cli import data
from dgm_cli.data import FILES, SOURCES, encode_idx, load_dataset, parse_idx, write_idx_gz
from dgm_cli.errors import DgmError


def copy_mini(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in FILES.values():
        shutil.copy(data.ASSETS / "mnist-mini" / name, folder / name)
    return folder


def test_full_mnist_splits_match_torchvision(mnist_root, tmp_path):
    from torchvision.datasets import MNIST

    dataset = load_dataset("mnist", mnist_root)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (50_000, 10_000, 10_000)
    shutil.copytree(mnist_root, tmp_path / "tv")
    official_train = MNIST(str(tmp_path / "tv"), train=True, download=True)  # unpacks, no network
    official_test = MNIST(str(tmp_path / "tv"), train=False, download=True)
    assert torch.equal(dataset.train.images, official_train.data[:50_000])
    assert torch.equal(dataset.val.images, official_train.data[50_000:])
    assert torch.equal(dataset.val.labels, official_train.targets[50_000:])
    assert torch.equal(dataset.test.images, official_test.data)
    assert torch.equal(dataset.test.labels, official_test.targets)


def test_data_dir_may_also_name_the_raw_folder_itself(mnist_root):
    assert len(load_dataset("mnist", mnist_root / "MNIST" / "raw").test) == 10_000


def test_bundled_subset_rebuilds_from_the_official_files(mnist_root, tmp_path):
    digests = load_script("make_mnist_mini").build(mnist_root / "MNIST" / "raw", tmp_path / "mini")
    assert digests == SOURCES["mnist-mini"].content_md5
    for name in FILES.values():
        rebuilt = gzip.decompress((tmp_path / "mini" / name).read_bytes())
        assert rebuilt == gzip.decompress((data.ASSETS / "mnist-mini" / name).read_bytes())


def test_bundled_subset_is_real_balanced_mnist():
    mini = load_dataset("mnist-mini")
    assert (len(mini.train), len(mini.val), len(mini.test)) == (5_000, 1_000, 1_000)
    assert mini.train.images.dtype == torch.uint8 and mini.train.images.shape[1:] == (28, 28)
    counts = torch.bincount(mini.train.labels, minlength=10)
    assert counts.min() > 350  # every digit is well represented
    assert mini.fallback_reason is None


def test_fashion_mnist_from_the_debian_package():
    if not (Path("/usr/share/datasets/fashion-mnist") / FILES["test_images"]).is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    fashion = load_dataset("fashion-mnist")
    assert (len(fashion.train), len(fashion.val), len(fashion.test)) == (50_000, 10_000, 10_000)
    assert torch.bincount(fashion.test.labels).tolist() == [1000] * 10


def test_missing_mnist_falls_back_to_the_subset_only_when_no_dataset_was_named(tmp_path):
    fallback = load_dataset(None, tmp_path / "empty")
    assert fallback.name == "mnist-mini"
    assert str(tmp_path / "empty") in fallback.fallback_reason
    assert fallback.describe()["fallback"] is True
    with pytest.raises(DgmError) as error:
        load_dataset("mnist", tmp_path / "empty")
    message = str(error.value)
    for name in FILES.values():
        assert name in message
    assert "--data-dir" in message and str(tmp_path / "empty" / "MNIST" / "raw") in message


def test_missing_files_are_downloaded_through_torchvision_into_the_data_root(mnist_root, tmp_path, monkeypatch):
    calls = []

    def fake_download(source, root):
        calls.append((source.name, root))
        shutil.copytree(mnist_root / "MNIST", root / "MNIST")
        return None

    monkeypatch.setattr(data, "download", fake_download)
    dataset = load_dataset("mnist", tmp_path / "cache")
    assert calls == [("mnist", tmp_path / "cache")]
    assert dataset.location == str((tmp_path / "cache" / "MNIST" / "raw").resolve())


def test_offline_switch_reports_why_nothing_was_downloaded(tmp_path):
    assert "DGM_OFFLINE" in data.download(SOURCES["mnist"], tmp_path)


def test_corrupt_files_are_refused_with_the_file_named(tmp_path):
    folder = copy_mini(tmp_path / "mnist" / "MNIST" / "raw")
    labels = folder / FILES["test_labels"]
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] = (content[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(content)))
    source = data.Source(name="mini-copy", content_md5=SOURCES["mnist-mini"].content_md5)
    with pytest.raises(DgmError, match="t10k-labels-idx1-ubyte.gz does not hold the expected data"):
        data.read_source(source, folder)
    truncated = folder / FILES["train_images"]
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(DgmError, match="cannot be unpacked"):
        data.read_idx_gz(truncated, content_md5=None)


def test_mnist_with_wrong_contents_is_not_silently_used(tmp_path):
    copy_mini(tmp_path / "MNIST" / "raw")  # the right names, but not the full files
    with pytest.raises(DgmError, match="does not hold the expected data"):
        load_dataset(None, tmp_path)


def test_idx_round_trip_and_malformed_headers():
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    assert torch.equal(parse_idx(encode_idx(images), what="x"), images)
    labels = torch.tensor([1, 2, 3], dtype=torch.uint8)
    assert torch.equal(parse_idx(encode_idx(labels), what="x"), labels)
    with pytest.raises(DgmError, match="magic number"):
        parse_idx(b"\x00\x00\x09\x99" + bytes(20), what="x")
    with pytest.raises(DgmError, match="needs"):
        parse_idx(encode_idx(images)[:-1], what="x")
    with pytest.raises(DgmError, match="too short"):
        parse_idx(b"\x00", what="x")


def test_written_idx_files_carry_no_timestamp(tmp_path):
    values = torch.arange(10, dtype=torch.uint8)
    write_idx_gz(tmp_path / "a.gz", values)
    write_idx_gz(tmp_path / "b.gz", values)
    assert (
        hashlib.md5((tmp_path / "a.gz").read_bytes()).digest() == hashlib.md5((tmp_path / "b.gz").read_bytes()).digest()
    )
