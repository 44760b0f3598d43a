"""Readable prediction overlays: mask outlines, numbered tags that never overlap, and a legend.

The overlay keeps the image's own colours inside each segment (in open-vocabulary segmentation
the colour is often part of the class name: "red circle"), so a segment is drawn as an outline in
its class's colour, not as a fill. Each segment gets a small numbered tag near its centre; tags are
placed greedily (highest score first) at the first free spot around that centre, always inside the
image and never on top of one another, with a leader line when moved away. A legend beside the
image lists each number with its colour, class name and score; numbers follow the score order, as
the ids of ``masqclip predict``'s JSON do.

Images with a side below ``MIN_OVERLAY_SIDE`` are enlarged by the smallest whole factor that
reaches it (nearest neighbour: each pixel becomes a block), so tags and outlines stay legible.
"""
from __future__ import annotations

import os

MIN_OVERLAY_SIDE = 384
COLORMAP = "tab10"
MIN_FONT_PX = 11
TAG_ALPHA = 0.85  # opacity of a tag's box
LEGEND_PAD = 6  # px around legend rows
FULL_RES_OUTLINE_PIXELS = 4_000_000  # larger drawings outline each mask at its own (inference) size


def _as_bool_array(mask):
    import numpy as np

    mask = mask.numpy() if hasattr(mask, "numpy") else np.asarray(mask)
    return mask.astype(bool, copy=False)


def _resize_nearest(mask, size: tuple[int, int]):
    """bool [H, W]: ``mask`` resized by nearest neighbour at pixel centres."""
    import numpy as np

    if tuple(mask.shape) == tuple(size):
        return mask
    return mask[_nearest_rows(mask.shape[0], size[0])][:, _nearest_rows(mask.shape[1], size[1])]


def _nearest_rows(n: int, size: int):
    """Source index (of ``n``) of each of ``size`` output positions: nearest neighbour at pixel centres."""
    import numpy as np

    return np.minimum(((np.arange(size) + 0.5) * n / size).astype(np.int64), n - 1)


def outline(mask, width: int):
    """bool [H, W]: the pixels of ``mask`` within ``width`` px (4-neighbourhood steps) of its border."""
    import numpy as np

    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0] = shrunk[-1] = False  # the image edge is a border too
        shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    return np.logical_and(mask, ~inner)


def anchor_point(mask) -> tuple[float, float] | None:
    """(x, y) inside ``mask`` nearest its centroid (the centroid of a ring lies outside it)."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    cx, cy = xs.mean(), ys.mean()
    k = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
    return float(xs[k]), float(ys[k])


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def place_tags(anchors: list[tuple[float, float]], sizes: list[tuple[int, int]],
               bounds: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Boxes (left, top, right, bottom) for tags of ``sizes`` (w, h), one per anchor, in order:
    each at the first spot on rings around its anchor that lies inside ``bounds`` (w, h) and
    overlaps no box placed before it (if none is free, the nearest spot inside the image)."""
    import math

    W, H = bounds
    placed: list[tuple[int, int, int, int]] = []
    for (ax, ay), (tw, th) in zip(anchors, sizes):
        step = max(tw, th) / 2 + 1
        best = None
        for ring in range(0, 40):
            n = 1 if ring == 0 else 8 * ring
            for j in range(n):
                angle = 2 * math.pi * j / n
                x = ax + ring * step * math.cos(angle) - tw / 2
                y = ay + ring * step * math.sin(angle) - th / 2
                x = int(round(min(max(x, 0), W - tw)))
                y = int(round(min(max(y, 0), H - th)))
                box = (x, y, x + tw, y + th)
                if best is None:
                    best = box
                if not any(_overlaps(box, other) for other in placed):
                    best = box
                    break
            else:
                continue
            break
        placed.append(best)
    return placed


def class_colors(segments: list[dict]) -> dict:
    """{category_id: (r, g, b)}: one colour per class, in order of first appearance."""
    import matplotlib

    cmap = matplotlib.colormaps[COLORMAP]
    colors: dict = {}
    for seg in segments:
        c = seg["category_id"]
        if c not in colors:
            colors[c] = tuple(int(round(255 * v)) for v in cmap(len(colors) % cmap.N)[:3])
    return colors


def _font(px: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), px)


