import pytest
import torch
from PIL import Image

from conftest import write_cifar
from ghostnet import create_model
from ghostnet.analysis.visualize import map_similarity, plot_dataset_preview, plot_ghost_maps, plot_redundant_pairs
from ghostnet.cli import main


@pytest.fixture
def image(tmp_path):
    import numpy as np

    arr = np.zeros((40, 40, 3), dtype=np.uint8)
    arr[10:30, 15:25] = 255
    Image.fromarray(arr).save(tmp_path / "img.png")
    return tmp_path / "img.png"


def _is_png(path):
    return path.read_bytes()[:4] == b"\x89PNG"


def test_similarity_is_correlation():
    a = torch.rand(5, 5)
    maps = torch.stack([a, 2 * a + 3, -a, torch.ones(5, 5)])
    s = map_similarity(maps)
    assert s[0, 1] == pytest.approx(1.0, abs=1e-5) and s[0, 2] == pytest.approx(-1.0, abs=1e-5)
    assert s[0, 3] == 0  # a constant map correlates with nothing


def test_ghost_figure_pairs_each_intrinsic_map_with_its_own_ghosts(tmp_path):
    model = create_model("ghost_resnet56", ratio=3)
    x = torch.randn(1, 3, 32, 32)
    info = plot_ghost_maps(model, x, "layer2.0.conv2", tmp_path / "g.png", n_maps=4)
    assert info == {
        "layer": "layer2.0.conv2",
        "ratio": 3,
        "rows": 4,
        "mean_correlation": pytest.approx(info["mean_correlation"]),
    }
    assert _is_png(tmp_path / "g.png")
    # the cheap op is grouped by intrinsic map: ghost channels 2i and 2i+1 come from intrinsic map i only
    g = model.get_submodule("layer2.0.conv2").cheap_operation[0]
    assert g.groups == g.in_channels and g.out_channels == 2 * g.in_channels


def test_redundancy_figure_finds_a_duplicated_map(tmp_path):
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    with torch.no_grad():
        conv.weight[7] = conv.weight[2] * 2  # map 7 is a scaled copy of map 2
        conv.bias[7] = conv.bias[2] * 2
    info = plot_redundant_pairs(torch.nn.Sequential(conv), torch.randn(1, 3, 24, 24), "0", tmp_path / "r.png")
    assert info["pairs"][0][:2] == (2, 7) and info["pairs"][0][2] == pytest.approx(1.0, abs=1e-4)
    assert _is_png(tmp_path / "r.png")


@pytest.fixture
def user_backend():
    """A backend the user chose that is not Agg (the figures' own PNG writer), put back afterwards."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(before)


def test_plotting_leaves_the_users_backend_alone(tmp_path, user_backend):
    """Library code must not switch the user's matplotlib backend (it used to call matplotlib.use("Agg"))."""
    import matplotlib

    model = create_model("ghost_resnet56", ratio=2)
    plot_ghost_maps(model, torch.randn(1, 3, 32, 32), "layer2.0.conv2", tmp_path / "g.png", n_maps=2)
    plot_redundant_pairs(torch.nn.Conv2d(3, 16, 3), torch.randn(1, 3, 16, 16), "", tmp_path / "r.png", n_pairs=2)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    plot_dataset_preview(images, torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], tmp_path / "d.png", per_class=2)
    assert matplotlib.get_backend() == user_backend
    assert all(_is_png(tmp_path / f"{c}.png") for c in "grd")


def test_cli_visualize_end_to_end(tmp_path, image, capsys):
    assert main(["visualize", "ghost", str(image), "--model", "ghost_vgg16", "--output", str(tmp_path / "a.png")]) == 0
    assert "no --checkpoint, so ghost_vgg16 has random weights" in capsys.readouterr().out  # said, not silent
    assert (
        main(
            ["visualize", "ghost", str(image), "--model", "resnet18", "--ghostify", "--output", str(tmp_path / "b.png")]
        )
        == 0
    )
    assert (
        main(
            [
                "visualize",
                "redundancy",
                str(image),
                "--model",
                "resnet18",
                "--layer",
                "layer1.0",
                "--output",
                str(tmp_path / "c.png"),
            ]
        )
        == 0
    )
    write_cifar(tmp_path / "data")
    assert (
        main(
            [
                "visualize",
                "dataset",
                "--dataset",
                "cifar10",
                "--data-dir",
                str(tmp_path / "data"),
                "--output",
                str(tmp_path / "d.png"),
            ]
        )
        == 0
    )
    assert all(_is_png(tmp_path / f"{c}.png") for c in "abcd")
    out = capsys.readouterr().out
    assert "intrinsic maps of" in out and "most similar pairs" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["visualize", "ghost", "IMG", "--model", "resnet18"], "no Ghost modules; add --ghostify"),
        (["visualize", "ghost", "IMG", "--model", "ghost_vgg16", "--layer", "features.0"], "is not a Ghost module"),
        (["visualize", "redundancy", "IMG", "--model", "resnet18", "--layer", "layer9"], "has no layer 'layer9'"),
        (["visualize", "redundancy", "missing.png", "--model", "resnet18"], "cannot read image missing.png"),
        (["visualize", "ghost", "--model", "ghost_vgg16"], "needs an input IMAGE"),
    ],
)
def test_cli_visualize_errors(image, capsys, argv, message):
    argv = [str(image) if a == "IMG" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
