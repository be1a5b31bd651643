"""Data a user brings: sources (image folder, npz, HDF5, factory), preprocessing, lazy batches."""
from .loader import Batch, SampleDataset, Skipped, batches
from .preprocess import Preprocess
from .sources import ArraySource, FactorySource, HDF5Source, ImageFolder, NpzSource, Source, select

__all__ = ["ArraySource", "Batch", "FactorySource", "HDF5Source", "ImageFolder", "NpzSource", "Preprocess",
           "SampleDataset", "Skipped", "Source", "batches", "select"]
