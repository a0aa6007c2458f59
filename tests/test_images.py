"""Every reader of image files (prediction, image folders, detection) converts 16-bit, palette, alpha and CMYK
images faithfully: scaled, not clipped, and refuses what it cannot convert."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ghostnet import create_model, save_weights
from ghostnet.cli import main
from ghostnet.data import DatasetError, load_dataset
from ghostnet.data.images import Preprocess, convert_image, open_image, read_image
from ghostnet.tasks.classify.predict import predict_images

GRADIENT = np.linspace(0, 65535, 256).round().astype(np.uint16)[None, :].repeat(6, axis=0)  # (6, 256), 0..65535
GRADIENT_8BIT = np.rint(GRADIENT / 257).astype(np.uint8)


def _sixteen_bit_files(folder):
    """The 16-bit gradient in each mode PIL reads 16-bit grayscale as: {mode: path}."""
    files = {
        "I;16": ("g16.png", Image.fromarray(GRADIENT)),
        "I;16B": ("g16b.tif", Image.fromarray(GRADIENT.astype(">u2"))),
        "I;16L": ("g16l.tif", Image.frombytes("I;16L", (256, 6), GRADIENT.astype("<u2").tobytes())),
        "I": ("g32.tif", Image.fromarray(GRADIENT.astype(np.int32))),
    }
    out = {}
    for mode, (name, image) in files.items():
        assert image.mode == mode
        image.save(folder / name)
        out[mode] = folder / name
    with Image.open(out["I"]) as im:
        assert im.mode == "I"  # a 32-bit integer file holding 16-bit data
    return out


def _over_white(rgb, alpha):
    return np.rint(rgb * alpha / 255 + 255 * (1 - alpha / 255)).astype(np.uint8)


def _other_mode_files(folder):
    """Palette (with and without a transparent colour), LA, RGBA and CMYK files: {name: (path, expected RGB)}."""
    rng = np.random.default_rng(0)
    out = {}
    palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    index = rng.integers(0, 4, (6, 10), dtype=np.uint8)
    p = Image.fromarray(index, "P")
    p.putpalette(palette.ravel().tolist())
    p.save(folder / "palette.png")
    out["P"] = (folder / "palette.png", palette[index])
    p.save(folder / "palette_transparent.png", transparency=2)
    out["P with transparency"] = (
        folder / "palette_transparent.png",
        np.where((index == 2)[..., None], 255, palette[index]).astype(np.uint8),
    )
    gray, alpha = rng.integers(0, 256, (6, 10), dtype=np.uint8), rng.integers(0, 256, (6, 10), dtype=np.uint8)
    Image.fromarray(np.stack([gray, alpha], -1), "LA").save(folder / "la.png")
    out["LA"] = (folder / "la.png", _over_white(gray.astype(float), alpha.astype(float))[..., None].repeat(3, -1))
    rgba = rng.integers(0, 256, (6, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    out["RGBA"] = (folder / "rgba.png", _over_white(rgba[..., :3].astype(float), rgba[..., 3:].astype(float)))
    cmyk = rng.integers(0, 256, (6, 10, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(folder / "cmyk.tif")
    c = cmyk.astype(float)
    out["CMYK"] = (folder / "cmyk.tif", np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8))
    return out


def _assert_gradient(row):
    """A converted row of the 16-bit gradient: the full 0..255 range, monotonic, round(v / 257)."""
    row = np.asarray(row).astype(int)
    assert row.min() <= 1 and row.max() >= 254, (row.min(), row.max())
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 200
    np.testing.assert_array_equal(row, GRADIENT_8BIT[0])


def test_open_image_scales_sixteen_bit_by_the_full_range(tmp_path):
    for mode, path in _sixteen_bit_files(tmp_path).items():
        gray = open_image(path, "L")
        assert gray.mode == "L", mode
        _assert_gradient(np.asarray(gray)[0])
        rgb = np.asarray(open_image(path, "RGB"))
        assert rgb.shape == (6, 256, 3)
        for channel in range(3):
            _assert_gradient(rgb[0, :, channel])


def test_open_image_palette_alpha_and_cmyk(tmp_path):
    for name, (path, expected) in _other_mode_files(tmp_path).items():
        got = np.asarray(open_image(path, "RGB")).astype(int)
        assert np.abs(got - expected).max() <= 1, name
        gray = np.asarray(open_image(path, "L"))
        assert gray.shape == expected.shape[:2]


def test_unconvertible_modes_are_refused_naming_the_file_and_mode(tmp_path):
    Image.fromarray(np.full((4, 4), 3.5, np.float32)).save(tmp_path / "hdr.tif")
    for read in (lambda p: open_image(p, "RGB"), read_image):
        with pytest.raises(DatasetError, match=r"hdr\.tif: cannot convert an image of mode F .*3\.5"):
            read(tmp_path / "hdr.tif")
    with pytest.raises(DatasetError, match=r"lab: cannot convert an image of mode LAB"):
        convert_image(Image.new("LAB", (2, 2)), "RGB", "lab")
    # a float image in 0..1 is scaled, not clipped
    Image.fromarray((GRADIENT / 65535).astype(np.float32)).save(tmp_path / "unit.tif")
    _assert_gradient(np.asarray(open_image(tmp_path / "unit.tif", "L"))[0])


def test_read_image_for_detection(tmp_path):
    for mode, path in _sixteen_bit_files(tmp_path).items():
        x = read_image(path)
        assert x.shape == (3, 6, 256) and x.dtype == torch.float32, mode
        _assert_gradient((x[1, 0] * 255).round().numpy())
    for name, (path, expected) in _other_mode_files(tmp_path).items():
        got = (read_image(path) * 255).round().permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() <= 1, name


def test_image_folder_loader_reads_faithfully(tmp_path):
    expected, n_gradients = {}, 0
    for split in ("train", "val"):
        n_gradients += len(_sixteen_bit_files(_mkdir(tmp_path / split / "gradient")))
        expected |= {str(p): e for p, e in _other_mode_files(_mkdir(tmp_path / split / "other")).values()}
    data = load_dataset("imagefolder", tmp_path, image_size=32)
    seen = 0
    for split in (data.train, data.test):
        for i, (path, _) in enumerate(split.samples):
            image, _ = split[i]
            assert image.mode == "RGB", path
            if path in expected:
                assert np.abs(np.asarray(image).astype(int) - expected[path]).max() <= 1, path
            else:
                _assert_gradient(np.asarray(image)[0, :, 0])
            seen += 1
    assert seen == n_gradients + len(expected)


def _mkdir(folder):
    folder.mkdir(parents=True)
    return folder


class _ColumnMeans(nn.Module):
    """A 'classifier' whose logits are the mean of each channel in 8 vertical bands: it sees the whole gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, (1, 8)).flatten(1) * self.scale


