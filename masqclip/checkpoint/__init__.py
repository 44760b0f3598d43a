"""Checkpoints in detectron2 format; foreign weights (torchvision, d2 model zoo) by name mapping."""
from .convert import load_d2_pkl, torchvision_resnet_to_d2, torchvision_weights_file
from .io import (CheckpointError, UnreadableCheckpointError, group_keys, load_checkpoint, read_checkpoint,
                 save_checkpoint)

__all__ = ["CheckpointError", "UnreadableCheckpointError", "group_keys", "load_checkpoint", "load_d2_pkl",
           "read_checkpoint", "save_checkpoint", "torchvision_resnet_to_d2", "torchvision_weights_file"]
