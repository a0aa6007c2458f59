"""Face (identity) commands: face-train, face-eval, embed, verify."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..options import UsageError, positive_int
from ..spec import Mode

if TYPE_CHECKING:
    pass


def cmd_face_train(args: argparse.Namespace) -> int:
    from ..options import run_train_command
    from .task import FaceConfig, train_face

    return run_train_command(args, FaceConfig, train_face)


def format_verification(r: dict) -> str:
    """The protocol's figures as a few lines."""
    lines = [
        f"{r['checkpoint']} on {r['source']} ({r['pairs']:,} pairs, {r['same_pairs']:,} same-identity)",
        f"10-fold accuracy {r['accuracy']:.2f} +- {r['accuracy_std']:.2f}%  (best threshold: cosine > {r['threshold']:.3f})",
    ]
    for far, t in r["tar_at_far"].items():
        note = (
            ""
            if t["far_resolution"] <= float(far)
            else f"; FAR below 1/{round(1 / t['far_resolution'])} not resolvable"
        )
        lines.append(
            f"TAR@FAR={far}: {100 * t['tar']:.2f}%  (threshold {t['threshold']:.3f}, FAR {t['far']:.2e}{note})"
        )
    lines.append(f"ROC AUC {r['auc']:.4f}")
    return "\n".join(lines)


def cmd_face_eval(args: argparse.Namespace) -> int:
    from .task import evaluate_face_checkpoint
    from .verification import plot_roc

    if args.pairs and args.bin:
        raise UsageError("give --pairs (with --root) or --bin, not both")
    if args.root and not args.pairs:
        raise UsageError("--root names the images of --pairs; give --pairs with it")
    bad_far = [f for f in args.far if not 0 < f <= 1]
    if bad_far:
        raise UsageError(f"--far takes fractions of impostor pairs in (0, 1], got {bad_far[0]:g}")
    if args.roc and Path(args.roc).exists() and not args.overwrite:
        raise UsageError(f"{args.roc} exists; pass --overwrite to replace it")
    if args.labels and len(args.labels) != len(args.checkpoints):
        raise UsageError(f"--labels gives {len(args.labels)} names for {len(args.checkpoints)} checkpoints")
    reports: list[dict] = []
    curves: dict = {}
    for ckpt in args.checkpoints:
        r, curve = evaluate_face_checkpoint(
            ckpt, args.pairs, args.root, args.bin, args.batch_size, args.device, tuple(args.far)
        )
        label = args.labels[len(reports)] if args.labels else ckpt
        reports.append(r)
        curves[f"{label} (AUC {r['auc']:.4f})"] = curve
    if args.roc:
        plot_roc(curves, args.roc, title=reports[0]["source"] if len(reports) == 1 else "")
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
        return 0
    print("\n\n".join(format_verification(r) for r in reports))
    if args.roc:
        print(f"ROC curve{'s' if len(reports) > 1 else ''} in {args.roc}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ...data.images import collect_images
    from ...engine.distributed import init_distributed
    from .embed import check_embeddings_path, embed_files, save_embeddings
    from .task import load_face_model

    check_embeddings_path(args.output, args.overwrite)  # before any image is embedded
    _, device = init_distributed(args.device)
    model, prep, _, _ = load_face_model(args.checkpoint, args.embedding_size)
    files = collect_images(args.images)
    emb = embed_files(model.to(device), prep, files, args.batch_size)
    save_embeddings(args.output, files, emb, args.overwrite)
    print(f"{len(files)} embeddings of {emb.shape[1]} dimensions (L2-normalised, image + mirror) in {args.output}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ...engine.distributed import init_distributed
    from .embed import verify_images
    from .task import load_face_model

    _, device = init_distributed(args.device)
    model, prep, data, _ = load_face_model(args.checkpoint, args.embedding_size)
    a, b = Path(args.a), Path(args.b)
    for p in (a, b):
        if not p.is_file():
            raise UsageError(f"image not found: {p}")
    threshold = args.threshold if args.threshold is not None else data.get("threshold")
    r = verify_images(model.to(device), prep, a, b, threshold)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    verdict = "same identity" if r["same"] else "different identities"
    print(f"{verdict}: cosine similarity {r['similarity']:.4f} vs threshold {r['threshold']:.4f}")
    return 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ...engine.config import add_config_arguments
    from .task import FaceConfig

    p.add_argument("--config", help="a YAML file of settings")
    add_config_arguments(p, FaceConfig)


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="checkpoint", help="checkpoint(s) written by face-train")
    p.add_argument("--labels", nargs="+", help="names for the checkpoints in the ROC legend")
    p.add_argument("--pairs", help="an LFW-style pairs.txt")
    p.add_argument("--root", help="the folder of identity folders that --pairs names")
    p.add_argument("--bin", help="an insightface verification set (lfw.bin, cfp_fp.bin, agedb_30.bin)")
    p.add_argument("--far", type=float, nargs="+", default=[1e-3, 1e-4], help="FARs at which to report TAR")
    p.add_argument("--roc", help="write the ROC curve(s) to this PNG (one curve per checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --roc file")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _embed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `ghostnet face train`")
    p.add_argument("--output", required=True, help="the .npz file to write")
    p.add_argument("--embedding-size", type=positive_int, help="refuse a checkpoint of another embedding size")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="an image file")
    p.add_argument("b", help="an image file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by face-train")
    p.add_argument("--threshold", type=float, help="cosine threshold; default: the checkpoint's calibrated one")
    p.add_argument("--embedding-size", type=positive_int, help="refuse a checkpoint of another embedding size")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from ...nn.rep import reparameterize
    from ..export import ExportSource, run_export
    from .task import load_face_model

    model, prep, _, _ = load_face_model(args.checkpoint)
    hw = tuple(args.input_size) if args.input_size else (prep.image_size, prep.image_size)
    source = ExportSource(reparameterize(model.eval()), hw, prep.in_chans, prep, Path(args.checkpoint).stem)
    return run_export(args, source)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    from ..export import add_export_arguments

    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `ghostnet face train`")
    add_export_arguments(p)


