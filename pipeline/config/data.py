"""The config's data sections: `data:` (builtin digits, paths, one folder split, a factory) and `preprocess:`."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from pipeline.validation import UNION_TAG

_STRICT = ConfigDict(extra="forbid", frozen=True)
BUILTIN_DATA = ("digits",)


class BuiltinData(BaseModel):
    """scikit-learn's bundled handwritten digits, upsampled, with a fixed stratified split."""

    model_config = _STRICT
    builtin: Literal["digits"]
    image_size: int = Field(16, ge=8, le=64)  # digits are 8x8; upsampled so the teacher is a real workload
    split_seed: int = 0


class FileData(BaseModel):
    """User data from disk. Each split is a path: an image-folder tree (`root/<class>/*.jpg`; for
    `unlabeled` a flat folder), a `.csv` list (`path,label`) or an `.npz` (`x` float32 NCHW, `y` int64;
    memory-mapped). Or `root:` one image-folder tree split by class with `split` fractions and `split_seed`.
    """

    model_config = _STRICT
    train: str | None = None
    val: str | None = None
    test: str | None = None  # held-out split for final accuracy; `val` is used when absent
    unlabeled: str | None = None  # extra images the student learns from through the teacher alone
    root: str | None = None  # one image-folder tree, split with `split` (instead of train/val/test)
    split: list[float] | None = None  # [train, val, test] (or [train, val]) fractions of each class
    split_seed: int = 0
    mean: list[float] | None = None  # npz only: per-channel normalisation applied to x (recorded in the manifest)
    std: list[float] | None = None

    @field_validator("mean")
    @classmethod
    def _finite_mean(cls, v):
        if v is not None and (not v or not all(math.isfinite(m) for m in v)):
            raise ValueError("need one finite value per channel (or one for all)")
        return v

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v):
        if v is not None and (not v or not all(math.isfinite(s) and s > 0 for s in v)):
            raise ValueError("need one finite value > 0 per channel (or one for all)")
        return v

    @field_validator("split")
    @classmethod
    def _fractions(cls, v):
        if v is not None and (len(v) not in (2, 3) or any(not 0 < f < 1 for f in v) or abs(sum(v) - 1) > 1e-6):
            raise ValueError(f"need [train, val] or [train, val, test] fractions in (0, 1) summing to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> FileData:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.root is not None:
            if self.train or self.val or self.test:
                raise ValueError("give data.root (one folder, split) or data.train/val/test paths, not both")
            if self.split is None:
                raise ValueError("data.root needs data.split, e.g. [0.8, 0.1, 0.1]")
        elif not (self.train and self.val):
            raise ValueError("need data.train and data.val paths (or data.root with data.split)")
        return self


class FactoryData(BaseModel):
    """User data from code: `module:function` returning {"train", "val", "test"[, "unlabeled"]} torch Datasets
    of `(x float32 CHW tensor, label int)` items (the config's folder is on the import path)."""

    model_config = _STRICT
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict = {}


def _data_kind(v: Any) -> str:
    if isinstance(v, BuiltinData) or (isinstance(v, dict) and "builtin" in v):
        return UNION_TAG + "builtin"
    factory = isinstance(v, FactoryData) or (isinstance(v, dict) and "factory" in v)
    return UNION_TAG + ("factory" if factory else "files")


DataSpec = Annotated[
    Annotated[BuiltinData, Tag(UNION_TAG + "builtin")] | Annotated[FileData, Tag(UNION_TAG + "files")]
    | Annotated[FactoryData, Tag(UNION_TAG + "factory")],
    Discriminator(_data_kind),
]


class PreprocessSpec(BaseModel):
    """How an image file becomes the model's input (`pipeline.preprocess.Preprocess`; also shipped in bundles)."""

    model_config = _STRICT
    resize: int | None = Field(None, ge=1)  # shorter side, aspect kept
    crop: int | None = Field(None, ge=1)  # center crop (required for image folders: batches must stack)
    mode: Literal["RGB", "L"] = "RGB"
    mean: list[float] = [0.485, 0.456, 0.406]  # one per channel, on 0..1 pixels
    std: list[float] = [0.229, 0.224, 0.225]
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
