import gzip
import pickle
import shutil

import pytest
import torch

from conftest import make_tar, write_idx
from ghostnet.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    FolderLoader,
    TensorLoader,
    batch_indices,
    folder_transforms,
    load_dataset,
    read_idx,
)
from ghostnet.data.images import Preprocess


def test_cifar_folder_and_archive(tmp_path, cifar_dir):
    b = load_dataset("cifar10", cifar_dir)
    assert b.train.images.shape == (40, 3, 32, 32) and b.train.images.dtype == torch.uint8
    assert len(b.test) == 20 and b.classes[0] == "airplane" and b.num_classes == 10
    # the bright band sits at the class's rows, so the reader keeps image layout (C, H, W)
    c = int(b.train.labels[0])
    assert (b.train.images[0, :, 3 * c, :] == 250).all()

    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    make_tar(cifar_dir / "cifar-10-batches-py", archive_dir / "cifar-10-python.tar.gz")
    a = load_dataset("cifar10", archive_dir)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)


def test_cifar_missing_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("GHOSTNET_SYSTEM_DATA", str(tmp_path / "system"))
    with pytest.raises(
        DatasetError,
        match=r"cifar10 not found .*" + str(tmp_path) + r".*ghostnet classify train --dataset cifar10 --download",
    ):
        load_dataset("cifar10", tmp_path)


def test_cifar_refuses_pickled_code(tmp_path, cifar_dir):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (cifar_dir / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DatasetError, match=r"refusing to load .*print"):
        load_dataset("cifar10", cifar_dir)


def test_cifar_malformed_batch(cifar_dir):
    (cifar_dir / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="data_batch_3 is not a CIFAR python batch"):
        load_dataset("cifar10", cifar_dir)


def test_cifar_truncated_archive(tmp_path, cifar_dir):
    archive = make_tar(cifar_dir / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    shutil.rmtree(cifar_dir)
    archive.write_bytes(archive.read_bytes()[:500])
    with pytest.raises(DatasetError, match="not a readable CIFAR archive"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_gz_or_raw(tmp_path, gz):
    write_idx(tmp_path / "fashion-mnist", gz=gz)
    b = load_dataset("fashion_mnist", tmp_path)
    assert b.train.images.shape == (30, 1, 28, 28) and len(b.test) == 10
    assert b.classes[9] == "Ankle boot" and b.in_chans == 1
    assert b.augment == "crop_flip"
    assert load_dataset("mnist", tmp_path / "fashion-mnist").augment == "crop"  # never mirror digits


def test_idx_found_through_environment(tmp_path, monkeypatch):
    write_idx(tmp_path / "envdata" / "fashion-mnist")
    monkeypatch.setenv("GHOSTNET_DATA", str(tmp_path / "envdata"))
    assert len(load_dataset("fashion_mnist", tmp_path / "empty").train) == 30


def test_idx_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GHOSTNET_DATA", raising=False)
    monkeypatch.setenv("GHOSTNET_SYSTEM_DATA", str(tmp_path / "system"))
    folder = write_idx(tmp_path / "fm")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"\x01\x02\x03\x04hello"))
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"fashion_mnist not found: looked for .*/fm, .*dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path / "fm")


def test_download_without_network_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as u

    def offline(*a, **k):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(u, "download_url", offline)
    with pytest.raises(DatasetError, match=r"^could not download https://.*name resolution$"):
        load_dataset("cifar10", tmp_path, download=True)
    assert not list(tmp_path.glob("*.part"))


def test_digits_is_real_and_stratified():
    b = load_dataset("digits")
    assert len(b.train) + len(b.test) == 1797  # scikit-learn's bundled set
    assert b.train.images.shape[1:] == (1, 32, 32)
    counts = torch.bincount(b.test.labels, minlength=10)
    assert counts.min() >= 35  # every class in the test split
    assert set(b.train.labels.unique().tolist()) == set(range(10))


def test_image_folder(image_folder):
    b = load_dataset("imagefolder", image_folder, image_size=32)
    assert b.classes == ["cat", "dog", "fox"] and not b.in_memory
    loader = FolderLoader(b.train, 4, train=True, image_size=32, num_workers=0, seed=1)
    batches = list(loader.batches(epoch=0))
    assert len(batches) == 3 and batches[0][0].shape == (4, 3, 32, 32)
    again = list(loader.batches(epoch=0, start=1))  # resuming mid-epoch gives the same batches, augmentation included
    assert torch.equal(again[0][0], batches[1][0])
    val = list(FolderLoader(b.test, 5, train=False, image_size=32, num_workers=0).batches())
    assert [len(y) for _, y in val] == [5, 5, 2]