MODES = (
    Mode(
        "train",
        "train a GhostFaceNet identity embedding with ArcFace / CosFace (also under torchrun)",
        "Train an embedding model on identity folders (DATA_DIR/<identity>/*.jpg) or a built-in set whose "
        "classes stand in for identities, through a margin head; each epoch, 10-fold verification accuracy on pairs "
        "of identities never trained on picks best.pth. Identity-folder images are read from their files per batch "
        "(--num-workers workers); identities with fewer than --min-images images are left out with a warning. "
        "Run folders, resume, curves and DDP as in `ghostnet classify train`.",
        _train_arguments,
        cmd_face_train,
    ),
    Mode(
        "eval",
        "10-fold verification accuracy, best threshold, TAR@FAR and ROC of a face checkpoint",
        "The LFW protocol: image + mirror embeddings summed and L2-normalised, cosine per pair, threshold "
        "chosen on nine folds and scored on the tenth. Pairs from --bin (insightface .bin), --pairs with --root "
        "(LFW pairs.txt), or by default the validation pairs the checkpoint was trained with.",
        _eval_arguments,
        cmd_face_eval,
    ),
    Mode(
        "embed",
        "embeddings of image files or folders, written to a .npz",
        "Embed images (files, or folders searched recursively) with a `ghostnet face train` checkpoint: each image's "
        "and its mirror's embedding summed and L2-normalised; written as OUTPUT.npz with arrays 'paths' and 'embeddings'.",
        _embed_arguments,
        cmd_embed,
    ),
    Mode(
        "verify",
        "do two face images show the same identity? (cosine vs the calibrated threshold)",
        "Compare two images with a face-train checkpoint: the cosine of their embeddings against the "
        "threshold calibrated on the validation pairs during training (or --threshold).",
        _verify_arguments,
        cmd_verify,
    ),
    Mode(
        "export",
        "write a trained embedding network for ONNX Runtime, TorchScript, torch.export or an edge runtime, checked",
        "Export the embedding network of a `ghostnet face train` checkpoint (not its margin head). "
        "Write ONNX, TorchScript or ExportedProgram (validated, and matching PyTorch to 1e-4), or a model for OpenVINO, ExecuTorch, LiteRT or ncnn (batch 1, checked in the runtime's own interpreter on real images; int8 with --int8 except ncnn).",
        _export_arguments,
        cmd_export,
    ),
)
