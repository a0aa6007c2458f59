"""Segmentation: output stride, the heads, the data formats and their checks, joint transforms, mIoU."""

import numpy as np
import pytest
import torch
from PIL import Image

from ghostnet.cli import main
from ghostnet.models import create_model, list_models, model_entry, model_spec
from ghostnet.models.checkpoint import save_weights
from ghostnet.models.ghostnet import GhostNet
from ghostnet.tasks.segment.data import (
    IGNORE_INDEX,
    DatasetError,
    SegmentationLoader,
    cityscapes_lut,
    joint_scale_crop_flip,
    load_segmentation_split,
    read_mask,
)
from ghostnet.tasks.segment.metrics import confusion_matrix, segmentation_metrics
from ghostnet.tasks.segment.models import deeplabv3_ghostnet, lraspp_ghostnet
from seg_data import write_cityscapes, write_folder, write_voc


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- output stride


@pytest.mark.parametrize("name", ["ghostnet_100", "ghostnetv2_100", "ghostnetv3_050"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_output_stride_shapes_and_unchanged_weights(name, output_stride):
    ref = create_model(name, features_only=True).eval()
    dilated = create_model(name, features_only=True, output_stride=output_stride).eval()
    # The same parameters and buffers, name for name and shape for shape: the weights load strictly.
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in dilated.state_dict().items()}
    dilated.load_state_dict(ref.state_dict())
    maps = dilated(torch.randn(1, 3, 64, 96))
    expected = [min(r, output_stride) for r in (2, 4, 8, 16, 32)]
    assert [f["reduction"] for f in dilated.feature_info] == expected
    assert [tuple(m.shape[-2:]) for m in maps] == [(64 // r, 96 // r) for r in expected]
    # Up to the first removed stride nothing changes.
    with torch.no_grad():
        a, b = ref(torch.ones(1, 3, 64, 64)), dilated(torch.ones(1, 3, 64, 64))
    assert torch.equal(a[2], b[2])


def test_output_stride_dilates_the_convs_after_a_removed_stride():
    m = GhostNet(output_stride=8)
    assert m.blocks[5][0].conv_dw.stride == (1, 1) and m.blocks[5][0].conv_dw.dilation == (1, 1)  # lost its stride
    assert m.blocks[6][0].ghost1.cheap_operation[0].dilation == (2, 2)  # stride 8 -> dilation 2
    assert m.blocks[7][0].conv_dw.dilation == (2, 2) and m.blocks[7][0].conv_dw.stride == (1, 1)
    assert m.blocks[8][0].ghost1.cheap_operation[0].dilation == (4, 4)
    assert m.blocks[8][0].ghost1.cheap_operation[0].padding == (4, 4)  # "same" padding kept
    assert m.arch["output_stride"] == 8 and "output_stride" not in GhostNet().arch


@pytest.mark.parametrize("bad", [4, 64, 12])
def test_output_stride_refuses_other_values(bad):
    with pytest.raises(ValueError, match="output_stride"):
        GhostNet(output_stride=bad)


# ---------------------------------------------------------------- heads


def test_heads_output_shapes_aux_and_names():
    lr = create_model("lraspp_ghostnet", num_classes=5, width=0.5, output_stride=16).eval()
    out = lr(torch.randn(2, 3, 72, 96))
    assert set(out) == {"out"} and out["out"].shape == (2, 5, 72, 96)
    dl = deeplabv3_ghostnet(4, width=0.5, version="v2", output_stride=8, aux_loss=True).eval()
    out = dl(torch.randn(1, 3, 64, 64))
    assert out["out"].shape == (1, 4, 64, 64) and out["aux"].shape == (1, 4, 64, 64)
    spec = model_spec("lraspp_ghostnet", {"num_classes": 5, "width": 0.5, "backbone_weights": None}, lr)
    assert spec.kwargs == {"num_classes": 5, "width": 0.5}  # a weights path is not what rebuilds it
    assert model_entry("lraspp_ghostnet").task == "segment" and "lraspp_ghostnet" in list_models(task="segment")
    assert lr.backbone.high_channels == 480 and lr.backbone.low_channels == 20  # 960w and 40w at width 0.5
    with pytest.raises(ValueError, match="fix their width"):
        create_model("lraspp_ghostnet_100", num_classes=3, width=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        lraspp_ghostnet(1)


def test_classification_weights_load_into_the_backbone(tmp_path):
    classifier = GhostNet(width=0.5, num_classes=10)
    path = save_weights(classifier, tmp_path / "cls.pth")
    seg = lraspp_ghostnet(3, width=0.5, backbone_weights=path)
    body = seg.backbone.body
    for k, v in classifier.state_dict().items():
        if not k.startswith(("conv_head.", "classifier.")):
            assert torch.equal(body.state_dict()[k], v), k
    assert not hasattr(body, "classifier")


# ---------------------------------------------------------------- data formats


def test_voc_palette_masks(tmp_path):
    split = load_segmentation_split("voc", write_voc(tmp_path), "train")
    assert len(split) == 4 and split.classes[15] == "person" and split.root.name == "VOC2012"
    mask = read_mask(split.masks[0], split)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 7, 15, 255} and (mask == 255).any()


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    split = load_segmentation_split("cityscapes", write_cityscapes(tmp_path), "val")
    assert len(split.classes) == 19 and split.masks[0].name.endswith("_gtFine_labelIds.png")
    mask = read_mask(split.masks[0], split)
    assert mask[-1, 0] == 0 and mask[5, 5] == 10 and mask[-1, -1] == 13 and (mask[:2] == IGNORE_INDEX).all()
    lut = cityscapes_lut()
    assert (lut < 19).sum() == 19 and lut[0] == lut[34] == lut[255] == 255


def test_folder_format_and_loaders(tmp_path):
    split = load_segmentation_split("folder", write_folder(tmp_path / "f"), "train")
    assert split.classes == ["background", "a", "b"] and len(split) == 8
    train = SegmentationLoader(split, 4, train=True, crop=32, num_workers=0)
    (x, y), *_ = list(train.batches(0))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.int64
    assert torch.equal(next(iter(train.batches(0)))[0], x)  # (seed, epoch, index) decides the crop: resumable
    evaluation = SegmentationLoader(split, 3, train=False, num_workers=0)
    images, masks = next(iter(evaluation.batches()))
    assert [tuple(m.shape) for m in masks] == [(40, 40)] * 3 and images[0].shape == (3, 40, 40)


def test_joint_transforms_keep_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    blocks = torch.from_numpy(rng.integers(0, 5, (8, 10)).astype(np.uint8))
    mask = blocks.repeat_interleave(6, 0).repeat_interleave(6, 1)  # (48, 60) in 6x6 blocks of random classes
    image = (mask.float() / 10)[None].repeat(3, 1, 1)  # every channel encodes the class
    for seed in range(6):
        g = np.random.default_rng(seed)
        img, m = joint_scale_crop_flip(image, mask, 56, (1.0, 1.0), True, g)  # padded: 48x60 -> crop 56
        keep = m != IGNORE_INDEX
        assert torch.equal((img[0][keep] * 10).round().to(torch.uint8), m[keep])
        assert ((img[0] == 0) | keep).all()  # padding is 0 in the image where the mask says ignore
        img, m = joint_scale_crop_flip(image, mask, 40, (2.0, 2.0), True, g)  # 2x: bilinear vs nearest
        keep = m != IGNORE_INDEX
        agree = ((img[0][keep] * 10).round().to(torch.uint8) == m[keep]).float().mean()
        assert agree > 0.8  # only block edges blend; a misaligned crop or flip would agree on about 1/5


# ---------------------------------------------------------------- metrics


def test_miou_against_a_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    m = segmentation_metrics(cm, ["bg", "a", "b", "never"])
    # IoU: bg 1/(2+2-1)=1/3, a 2/(3+3-2)=1/2, b 1/(2+2-1)=1/3; "never" has no pixel anywhere and is not averaged
    assert m["per_class_iou"]["bg"] == pytest.approx(100 / 3) and m["per_class_iou"]["a"] == pytest.approx(50)
    assert m["per_class_iou"]["never"] is None
    assert m["miou"] == pytest.approx((100 / 3 + 50 + 100 / 3) / 3)
    assert m["pixel_acc"] == pytest.approx(100 * 4 / 7) and m["pixels"] == 7
    assert m["mean_acc"] == pytest.approx((50 + 200 / 3 + 50) / 3)


# ---------------------------------------------------------------- bad input, through the CLI


def _train_args(fmt, root, tmp_path):
    return [
        "segment",
        "train",
        "--dataset",
        fmt,
        "--data-dir",
        str(root),
        "--output-dir",
        str(tmp_path / "runs"),
        "--no-progress",
    ]


def _one_line_error(capsys, argv, *needles):
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ghostnet segment train: error:"), err
    for n in needles:
        assert n in err, err
    return err


def test_bad_input_unknown_class_value_names_the_file_and_values(tmp_path, capsys):
    root = write_folder(tmp_path / "f")
    bad = root / "train" / "masks" / "0003.png"
    Image.fromarray(np.full((40, 40), 7, dtype=np.uint8), mode="L").save(bad)
    _one_line_error(capsys, _train_args("folder", root, tmp_path), str(bad), "value(s) 7", "255")


def test_bad_input_size_mismatch_names_the_pair(tmp_path, capsys):
    root = write_folder(tmp_path / "f")
    Image.fromarray(np.zeros((30, 40), dtype=np.uint8), mode="L").save(root / "val" / "masks" / "0001.png")
    _one_line_error(capsys, _train_args("folder", root, tmp_path), "0001.png", "40x40", "40x30")


def test_bad_input_voc(tmp_path, capsys):
    root = write_voc(tmp_path / "voc")
    voc = root / "VOCdevkit" / "VOC2012"
    args = _train_args("voc", root, tmp_path)
    rgb = voc / "SegmentationClass" / "2007_000001.png"
    Image.open(rgb).convert("RGB").save(rgb)
    _one_line_error(capsys, args, str(rgb), "not a palette PNG")
    (voc / "ImageSets" / "Segmentation" / "train.txt").unlink()
    _one_line_error(capsys, args, "train.txt", "missing")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n")
    _one_line_error(capsys, args, "split", "empty")


def test_bad_input_cityscapes_without_gtfine(tmp_path, capsys):
    root = write_cityscapes(tmp_path / "cs")
    import shutil

    shutil.rmtree(root / "gtFine")
    _one_line_error(capsys, _train_args("cityscapes", root, tmp_path), "gtFine/ is missing")


def test_read_mask_refuses_rgb_masks_everywhere(tmp_path):
    split = load_segmentation_split("folder", write_folder(tmp_path / "f"), "val")
    Image.new("RGB", (40, 40)).save(split.masks[0])
    with pytest.raises(DatasetError, match="single-channel"):
        read_mask(split.masks[0], split)


def test_voc_download_from_a_local_server_is_verified_unpacked_and_not_repeated(tmp_path):
    import hashlib
    import http.server
    import tarfile
    import threading

    from torchvision.datasets.voc import DATASET_YEAR_DICT

    from ghostnet.tasks.segment.data import download as voc_download

    assert (voc_download.VOC_URL, voc_download.VOC_MD5) == (
        DATASET_YEAR_DICT["2012"]["url"],
        DATASET_YEAR_DICT["2012"]["md5"],
    )
    site = tmp_path / "site"
    source = write_voc(tmp_path / "src")
    site.mkdir()
    with tarfile.open(site / "VOCtrainval_11-May-2012.tar", "w") as tar:
        tar.add(source / "VOCdevkit", arcname="VOCdevkit")
    md5 = hashlib.md5((site / "VOCtrainval_11-May-2012.tar").read_bytes()).hexdigest()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/VOCtrainval_11-May-2012.tar"
    try:
        root = voc_download.download_voc(tmp_path / "cache", url=url, md5=md5)
        fetched = len(requests)
        assert root == tmp_path / "cache" / "VOCdevkit" / "VOC2012" and fetched >= 1
        assert len(load_segmentation_split("voc", root, "val")) == 2
        assert voc_download.download_voc(tmp_path / "cache", url=url, md5=md5) == root
        assert len(requests) == fetched  # already there: nothing fetched again
        with pytest.raises(DatasetError, match="(?i)checksum|md5"):
            voc_download.download_voc(tmp_path / "other", url=url, md5="0" * 32)
    finally:
        server.shutdown()


def test_golden_params_and_macs_of_the_named_segmenters():
    """The figures in the builders' docstrings and docs/BENCHMARKS.md (21 classes, output stride 16, 512x512)."""
    from ghostnet.analysis.profile import count_params, profile_model

    lr, dl = create_model("lraspp_ghostnet_100", num_classes=21), create_model("deeplabv3_ghostnet_100", num_classes=21)
    assert count_params(lr) == 2_921_014 and count_params(dl) == 10_724_953
    assert profile_model(lr.eval(), (512, 512)).macs == 1_534_365_504


def test_voc_sbd_augmented_split_reads_grayscale_masks(tmp_path):
    voc = write_voc(tmp_path) / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClassAug").mkdir()
    names = [p.stem for p in sorted((voc / "SegmentationClass").glob("*.png"))]
    for name in names:  # SBD's converted masks: the same values, as grayscale PNGs
        values = np.asarray(Image.open(voc / "SegmentationClass" / f"{name}.png"))
        Image.fromarray(values, mode="L").save(voc / "SegmentationClassAug" / f"{name}.png")
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(names) + "\n")
    split = load_segmentation_split("voc", voc, "train_aug")
    assert len(split) == 6 and split.masks[0].parent.name == "SegmentationClassAug"
    assert set(np.unique(read_mask(split.masks[0], split))) <= {0, 1, 7, 15, 255}