def test_image_folder_errors(tmp_path, image_folder):
    with pytest.raises(DatasetError, match="needs --data-dir"):
        load_dataset("imagefolder")
    shutil.rmtree(image_folder / "val")
    with pytest.raises(DatasetError, match="val"):
        load_dataset("imagefolder", image_folder)
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet21k'"):
        load_dataset("imagenet21k")


def _pil_images(n, size=(40, 36)):
    """A dataset as ImageFolder gives it: (PIL image, label) pairs."""
    from PIL import Image

    return [(Image.new("RGB", size, (40 * i, 90, 200)), i % 3) for i in range(n)]


def test_a_rank_left_without_evaluation_images_gets_no_batches():
    """Regression: 1 evaluation image over 2 ranks left rank 1 an empty batch, and the DataLoader an IndexError."""
    ranks = [
        FolderLoader(_pil_images(1), 4, train=False, image_size=32, num_workers=0, rank=r, world_size=2) for r in (0, 1)
    ]
    first, second = (list(loader.batches()) for loader in ranks)
    assert second == []
    assert len(first) == 1 and first[0][0].shape == (1, 3, 32, 32) and first[0][1].tolist() == [0]
    # a last batch of one image over two ranks: rank 1 gets the full batches only
    ranks = [
        FolderLoader(_pil_images(5), 2, train=False, image_size=32, num_workers=0, rank=r, world_size=2) for r in (0, 1)
    ]
    assert [[y.tolist() for _, y in loader.batches()] for loader in ranks] == [[[0], [2], [1]], [[1], [0]]]


def test_image_transforms_pickle_for_spawned_workers():
    """Regression: a lambda in the folder transforms cannot be pickled, so workers under 'spawn' (the macOS and
    Windows default) failed to start."""
    image = _pil_images(1, size=(50, 44))[0][0]
    transforms = [
        folder_transforms(True, 32, IMAGENET_MEAN, IMAGENET_STD),
        folder_transforms(False, 32, IMAGENET_MEAN, IMAGENET_STD),
        Preprocess(image_size=32).transform(),
        Preprocess(image_size=32, data_chans=1).transform(),
    ]
    for t in transforms:
        restored = pickle.loads(pickle.dumps(t))
        assert repr(restored) == repr(t)
    for t in transforms[1:]:  # the deterministic ones give the same input after the round trip
        assert torch.equal(pickle.loads(pickle.dumps(t))(image), t(image))


@pytest.mark.slow  # a spawned worker imports torch afresh (~10 s); the pickling test above is the quick guard
def test_folder_loader_epoch_with_a_spawned_worker(monkeypatch):
    """One FolderLoader epoch whose DataLoader worker is started by 'spawn': its dataset and transforms are
    pickled, and the worker's seeded augmentation matches the in-process one."""
    import functools

    data = _pil_images(3)
    here = list(FolderLoader(data, 3, train=True, image_size=32, num_workers=0, seed=4).batches())
    spawned = functools.partial(torch.utils.data.DataLoader, multiprocessing_context="spawn")
    monkeypatch.setattr(torch.utils.data, "DataLoader", spawned)
    there = list(FolderLoader(data, 3, train=True, image_size=32, num_workers=1, seed=4).batches())
    assert len(there) == len(here) == 1 and there[0][0].shape == (3, 3, 32, 32)
    assert torch.equal(there[0][0], here[0][0]) and torch.equal(there[0][1], here[0][1])


def test_batches_are_a_function_of_seed_and_epoch():
    a = batch_indices(100, 16, seed=3, epoch=2, shuffle=True, drop_last=True)
    assert all(torch.equal(x, y) for x, y in zip(a, batch_indices(100, 16, 3, 2, True, True)))
    assert not torch.equal(a[0], batch_indices(100, 16, 3, 3, True, True)[0])
    assert len(a) == 6 and sorted(torch.cat(a).tolist()) != list(range(96))  # a shuffled subset


