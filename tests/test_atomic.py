"""A failed write never damages the previous file or leaves a temporary behind."""

import pytest

from dgm_cli.atomic import atomic_path, ensure_writable_dir, write_text
from dgm_cli.errors import DgmError


def test_failed_write_keeps_the_old_version(tmp_path):
    target = tmp_path / "metrics.jsonl"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_successful_write_replaces_and_creates_folders(tmp_path):
    write_text(tmp_path / "a" / "b" / "c.txt", "new")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "new"


def test_a_file_where_a_folder_should_be_is_named_in_the_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DgmError, match="notes.txt is a file, not a folder"):
        ensure_writable_dir(tmp_path / "notes.txt" / "sub")
    with pytest.raises(DgmError, match="notes.txt is a file, not a folder"):
        write_text(tmp_path / "notes.txt" / "a.png", "y")  # `dgm sample ... --out notes.txt/a.png`
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_a_folder_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(DgmError, match="it is a folder"):
        write_text(tmp_path / "out.png", "x")


def test_io_errors_while_writing_keep_the_old_file(tmp_path):
    target = tmp_path / "m.txt"
    write_text(target, "old")
    with pytest.raises(DgmError, match=f"no space left on the disk of {tmp_path} .* MB free"):
        with atomic_path(target):
            raise OSError(28, "No space left on device")
    with pytest.raises(DgmError, match="Input/output error; the previous version is untouched"):
        with atomic_path(target):
            raise OSError(5, "Input/output error")
    with pytest.raises(DgmError, match="Permission denied"):  # a writer that reports the error in its text
        with atomic_path(target):
            raise RuntimeError("Error while serializing: IoError(Os { code: 13, kind: PermissionDenied })")
    with pytest.raises(ValueError):  # not a write failure: passed on as it is
        with atomic_path(target):
            raise ValueError("a bug")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.txt"]


def test_stale_temporaries_are_removed_and_real_files_kept(tmp_path):
    from dgm_cli.atomic import atomic_path, remove_stale_temporaries

    (tmp_path / "samples").mkdir()
    (tmp_path / "elsewhere").mkdir()
    real = [
        tmp_path / "last.safetensors",
        tmp_path / "samples" / "epoch_001.png",
        tmp_path / "metrics.jsonl",
        tmp_path / ".notes.tmp",
        tmp_path / "elsewhere" / ".last.abcd1234.tmp.safetensors",
    ]
    stale = [tmp_path / ".last.abcd1234.tmp.safetensors", tmp_path / "samples" / ".epoch_002.x9_k2m7q.tmp.png"]
    for path in real + stale:
        path.write_text("x")
    with atomic_path(tmp_path / "curves.png") as tmp:  # the real pattern, taken from a real temporary
        pattern_example = tmp.name
    (tmp_path / pattern_example).write_text("x")
    stale.append(tmp_path / pattern_example)
    assert sorted(remove_stale_temporaries(tmp_path, subfolders=("samples",))) == sorted(stale)
    assert all(path.exists() for path in real) and not any(path.exists() for path in stale)


def test_written_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    import os

    from dgm_cli.atomic import write_text

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "metrics.jsonl", "{}\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "metrics.jsonl").stat().st_mode & 0o777 == 0o644


def test_checkpoints_and_states_get_the_usual_permissions_too(tmp_path):
    """safetensors writes its file anew, which used to leave checkpoints 0600 beside 0644 metrics."""
    import os

    import torch

    from dgm_cli.checkpoint import save_checkpoint
    from dgm_cli.registry import create_config, create_model
    from dgm_cli.state import TrainingState, save_state

    umask = os.umask(0o022)
    try:
        model = create_model("vae", hidden=4, zdim=2)
        save_checkpoint(tmp_path / "last.safetensors", model, model_name="vae", config=model.config, data={}, train={})
        save_state(
            tmp_path / "state.safetensors",
            TrainingState(
                "vae",
                create_config("vae"),
                0,
                0,
                [{"epoch": 0}],
                None,
                model.state_dict(),
                [],
                {"rng.torch": torch.get_rng_state()},
            ),
        )
    finally:
        os.umask(umask)
    for name in ("last.safetensors", "state.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
