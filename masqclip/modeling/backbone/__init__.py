"""Backbones (detectron2 structure and parameter names)."""
from .build import BACKBONE_REGISTRY, Backbone, build_backbone
from .resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet, build_resnet_backbone

__all__ = ["BACKBONE_REGISTRY", "Backbone", "BasicBlock", "BasicStem", "BottleneckBlock", "ResNet",
           "build_backbone", "build_resnet_backbone"]
