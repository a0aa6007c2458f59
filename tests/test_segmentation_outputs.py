"""What segmentation writes and reads at its edges: overlay files, scaled masks, split lists."""

import numpy as np
import pytest
import torch
from PIL import Image

from ghostnet.models import create_model
from ghostnet.tasks.segment.data import joint_scale_crop_flip, load_segmentation_split
from ghostnet.tasks.segment.predict import segment_images
from seg_data import write_voc


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("lraspp_ghostnet", num_classes=3, width=0.25).eval()


def _images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / n)
    return [folder / n for n in names]


def test_overlays_never_replace_an_input_or_each_other(model, tmp_path):
    files = _images(tmp_path / "imgs", "a.png", "b.jpg")
    with pytest.raises(ValueError, match="is one of the input images"):
        segment_images(model, ["background", "x", "y"], files, tmp_path / "imgs", overwrite=True)
    assert Image.open(files[0]).size == (32, 24)
    twins = files + _images(tmp_path / "other", "a.jpg")
    with pytest.raises(ValueError, match="two inputs would both be written to"):
        segment_images(model, ["background", "x", "y"], twins, tmp_path / "out")
    out = segment_images(model, ["background", "x", "y"], files, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]  # no temp files left
    assert [r["output"] for r in out] == [str(tmp_path / "out" / "a.png"), str(tmp_path / "out" / "b.png")]


def test_class_0_is_coloured_unless_it_is_the_background(model, tmp_path):
    (f,) = _images(tmp_path / "imgs", "a.png")
    with torch.no_grad():
        for m in model.modules():  # force class 0 everywhere: a huge bias on its logit
            if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3 and m.bias is not None:
                m.bias.data = torch.tensor([1e4, 0.0, 0.0])
    segment_images(model, ["background", "x", "y"], [f], tmp_path / "bg")
    segment_images(model, ["road", "x", "y"], [f], tmp_path / "road")
    original = np.asarray(Image.open(f))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "bg" / "a.png")), original)
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "road" / "a.png")), original)


def test_masks_are_scaled_at_pixel_centres_like_their_images():
    # A step edge: class 1 and brightness 1 left of column 7. Scaled, the mask's edge must fall where the bilinear
    # image crosses 0.5 (both sample at pixel centres); plain "nearest" sampling shifts it by up to a pixel.
    image, mask = torch.zeros(3, 12, 16), torch.zeros(12, 16, dtype=torch.uint8)
    image[:, :, :7], mask[:, :7] = 1.0, 1
    for scale in (0.55, 0.7, 0.8, 1.3, 1.7):
        img, m = joint_scale_crop_flip(image, mask, 8, (scale, scale), False, np.random.default_rng(0))
        labelled = m != 255
        assert torch.equal((img[0] > 0.5)[labelled], (m == 1)[labelled]), scale


def test_augmented_voc_lists_with_paths_are_read(tmp_path):
    root = write_voc(tmp_path / "voc") / "VOCdevkit" / "VOC2012"
    lines = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (root / "SegmentationClassAug").mkdir()
    for i in lines:
        (root / "SegmentationClassAug" / f"{i}.png").write_bytes((root / "SegmentationClass" / f"{i}.png").read_bytes())
    aug = "\n".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in lines)
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(aug + "\n")
    split = load_segmentation_split("voc", root, "train_aug")
    assert [p.stem for p in split.images] == lines and all(p.parent.name == "SegmentationClassAug" for p in split.masks)


def test_street_scenes_get_cityscapes_colours():
    from ghostnet.tasks.segment.data import CITYSCAPES_CLASSES
    from ghostnet.tasks.segment.predict import colorize

    labels = np.array([[0, 13, 255]])
    street = colorize(labels, list(CITYSCAPES_CLASSES))
    assert street[0, 0].tolist() == [128, 64, 128] and street[0, 1].tolist() == [0, 0, 142]  # road, car
    voc = colorize(labels, ["background", *"abcdefghijklmnopqrst"])
    assert voc[0, 0].tolist() == [0, 0, 0] and voc[0, 2].tolist() == street[0, 2].tolist()  # 255: VOC's cream


def test_the_real_image_set_is_written_in_the_folder_format(tmp_path):
    from ghostnet.tasks.segment.data import make_segmentation_set, read_mask

    out = tmp_path / "set"
    r = make_segmentation_set(out, n_train=3, n_val=2, image_size=48, object_size=(16, 32), source="digits")
    assert r["classes"] == ["background", *(str(d) for d in range(10))]
    for split, n in (("train", 3), ("val", 2)):
        s = load_segmentation_split("folder", out, split)  # every mask checked on loading
        assert len(s) == n and s.classes == r["classes"]
        values = set(np.unique(np.concatenate([read_mask(m, s).ravel() for m in s.masks])).tolist())
        assert 0 in values and values - {255} <= set(range(11)) and values - {0, 255}  # objects, labelled
        assert sum(r[split]["class_pixels"].values()) > 0
    with pytest.raises(ValueError, match="exists and is not empty"):
        make_segmentation_set(out, n_train=1, n_val=1, image_size=48, object_size=(16, 32), source="digits")
    make_segmentation_set(out, n_train=1, n_val=1, image_size=48, object_size=(16, 32), source="digits", overwrite=True)
    assert len(list((out / "train" / "images").iterdir())) == 1  # the old set is gone, not mixed in
    with pytest.raises(ValueError, match="objects_per_image"):
        make_segmentation_set(tmp_path / "x", objects_per_image=(0, 2), source="digits")
