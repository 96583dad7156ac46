"""pipeline.preprocess: torchvision's eval recipe in numpy + Pillow, its errors, and its standalone use."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import UserError
from pipeline.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageError,
    Preprocess,
    PreprocessError,
    center_crop,
    imagenet,
    load_image,
    resize_shorter,
)


def test_imagenet_preset_is_resize_256_crop_224():
    p = imagenet()
    assert (p.resize, p.crop, p.mode, p.interpolation) == (256, 224, "RGB", "bilinear")
    assert p.mean == IMAGENET_MEAN == (0.485, 0.456, 0.406) and p.std == IMAGENET_STD == (0.229, 0.224, 0.225)
    assert imagenet(112).resize == 128


def test_eval_output_shape_dtype_and_normalisation():
    img = Image.new("RGB", (300, 200), (255, 0, 128))
    x = imagenet()(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (np.array([1.0, 0.0, 128 / 255], np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    assert np.allclose(x.reshape(3, -1).mean(1), expected, atol=1e-5)
    g = Preprocess(resize=None, crop=None, mode="L", mean=(0.5,), std=(0.5,))(img)
    assert g.shape == (1, 200, 300) and -1 <= g.min() <= g.max() <= 1


def test_shorter_side_resize_and_center_crop_follow_torchvision():
    # torchvision: the longer side is int(size * long / short); crop offsets int(round((h - c) / 2)).
    assert resize_shorter(Image.new("RGB", (500, 375)), 256).size == (341, 256)
    assert resize_shorter(Image.new("RGB", (375, 500)), 256).size == (256, 341)
    a = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9)
    crop = np.asarray(center_crop(Image.fromarray(a), 4))
    top, left = int(round((7 - 4) / 2.0)), int(round((9 - 4) / 2.0))
    assert np.array_equal(crop, a[top:top + 4, left:left + 4])
    padded = np.asarray(center_crop(Image.fromarray(a), 11))  # smaller than the crop: zero-padded
    assert padded.shape == (11, 11) and padded[0].sum() == 0 and padded[2:9, 1:10].tolist() == a.tolist()


def test_dict_round_trip_and_validation():
    p = Preprocess(resize=64, crop=56, mode="L", mean=[0.1], std=[0.2], interpolation="bicubic")
    d = p.to_dict()
    assert d == {"resize": 64, "crop": 56, "mode": "L", "mean": [0.1], "std": [0.2], "interpolation": "bicubic"}
    assert Preprocess.from_dict(d) == p
    assert issubclass(PreprocessError, UserError) and issubclass(PreprocessError, ValueError)
    with pytest.raises(UserError, match="unknown key 'size'.*allowed: crop"):
        Preprocess.from_dict({**d, "size": 3})
    for kwargs, msg in (({"mode": "CMYK"}, "mode = 'CMYK'.*allowed: RGB, L"), ({"crop": 0}, "crop = 0"),
                        ({"mean": (0.5,)}, r"mean = \[0.5\]: need 3"), ({"std": (1, 0, 1)}, "must be > 0"),
                        ({"interpolation": "lanczos"}, "allowed: bilinear")):
        with pytest.raises(UserError, match=msg):
            Preprocess(**kwargs)


def test_load_image_errors_name_the_file(tmp_path, make_truncated_jpeg):
    bad = [tmp_path / "missing.png", tmp_path / "text.jpg", make_truncated_jpeg(tmp_path / "cut.jpg"), tmp_path]
    bad[1].write_text("this is not a JPEG")
    for path, reason in zip(bad, ("not found", "not an image", "truncated", "cannot open"), strict=True):
        with pytest.raises(ImageError, match=reason) as e:
            load_image(path)
        assert e.value.path == str(path) and str(path) in str(e.value)


def test_load_image_converts_mode_and_palette(tmp_path, make_image):
    p = make_image(tmp_path / "g.png", (10, 8), mode="L")
    assert load_image(p, "RGB").mode == "RGB" and load_image(p, "L").size == (10, 8)
    pal = Image.new("P", (4, 4))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").mode == "RGB"


def test_standalone_without_torch_or_pipeline(tmp_path, make_image):
    """It ships in deploy bundles: numpy + Pillow only, no torch, no pipeline package."""
    shutil.copy(Path(__file__).parents[2] / "pipeline" / "preprocess.py", tmp_path / "preprocess.py")
    make_image(tmp_path / "a.jpg", (300, 260))
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'pipeline'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import preprocess as pp\n"
        "p = pp.Preprocess.from_dict(pp.imagenet().to_dict())\n"
        "x = p.load('a.jpg')\n"
        "try:\n"
        "    pp.Preprocess(crop=-1)\n"
        "except ValueError as e:\n"
        "    print(type(e).__name__, e)\n"
        "print(x.shape, x.dtype)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "(3, 224, 224) float32" in r.stdout and "PreprocessError preprocess.crop = -1" in r.stdout
