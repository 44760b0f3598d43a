"""Multi-scale deformable attention against a naive per-sampling-point implementation."""
from __future__ import annotations

import math

import torch

from masqclip.modeling.pixel_decoder import MSDeformAttn, ms_deform_attn_core
from masqclip.modeling.pixel_decoder.msdeformattn import MSDeformAttnEncoder


def _bilinear_zero_pad(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample img [D, H, W] at normalised (x, y) in [0, 1]: pixel centres at (i + 0.5) / size, zeros outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _naive_core(value, shapes, locations, weights):
    b, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(b, lq, m, d, dtype=value.dtype)
    for bi in range(b):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    img = value[bi, starts[lvl]:starts[lvl + 1], head].T.reshape(d, h, w)
                    for p in range(n_points):
                        x, y = locations[bi, q, head, lvl, p].tolist()
                        out[bi, q, head] += weights[bi, q, head, lvl, p] * _bilinear_zero_pad(img, x, y)
    return out.reshape(b, lq, m * d)


def test_core_equals_naive_sampling():
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    b, m, d, lq, p = 2, 3, 4, 6, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, d, generator=gen, dtype=torch.float64)
    # locations partly outside [0, 1] to exercise the zero padding
    locations = torch.rand(b, lq, m, len(shapes), p, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(b, lq, m, len(shapes), p, generator=gen, dtype=torch.float64)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    got = ms_deform_attn_core(value, shapes, locations, weights)
    torch.testing.assert_close(got, _naive_core(value, shapes, locations, weights))


def test_module_equals_naive_projection_and_sampling():
    torch.manual_seed(1)
    shapes = [(4, 6), (2, 3)]
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2).double()
    with torch.no_grad():  # move away from the init so offsets and weights depend on the query
        for lin in (attn.sampling_offsets, attn.attention_weights):
            lin.weight.normal_(std=0.5)
    s = sum(h * w for h, w in shapes)
    inp = torch.randn(1, s, 16, dtype=torch.float64)
    query = torch.randn(1, 5, 16, dtype=torch.float64)
    ref = torch.rand(1, 5, 2, 2, dtype=torch.float64)
    got = attn(query, ref, inp, shapes)

    value = attn.value_proj(inp).view(1, s, 4, 4)
    offsets = attn.sampling_offsets(query).view(1, 5, 4, 2, 2, 2)
    normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float64)
    locations = ref[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
    weights = attn.attention_weights(query).view(1, 5, 4, 4).softmax(-1).view(1, 5, 4, 2, 2)
    expected = attn.output_proj(_naive_core(value, shapes, locations, weights))
    torch.testing.assert_close(got, expected)


def test_padding_mask_zeroes_values():
    torch.manual_seed(2)
    attn = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2)
    inp = torch.randn(1, 12, 8)
    mask = torch.ones(1, 12, dtype=torch.bool)
    out = attn(torch.randn(1, 3, 8), torch.rand(1, 3, 1, 2), inp, [(3, 4)], mask)
    # every value zeroed -> output is the output projection's bias
    torch.testing.assert_close(out, attn.output_proj.bias.expand_as(out))


def test_initialisation_follows_deformable_detr():
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=8, n_points=4)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.bias) == 0
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    # head 0 points along +x, head 2 along +y (8 directions); point k at k+1 times the unit step
    torch.testing.assert_close(bias[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(bias[0, 0, :, 1], torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[2, 1, :, 1], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # every level repeats the same directions; max |component| of the unit step is 1
    torch.testing.assert_close(bias[:, 0], bias[:, 2])
    assert torch.allclose(bias[:, :, 0].abs().amax(-1), torch.ones(8, 3))
    assert torch.count_nonzero(attn.value_proj.bias) == 0


def test_reference_points_are_pixel_centres_scaled_by_valid_ratio():
    shapes = [(2, 4), (1, 2)]
    ratios = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.5, 1.0], [0.5, 1.0]]])
    ref = MSDeformAttnEncoder.get_reference_points(shapes, ratios)
    assert ref.shape == (2, 10, 2, 2)
    # first image, level 0, pixel (row 1, col 2): centre (2.5 / 4, 1.5 / 2)
    torch.testing.assert_close(ref[0, 6, 0], torch.tensor([2.5 / 4, 1.5 / 2]))
    # second image: x normalised by the valid half width, then scaled back per level
    torch.testing.assert_close(ref[1, 6, 0], torch.tensor([2.5 / 2 * 0.5, 1.5 / 2]))
