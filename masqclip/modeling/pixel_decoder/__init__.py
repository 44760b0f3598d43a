"""Pixel decoders: multi-scale deformable-attention encoder + FPN step (Mask2Former)."""
from .build import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from .msdeformattn import MSDeformAttnPixelDecoder, MSDeformAttnTransformerEncoderOnly

__all__ = ["PIXEL_DECODER_REGISTRY", "MSDeformAttn", "MSDeformAttnPixelDecoder",
           "MSDeformAttnTransformerEncoderOnly", "build_pixel_decoder", "ms_deform_attn_core"]
