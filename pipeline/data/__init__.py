"""The run's data: the config's `data:` section loaded into a `Data` (torch Datasets per split, bounded samples).

- `load`: load_data(spec, base, num_classes, cfg, cache_dir) -> Data (digits, folders, CSV, npz, root + split,
  factory)
- `view`: Data (splits, loaders, `sample(split, n, seed)`, the student's training set)
- `checks`: ImageStats, scan_images, check_class_coverage (content checks, batch by batch)
- `arrays`: the built-in digits (load_digits, DataSplits)
"""

from pipeline.data.arrays import DIGITS_MEAN, DIGITS_STD, DataSplits, load_digits
from pipeline.data.checks import ImageStats, check_class_coverage, scan_images
from pipeline.data.load import load_data
from pipeline.data.view import Data

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "Data", "DataSplits", "ImageStats", "check_class_coverage", "load_data",
           "load_digits", "scan_images"]
