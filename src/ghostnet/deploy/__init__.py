"""The inference form of a model and where it goes: BN folding, export (ONNX, TorchScript, ExportedProgram,
detectors), int8 quantization, prediction on image files (`ghostnet.bench` measures them).

    fused = fuse_bn(model.eval())
    export_model(fused, "m.onnx", "onnx", input_size=(224, 224), dynamic_batch=True)   # checked in ONNX Runtime
"""

from ..nn.surgery import fuse_bn
from .export import FORMATS, ExportReport, export_model, prepare_inference

__all__ = ["FORMATS", "ExportReport", "export_model", "fuse_bn", "prepare_inference"]
