"""Datasets, catalogs, augmentation and loading."""
from .catalog import DatasetCatalog, Metadata, MetadataCatalog

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]