def test_ranks_split_each_global_batch(cifar_dir):
    b = load_dataset("cifar10", cifar_dir)
    single = TensorLoader(b.train, 8, train=True, augment="crop_flip", mean=b.mean, std=b.std, seed=5)
    ranks = [
        TensorLoader(b.train, 8, train=True, augment="crop_flip", mean=b.mean, std=b.std, seed=5, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for (x, y), (x0, y0), (x1, y1) in zip(single.batches(1), ranks[0].batches(1), ranks[1].batches(1)):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    evals = [TensorLoader(b.test, 8, train=False, mean=b.mean, std=b.std, rank=r, world_size=2) for r in (0, 1)]
    assert sum(len(y) for ev in evals for _, y in ev.batches()) == len(b.test)  # no padding, no duplicates


def test_augmentation_crops_and_flips():
    from ghostnet.data import ImageData

    img = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    loader = TensorLoader(
        ImageData(img, torch.zeros(64, dtype=torch.long)),
        64,
        train=True,
        augment="crop_flip",
        mean=(0,),
        std=(1 / 255,),
    )
    x, _ = next(loader.batches())
    assert x.shape == (64, 1, 4, 4)
    assert len({tuple(v.flatten().tolist()) for v in x}) > 10  # different crops/flips per sample
    plain = TensorLoader(
        ImageData(img, torch.zeros(64, dtype=torch.long)), 64, train=True, augment="none", mean=(0,), std=(1 / 255,)
    )
    assert torch.equal(next(plain.batches())[0].round(), img.float())


def test_grayscale_replication_or_refusal(cifar_dir, idx_dir):
    fm = load_dataset("fashion_mnist", idx_dir.parent)
    x, _ = next(TensorLoader(fm.test, 4, train=False, mean=fm.mean, std=fm.std, in_chans=3).batches())
    assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2])
    c = load_dataset("cifar10", cifar_dir)
    with pytest.raises(ValueError, match="in_chans=1 cannot take it"):
        TensorLoader(c.test, 4, train=False, in_chans=1)


def test_download_checksum_mismatch_is_discarded(tmp_path, monkeypatch):
    import torchvision.datasets.utils as u

    def fake(url, root, filename=None, md5=None):
        (tmp_path / filename).write_bytes(b"an error page, not the archive")

    monkeypatch.setattr(u, "download_url", fake)
    with pytest.raises(DatasetError, match="checksum mismatch .*discarded"):
        load_dataset("cifar10", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def _add_unreadable_images(folder):
    """A zero-byte .jpg, a text file named .jpg and a truncated JPEG beside the good images of `folder`."""
    import numpy as np
    from PIL import Image

    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image at all\n")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / "whole.jpg")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_image_folder_skips_unreadable_images(image_folder, num_workers):
    """Regression: one corrupt file killed an image-folder epoch with a PIL traceback."""
    _add_unreadable_images(image_folder / "train" / "cat")
    _add_unreadable_images(image_folder / "val" / "dog")
    b = load_dataset("imagefolder", image_folder, image_size=32, bad_images="skip")
    assert len(b.train) == 13 and len(b.test) == 13  # the truncated JPEG starts right: only decoding finds it
    skipped = b.meta["skipped_files"]
    assert [f.split("/")[-1] for f in skipped["train"]] == [
        "empty.jpg: is an empty file",
        "text.jpg: is not an image file (it starts with b'not an i')",
    ]
    assert len(skipped["test"]) == 2
    for split in (b.train, b.test):
        loader = FolderLoader(split, 5, train=False, image_size=32, num_workers=num_workers)
        batches = list(loader.batches())
        assert sum(len(y) for _, y in batches) == 12 and all(x.shape[1:] == (3, 32, 32) for x, _ in batches)
        (why,) = loader.take_skipped()
        assert "truncated.jpg is not a readable image" in why and loader.take_skipped() == []
    # a batch left without images is empty, with the right shape
    one = FolderLoader(b.train, 1, train=False, image_size=32, num_workers=0)
    shapes = [tuple(x.shape) for x, _ in one.batches()]
    assert shapes.count((0, 3, 32, 32)) == 1 and shapes.count((1, 3, 32, 32)) == 12


def test_image_folder_refuses_unreadable_images_naming_them(image_folder):
    _add_unreadable_images(image_folder / "train" / "cat")
    with pytest.raises(DatasetError, match=r"train/cat/empty\.jpg is an empty file \(2 such file\(s\)"):
        load_dataset("imagefolder", image_folder, bad_images="error")
    (image_folder / "train" / "cat" / "empty.jpg").unlink()
    with pytest.raises(DatasetError, match=r"text\.jpg is not an image file \(it starts with b'not an i'\)"):
        load_dataset("imagefolder", image_folder, bad_images="error")
    (image_folder / "train" / "cat" / "text.jpg").unlink()
    b = load_dataset("imagefolder", image_folder, image_size=32, bad_images="error")
    loader = FolderLoader(b.train, 13, train=False, image_size=32, num_workers=1, bad_images="error")
    with pytest.raises(DatasetError) as e:
        list(loader.batches())
    assert "truncated.jpg is not a readable image" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="bad_images must be skip or error"):
        load_dataset("imagefolder", image_folder, bad_images="ignore")
