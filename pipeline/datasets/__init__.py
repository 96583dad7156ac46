"""Image data sets read from disk, for training and evaluating at real size (torch Datasets).

Images are decoded one at a time in `__getitem__` (so in DataLoader worker processes) and npz
arrays are memory-mapped: nothing here holds a whole data set in memory; cost grows with the batch.

- `sources`: ImageFolderDataset, UnlabeledFolderDataset, ImageListDataset, NpzDataset
- `augment`: make_augment("none" | "shift" | "standard", seed), seeded per (seed, epoch, index)
- `split`: stratified_split(labels, fractions, seed)
- `digest`: files_digest(paths), dataset_digest(dataset) for cache keys
- `loader`: make_loader(dataset, batch_size, shuffle, seed, workers=...): the one loader edgepipe uses
- `arrays`: ArrayDataset (in-memory images and labels, read a batch at a time)
"""

from pipeline.datasets.arrays import ArrayDataset
from pipeline.datasets.augment import AUGMENTS, Augment, make_augment, shift_set
from pipeline.datasets.base import IMAGE_EXTENSIONS, DatasetError
from pipeline.datasets.digest import dataset_digest, files_digest
from pipeline.datasets.loader import EpochDataLoader, make_loader
from pipeline.datasets.sources import ImageFolderDataset, ImageListDataset, NpzDataset, UnlabeledFolderDataset
from pipeline.datasets.split import stratified_split

__all__ = [
    "ArrayDataset", "AUGMENTS", "Augment", "make_augment", "shift_set",
    "IMAGE_EXTENSIONS", "DatasetError", "dataset_digest", "files_digest",
    "EpochDataLoader", "make_loader", "ImageFolderDataset", "ImageListDataset", "NpzDataset",
    "UnlabeledFolderDataset", "stratified_split",
]
