"""Small datasets written by the tests in the real on-disk formats."""

import gzip
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for golden.py


def write_cifar(
    root: Path, n_train: int = 40, n_test: int = 20, classes: int = 10, batches: int = 5, seed: int = 0
) -> Path:
    """A CIFAR-10-format folder `cifar-10-batches-py` (python pickle batches) with class-dependent images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n, label):
        labels = [int(i % classes) for i in range(n)]
        rng.shuffle(labels)
        data = rng.integers(0, 60, (n, 3072), dtype=np.uint8)
        for i, c in enumerate(labels):  # a bright band whose row encodes the class: learnable
            img = data[i].reshape(3, 32, 32)
            img[:, 3 * c : 3 * c + 3, :] = 250
        return {
            b"batch_label": label,
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }

    per = n_train // batches
    for i in range(1, batches + 1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per, f"training batch {i}".encode()), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, b"testing batch"), protocol=2))
    names = [
        n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return folder


def write_idx(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, seed: int = 0) -> Path:
    """The four (Fashion-)MNIST IDX files, 28x28, gzipped or not."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 50, (n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 3, :] = 255
        for kind, arr, magic_dims in (("images-idx3", images, 3), ("labels-idx1", labels, 1)):
            body = struct.pack(">BBBB", 0, 0, 8, magic_dims) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(body))
            else:
                (folder / name).write_bytes(body)
    return folder


def write_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 4, size: int = 40) -> Path:
    """An ImageNet-style train/ and val/ folder of small JPEG and PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
                arr[..., ci] = 255
                Image.fromarray(arr).save(d / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture
def cifar_dir(tmp_path):
    write_cifar(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def idx_dir(tmp_path):
    return write_idx(tmp_path / "data" / "fashion-mnist")


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "imgs")


def make_tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_identity_folder(
    root: Path, identities: int = 8, per_identity: int = 5, size: int = 28, seed: int = 0
) -> Path:
    """An identity folder in LFW's naming (``Name/Name_0001.jpg``): each identity a bright band at its own rows."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(identities):
        name = f"Person_{chr(ord('A') + k)}"
        (root / name).mkdir(parents=True)
        for i in range(1, per_identity + 1):
            arr = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            arr[3 * k : 3 * k + 3, :, :] = 250
            Image.fromarray(arr).save(root / name / f"{name}_{i:04d}.jpg", quality=95)
    return root


def write_verification_bin(path: Path, pairs: int = 10, size: int = 28, seed: int = 0) -> Path:
    """An insightface-format verification set: a pickle of (list of JPEG bytes, list of bool), two images a pair."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    bins, issame = [], []
    for p in range(pairs):
        same = p % 2 == 0
        for j in range(2):
            k = p % 8 if same or j == 0 else (p + 3) % 8
            arr = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            arr[3 * k : 3 * k + 3] = 250
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=95)
            bins.append(buf.getvalue())
        issame.append(same)
    path.write_bytes(pickle.dumps((bins, issame), protocol=pickle.HIGHEST_PROTOCOL))
    return path


@pytest.fixture
def identity_folder(tmp_path):
    return write_identity_folder(tmp_path / "faces")
