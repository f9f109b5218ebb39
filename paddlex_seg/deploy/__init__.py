"""Deployment: export a model for Paddle Inference / ONNX, and run exported models.

    model.export('output/infer')                    # or paddlex_seg.deploy.export_inference_model
    predictor = paddlex_seg.deploy.Predictor('output/infer')
    result = predictor.predict('photo.jpg')

``predictor`` needs only the transforms and the image reader of paddlex_seg, not its
training code.
"""
from .export import export_inference_model, export_onnx, parse_fixed_input_shape  # noqa: F401
from .predictor import InferenceModelError, Predictor  # noqa: F401
from .check import check  # noqa: F401
from . import ptq  # noqa: F401

__all__ = ["Predictor", "InferenceModelError", "check", "ptq", "export_inference_model", "export_onnx",
           "parse_fixed_input_shape"]