def draw_overlay(image, segments: list[dict], path: str) -> list[dict]:
    """Write ``image`` (uint8 [H, W, 3]) with the segments' outlines, numbered tags and a legend
    to ``path``; returns the legend rows ``{"number", "class", "score", "color", "box"}`` (``box``:
    the tag, in the drawn image's pixels). Masks of another size than the image are mapped to it."""
    import numpy as np
    from PIL import Image, ImageDraw

    size = (image.shape[0], image.shape[1])
    factor = max(1, -(-MIN_OVERLAY_SIDE // min(size)))  # ceil division
    H, W = size[0] * factor, size[1] * factor
    drawn = image.repeat(factor, 0).repeat(factor, 1) if factor > 1 else image.copy()
    font_px = max(MIN_FONT_PX, min(H, W) // 36)
    line = max(2, min(H, W) // 200)
    order = sorted(segments, key=lambda s: -s["score"])
    colors = class_colors(order)
    anchors, kept, numbers = [], [], []
    for number, seg in enumerate(order, start=1):
        # Outline and anchor at the mask's own resolution (the inference size for a large photo),
        # then mapped to the drawing: a large photo costs little more than its pixels.
        small = _as_bool_array(seg["mask"])
        if H * W <= FULL_RES_OUTLINE_PIXELS:  # a small drawing: outline at its own resolution
            small = _resize_nearest(small, (H, W))
        point = anchor_point(small)
        if point is None:
            continue
        sy, sx = H / small.shape[0], W / small.shape[1]
        width = max(1, int(round(line / max(min(sy, sx), 1e-6))))
        ring = outline(small, width)
        halo = outline(small, width + 1) & ~ring  # a dark inner line keeps the outline visible on any colour
        # Only the segment's bounding box of the drawing is touched (rows/columns mapped back by
        # nearest neighbour, as the whole mask would be).
        rows, cols = np.nonzero(small.any(1))[0], np.nonzero(small.any(0))[0]
        ys = _nearest_rows(small.shape[0], H)
        xs = _nearest_rows(small.shape[1], W)
        y0, y1 = np.searchsorted(ys, rows[0]), np.searchsorted(ys, rows[-1], side="right")
        x0, x1 = np.searchsorted(xs, cols[0]), np.searchsorted(xs, cols[-1], side="right")
        box = drawn[y0:y1, x0:x1]
        dark = halo[ys[y0:y1]][:, xs[x0:x1]]
        box[dark] = (box[dark] * 0.4).astype(np.uint8)
        box[ring[ys[y0:y1]][:, xs[x0:x1]]] = colors[seg["category_id"]]
        anchors.append(((point[0] + 0.5) * sx - 0.5, (point[1] + 0.5) * sy - 0.5))
        kept.append(seg)
        numbers.append(number)
    font = _font(font_px)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [str(n) for n in numbers]
    sizes = []
    for text in texts:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        sizes.append((right - left + 6, bottom - top + 6))
    boxes = place_tags(anchors, sizes, (W, H))
    rows = [{"number": n, "class": seg["class"], "score": float(seg["score"]),
             "color": colors[seg["category_id"]], "box": box} for n, seg, box in zip(numbers, kept, boxes)]
    # Legend beside the image: swatch, number, "class score" per row, in columns if needed.
    row_h = font_px + LEGEND_PAD
    labels = [f"{r['number']}  {r['class']}  {r['score']:.2f}" for r in rows] or ["no segment"]
    text_w = max(probe.textbbox((0, 0), t, font=font)[2] for t in labels)
    col_w = row_h + text_w + 3 * LEGEND_PAD
    per_col = max(1, (H - 2 * LEGEND_PAD) // row_h)
    columns = -(-len(labels) // per_col)
    canvas = Image.new("RGB", (W + columns * col_w, H), (255, 255, 255))
    canvas.paste(Image.fromarray(drawn), (0, 0))
    del drawn
    draw = ImageDraw.Draw(canvas, "RGBA")
    for (ax, ay), row in zip(anchors, rows):  # leader lines first: no line crosses a tag's number
        left, top, right, bottom = row["box"]
        cx, cy = (left + right) / 2, (top + bottom) / 2
        if abs(cx - ax) > right - left or abs(cy - ay) > bottom - top:  # moved away from its segment
            draw.line((ax, ay, cx, cy), fill=(*row["color"], 255), width=max(1, line // 2))
    for row in rows:
        left, top, right, bottom = row["box"]
        draw.rectangle(row["box"], fill=(*row["color"], int(255 * TAG_ALPHA)), outline=(0, 0, 0, 255))
        draw.text(((left + right) / 2, (top + bottom) / 2), str(row["number"]), font=font, anchor="mm",
                  fill=(255, 255, 255))
    for k, text in enumerate(labels):
        x = W + (k // per_col) * col_w + LEGEND_PAD
        y = LEGEND_PAD + (k % per_col) * row_h
        if rows:
            draw.rectangle((x, y + 2, x + row_h - 4, y + row_h - 2), fill=(*rows[k]["color"], 255),
                           outline=(0, 0, 0, 255))
        draw.text((x + row_h, y + row_h / 2), text, font=font, anchor="lm", fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)
    return rows
