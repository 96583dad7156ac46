"""Model sections of the pipeline config: a built-in or factory model with weights, or an ONNX file.

`teacher:`/`student:` take a `ModelSpec`; `model:` (start from a trained model) takes a `SourceSpec`, which
also accepts `{onnx: file.onnx}`. The member of each union is chosen by its key, so a bad value is reported
for that shape alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from pipeline.validation import UNION_TAG

_STRICT = ConfigDict(extra="forbid", frozen=True)
BUILTIN_MODELS = ("resnet_teacher", "mobilenetv2_student", "resnet50", "mobilenet_v2")


class BuiltinModel(BaseModel):
    """A model shipped with edgepipe: the digits demo's `resnet_teacher` and `mobilenetv2_student`, and
    torchvision-compatible `resnet50` and `mobilenet_v2` (torchvision checkpoints load as `weights:`)."""

    model_config = _STRICT
    builtin: Literal["resnet_teacher", "mobilenetv2_student", "resnet50", "mobilenet_v2"]
    weights: str | None = None  # a state_dict (.pt loaded with weights_only=True, or .safetensors)
    width: float = Field(1.0, gt=0, le=4)  # channel multiplier (mobilenet_v2's width_mult; resnet50: 1 only)


class FactoryModel(BaseModel):
    """A user model: `module:function` returning an nn.Module, given `num_classes`/`in_channels` if it takes them."""

    model_config = _STRICT
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    weights: str | None = None
    kwargs: dict = {}


def _model_kind(v: Any) -> str:
    factory = isinstance(v, FactoryModel) or (isinstance(v, dict) and "factory" in v and "builtin" not in v)
    return UNION_TAG + ("factory" if factory else "builtin")


# The member is chosen by its key (`builtin:` or `factory:`), so a bad value is reported for that shape
# alone, not once per alternative; validation.py drops the tag from error locations.
ModelSpec = Annotated[
    Annotated[BuiltinModel, Tag(UNION_TAG + "builtin")] | Annotated[FactoryModel, Tag(UNION_TAG + "factory")],
    Discriminator(_model_kind),
]


class OnnxModel(BaseModel):
    """A trained model as an ONNX file (`model: {onnx: path}`): the run starts at quantize."""

    model_config = _STRICT
    onnx: str = Field(min_length=1)


def _source_kind(v: Any) -> str:
    if isinstance(v, OnnxModel) or (isinstance(v, dict) and "onnx" in v):
        return UNION_TAG + "onnx"
    return _model_kind(v)


# `model:`: one trained model to compress (instead of teacher/student): a factory or builtin with weights,
# or an ONNX file.
SourceSpec = Annotated[
    Annotated[BuiltinModel, Tag(UNION_TAG + "builtin")] | Annotated[FactoryModel, Tag(UNION_TAG + "factory")]
    | Annotated[OnnxModel, Tag(UNION_TAG + "onnx")],
    Discriminator(_source_kind),
]
