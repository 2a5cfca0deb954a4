"""The small dataset the data-parallel tests train on, built the same way in the test and in its workers."""

from dgm_cli.data import Dataset, Split, load_dataset


def small_dataset(train_images: int) -> Dataset:
    """The first `train_images` training images of the bundled mnist-mini, and 300 validation and test images."""
    mini = load_dataset("mnist-mini", None)

    def head(split: Split, n: int) -> Split:
        return Split(split.images[:n].clone(), split.labels[:n].clone())

    return Dataset(
        name="mnist-mini",
        train=head(mini.train, train_images),
        val=head(mini.val, 300),
        test=head(mini.test, 300),
        location=mini.location,
    )
