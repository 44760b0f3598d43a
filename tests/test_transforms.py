"""LSJ and test-time resize: sizes, image/label alignment, flips, known answers."""
from __future__ import annotations

import numpy as np
import pytest

from masqclip.config import get_cfg
from masqclip.data.transforms import LSJ, GeometricTransform, ResizeShortestEdge

PAD = 128
PALETTE = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230]], np.uint8)


def _blocks(h: int, w: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [h, w] label map of ``cell``-sized random blocks of ids 0..4."""
    grid = rng.integers(0, len(PALETTE), (h // cell + 1, w // cell + 1))
    return np.kron(grid, np.ones((cell, cell), np.int64))[:h, :w]


def _interior(labels: np.ndarray, radius: int) -> np.ndarray:
    """bool: pixels whose (2r+1)^2 neighbourhood lies in the array and holds one label (the padding
    value counts as a label; pixels near the array's edge are excluded: the resize saw beyond it)."""
    h, w = labels.shape
    padded = np.pad(labels, radius, mode="constant", constant_values=-1)
    same = np.ones((h, w), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            same &= padded[radius + dy: radius + dy + h, radius + dx: radius + dx + w] == labels
    return same


@pytest.mark.parametrize("seed", range(12))
def test_lsj_keeps_image_masks_and_semantics_aligned(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(60, 200)), int(rng.integers(60, 200))
    labels = _blocks(h, w, cell=int(rng.integers(24, 48)), rng=rng)
    image = PALETTE[labels]
    masks = np.stack([labels == k for k in range(len(PALETTE))])
    tf = LSJ(image_size=96, min_scale=0.5, max_scale=2.0)(rng, (h, w))

    out_img = tf.apply_image(image, PAD)
    out_sem = tf.apply_labels(labels, 255)
    out_masks = tf.apply_labels(masks, 0)
    assert out_img.shape == (96, 96, 3) and out_sem.shape == (96, 96) and out_masks.shape == (5, 96, 96)
    assert out_masks.dtype == bool and out_sem.dtype == labels.dtype
    # masks and semantics went through the same nearest-neighbour geometry
    for k in range(len(PALETTE)):
        assert (out_masks[k] == (out_sem == k)).all()
    padded = out_sem == 255
    assert not out_masks[:, padded].any()
    # image pixels away from label edges have exactly their label's colour; padding is PAD
    interior = _interior(out_sem, radius=2)
    inside = interior & ~padded
    assert inside.sum() > 0.1 * (~padded).sum()  # not vacuous
    assert (out_img[inside] == PALETTE[out_sem[inside]]).all()
    assert (out_img[interior & padded] == PAD).all()


def test_lsj_sizes_follow_resize_scale_and_fixed_size_crop():
    rng = np.random.default_rng(0)
    lsj = LSJ(image_size=128, min_scale=0.1, max_scale=2.0)
    for _ in range(200):
        h, w = rng.integers(32, 400, 2)
        tf = lsj(rng, (int(h), int(w)))
        sh, sw = tf.scaled_size
        assert tf.out_size == (128, 128)
        assert abs(sh / h - sw / w) < 2.0 / min(h, w)  # aspect kept (up to rounding)
        assert 0.1 * 128 - 1 <= max(sh, sw) <= 2.0 * 128 + 1  # long side = factor x IMAGE_SIZE
        assert 0 <= tf.offset[0] <= max(0, sh - 128) and 0 <= tf.offset[1] <= max(0, sw - 128)


def test_lsj_known_answer_pads_bottom_right():
    tf = LSJ(image_size=128, min_scale=1.0, max_scale=1.0, flip="none")(np.random.default_rng(0), (64, 128))
    assert tf == GeometricTransform(in_size=(64, 128), scaled_size=(64, 128), offset=(0, 0), out_size=(128, 128))
    image = np.full((64, 128, 3), 7, np.uint8)
    out = tf.apply_image(image, PAD)
    assert (out[:64] == 7).all() and (out[64:] == PAD).all()
    sem = tf.apply_labels(np.zeros((64, 128), np.int64), 255)
    assert (sem[:64] == 0).all() and (sem[64:] == 255).all()


def test_flip_mirrors_image_and_labels():
    rng = np.random.default_rng(3)
    labels = _blocks(50, 70, 10, rng)
    image = PALETTE[labels]
    base = GeometricTransform(in_size=(50, 70), scaled_size=(100, 140), offset=(10, 30), out_size=(64, 64))
    flipped = GeometricTransform(in_size=(50, 70), scaled_size=(100, 140), offset=(10, 30), out_size=(64, 64),
                                 flip_axis=-1)
    assert (flipped.apply_image(image) == base.apply_image(image)[:, ::-1]).all()
    assert (flipped.apply_labels(labels) == base.apply_labels(labels)[:, ::-1]).all()
    assert not (flipped.apply_labels(labels) == base.apply_labels(labels)).all()


def test_flip_is_a_fair_coin_and_can_be_disabled():
    rng = np.random.default_rng(0)
    flips = [LSJ(image_size=32, min_scale=1, max_scale=1)(rng, (32, 32)).flip_axis for _ in range(400)]
    assert set(flips) == {None, -1} and 160 < flips.count(-1) < 240
    never = LSJ(image_size=32, min_scale=1, max_scale=1, flip="none")
    assert all(never(rng, (32, 32)).flip_axis is None for _ in range(50))
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        LSJ(image_size=32, min_scale=1, max_scale=1, flip="diagonal")


def test_same_generator_state_same_transform():
    a = LSJ(image_size=64, min_scale=0.1, max_scale=2.0)(np.random.default_rng([5, 1, 2]), (80, 120))
    b = LSJ(image_size=64, min_scale=0.1, max_scale=2.0)(np.random.default_rng([5, 1, 2]), (80, 120))
    assert a == b


@pytest.mark.parametrize("size, expected", [((480, 640), (800, 1067)), ((640, 480), (1067, 800)),
                                             ((100, 1000), (133, 1333)), ((800, 800), (800, 800))])
def test_resize_shortest_edge_known_answers(size, expected):
    tf = ResizeShortestEdge(short_edge=800, max_size=1333)(size)
    assert tf.scaled_size == tf.out_size == expected and tf.offset == (0, 0) and tf.flip_axis is None


def test_test_resize_from_config_and_image_content():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 100
    tf = ResizeShortestEdge.from_config(cfg)((32, 48))
    assert tf.out_size == (64, 96)
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, 24:] = 200
    out = tf.apply_image(image)
    assert out.shape == (64, 96, 3) and (out[:, :46] == 0).all() and (out[:, 50:] == 200).all()
    assert ResizeShortestEdge(short_edge=0, max_size=100)((30, 40)).out_size == (30, 40)


def test_lsj_from_config_reads_input_keys():
    cfg = get_cfg()
    cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE = 160, 0.5, 1.5
    assert LSJ.from_config(cfg) == LSJ(image_size=160, min_scale=0.5, max_scale=1.5, flip="horizontal")


def test_wrong_input_size_is_an_error():
    tf = GeometricTransform(in_size=(10, 10), scaled_size=(20, 20), offset=(0, 0), out_size=(20, 20))
    with pytest.raises(ValueError):
        tf.apply_labels(np.zeros((11, 10), np.int64))