def test_predict_images_sees_what_an_8bit_copy_shows(tmp_path):
    """Regression: a 16-bit PNG was clipped by convert("L"): every pixel one value, and a confident wrong answer."""
    model = _ColumnMeans().eval()
    Image.fromarray(GRADIENT_8BIT).save(tmp_path / "reference.png")
    for data_chans in (1, 3):
        prep = Preprocess(image_size=32, in_chans=3, data_chans=data_chans, mean=(0.5,) * 3, std=(0.25,) * 3)
        (reference,) = predict_images(model, prep, [str(tmp_path / "reference.png")], topk=24)
        for mode, path in _sixteen_bit_files(_mkdir(tmp_path / f"c{data_chans}")).items():
            (got,) = predict_images(model, prep, [str(path)], topk=24)
            assert [n for n, _ in got["top"]] == [n for n, _ in reference["top"]], mode
            np.testing.assert_allclose([p for _, p in got["top"]], [p for _, p in reference["top"]], atol=1e-6)
    for name, (path, expected) in _other_mode_files(tmp_path).items():
        Image.fromarray(expected).save(tmp_path / "expected.png")
        prep = Preprocess(image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
        (got,), (want,) = (predict_images(model, prep, [str(p)], topk=24) for p in (path, tmp_path / "expected.png"))
        np.testing.assert_allclose([p for _, p in got["top"]], [p for _, p in want["top"]], atol=2e-3, err_msg=name)


def test_cli_predict_on_a_sixteen_bit_png(tmp_path, capsys):
    ckpt = tmp_path / "w.pth"
    save_weights(create_model("ghostnet_050", num_classes=4), ckpt, "ghostnet_050", dict(num_classes=4))
    path = _sixteen_bit_files(tmp_path)["I;16"]
    Image.fromarray(GRADIENT_8BIT).save(tmp_path / "reference.png")
    outputs = []
    for image in (path, tmp_path / "reference.png"):
        assert main(["classify", "predict", str(image), "--checkpoint", str(ckpt), "--topk", "4", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out)[0]["top"])
    got, want = outputs
    assert [n for n, _ in got] == [n for n, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=1e-6)
    # and a file it cannot convert faithfully is refused in one line naming it
    Image.fromarray(np.full((8, 8), -2.0, np.float32)).save(tmp_path / "negative.tif")
    with pytest.raises(SystemExit) as e:
        main(["classify", "predict", str(tmp_path / "negative.tif"), "--checkpoint", str(ckpt)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "negative.tif" in err[0] and "mode F" in err[0], err
