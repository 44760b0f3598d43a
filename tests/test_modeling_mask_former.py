"""MaskFormer meta-architecture: official checkpoint layout (acceptance), training and inference I/O."""
from __future__ import annotations

import time

import pytest
import torch

from model_toys import blob_image
from masqclip.checkpoint import load_checkpoint
from masqclip.config import setup_cfg
from masqclip.modeling import build_model

TEACHER = "config/models/base-novel/teacher_R50_100k_base48.yaml"
SYNTHETIC = "config/models/synthetic/teacher.yaml"
_DTYPES = {"float32": torch.float32}


def _official_teacher_block(shared_dir) -> tuple[dict[str, tuple[int, ...]], int, int]:
    """Names -> shapes of the first block of the official key list, plus its stated counts."""
    lines = (shared_dir / "official_state_dict_keys.txt").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    header = lines[starts[0]]
    body = lines[starts[0] + 1:starts[1]]
    shapes = {}
    for line in body:
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split()
        assert dtype in _DTYPES
        shapes[name] = tuple(int(s) for s in shape.split("x"))
    n_tensors = int(header.split(":")[1].split("tensors")[0])
    n_values = int(header.split(",")[1].split("values")[0])
    return shapes, n_tensors, n_values


@pytest.fixture(scope="module")
def teacher(repo_dir):
    torch.manual_seed(0)
    return build_model(setup_cfg(str(repo_dir / TEACHER), ["MODEL.DEVICE", "cpu"]))


def test_teacher_state_dict_equals_official_layout(teacher, shared_dir):
    official, n_tensors, n_values = _official_teacher_block(shared_dir)
    assert (n_tensors, n_values) == (558, 44056196)
    ours = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}
    assert len(ours) == n_tensors
    assert sum(v.numel() for v in teacher.state_dict().values()) == n_values
    assert "pixel_mean" not in ours and "pixel_std" not in ours


def test_official_layout_checkpoint_loads_without_missing_or_unexpected(teacher, shared_dir, tmp_path):
    official, _, _ = _official_teacher_block(shared_dir)
    gen = torch.Generator().manual_seed(1)
    state = {k: torch.randn(shape, generator=gen) if shape else torch.randn((), generator=gen)
             for k, shape in official.items()}
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 99999}, path)  # as the official release files are stored
    missing, unexpected, rest = load_checkpoint(teacher, path)
    assert missing == [] and unexpected == []
    assert rest == {"iteration": 99999}
    loaded = teacher.state_dict()
    for key in ("backbone.res4.5.conv2.weight", "sem_seg_head.predictor.class_embed.bias", "criterion.empty_weight"):
        torch.testing.assert_close(loaded[key], state[key])


def _synthetic_cfg(repo_dir, *opts):
    return setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu", *opts])


def _blob_image(size=64, seed=0):
    """A textured square and disc on a noisy background, with their masks (classes 4 and 7)."""
    return blob_image(size, seed, classes=(4, 7), striped=True)


def test_training_returns_weighted_losses_of_every_layer(repo_dir):
    torch.manual_seed(0)
    cfg = _synthetic_cfg(repo_dir)
    model = build_model(cfg).train()
    losses = model([_blob_image(seed=s) for s in range(2)])
    dec_layers = cfg.MODEL.MASK_FORMER.DEC_LAYERS
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice")
                           for s in [""] + [f"_{i}" for i in range(dec_layers - 1)]}
    raw = model.criterion(model.sem_seg_head(model.backbone(model.preprocess_images(
        [_blob_image(seed=0)])[0]), aux_masks=True), model.prepare_targets([_blob_image(seed=0)], (64, 64)))
    assert set(raw) == set(losses)  # the criterion reports unweighted losses; the model weights them
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_targets_are_class_agnostic_and_padded(repo_dir):
    model = build_model(_synthetic_cfg(repo_dir))
    x = _blob_image(size=50)
    images, sizes = model.preprocess_images([x])
    assert images.shape[-2:] == (64, 64) and sizes == [(50, 50)]  # SIZE_DIVISIBILITY 32
    assert images[0, :, 50:].abs().sum() == 0 and images[0, :, :, 50:].abs().sum() == 0
    torch.testing.assert_close(images[0, :, :50, :50], (x["image"] - model.pixel_mean) / model.pixel_std)
    (target,) = model.prepare_targets([x], (64, 64))
    assert target["labels"].tolist() == [0, 0]
    assert target["masks"].shape == (2, 64, 64) and not target["masks"][:, 50:].any()


def test_inference_outputs_at_original_size(repo_dir):
    cfg = _synthetic_cfg(repo_dir, "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "True",
                         "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "True")
    model = build_model(cfg).eval()
    x = _blob_image(size=48)
    x["height"], x["width"] = 96, 80  # the model input was resized from a 96 x 80 original
    with torch.no_grad():
        (out,) = model([x])
    assert out["sem_seg"].shape == (1, 96, 80)
    assert out["panoptic_seg"][0].shape == (96, 80)
    inst = out["instances"]
    assert inst.image_size == (96, 80) and inst.pred_masks.shape[1:] == (96, 80)
    assert set(inst.pred_classes.tolist()) <= {0}
    with torch.no_grad():
        (raw,) = model.predict_queries([x])
    q = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    assert raw["pred_logits"].shape == (q, 2) and raw["pred_masks"].shape == (q, 16, 16)
    assert raw["image_size"] == (48, 48) and raw["padded_size"] == (64, 64)


@pytest.mark.slow
def test_small_model_overfits_one_image(repo_dir):
    """Mask loss (BCE + dice, all layers) must fall by most of its value within a few dozen steps.

    The randomly initialised backbone is frozen (FREEZE_AT 5) to keep the test fast on 2 shared
    cores: the pixel decoder and transformer decoder must fit the masks on their own.
    """
    torch.manual_seed(0)
    model = build_model(_synthetic_cfg(repo_dir, "MODEL.BACKBONE.FREEZE_AT", "5")).train()
    batch = [_blob_image(size=64)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)

    def mask_loss(losses):
        return float(sum(v.detach() for k, v in losses.items() if k.startswith(("loss_mask", "loss_dice"))))

    history, start = [], time.perf_counter()
    for _ in range(40):
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append(mask_loss(losses))
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.25 * first, f"mask loss {first:.3f} -> {last:.3f} in {time.perf_counter() - start:.0f} s"
    model.eval()
    with torch.no_grad():
        (raw,) = model.predict_queries(batch)
    probs = raw["pred_logits"].softmax(-1)[:, 0]
    masks = torch.nn.functional.interpolate(raw["pred_masks"][None], size=(64, 64), mode="bilinear")[0] > 0
    gt = batch[0]["instances"].gt_masks
    best = [max(float((m & g).sum() / (m | g).sum().clamp(min=1)) for m in masks[probs > 0.5]) for g in gt]
    assert min(best) > 0.7, f"best IoU per ground-truth mask {best}"
