"""masqclip: MasQCLIP (ICCV 2023) open-vocabulary universal segmentation as a reproducible pipeline."""
__version__ = "0.1.0"
