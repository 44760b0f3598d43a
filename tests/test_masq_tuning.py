"""MasQTuning: frozen parameters stay frozen, label assignment, score fusion, vocabularies, names."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from masqclip.checkpoint import load_checkpoint, save_checkpoint
from masqclip.config import get_cfg
from masqclip.modeling import build_model
from masqclip.modeling.meta_arch.masq_tuning import MasQTuning, assign_mask_labels
from masqclip.structures import Instances

REPO = Path(__file__).resolve().parents[1]
TINY = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.MASK_DIM", 32,
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 1, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 4,
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD", 64, "MODEL.MASK_FORMER.HIDDEN_DIM", 32,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 5, "MODEL.MASK_FORMER.NHEADS", 4,
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 64, "MODEL.MASK_FORMER.DEC_LAYERS", 3,
        "MODEL.META_ARCHITECTURE", "MasQTuning", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3,
        "MODEL.MASQ_CLIP.MODEL_NAME", ["masqclip-tiny"], "MODEL.MASQ_CLIP.PRETRAINED", "",
        "MODEL.MASQ_CLIP.VOCABULARY", ["red disc", "blue box, box", "grass"],
        "MODEL.MASQ_CLIP.TRAIN_MASK_SIZE", 64]


def tiny_cfg(*extra):
    cfg = get_cfg()
    cfg.merge_from_list(TINY + list(extra))
    return cfg


@pytest.fixture(scope="module")
def model() -> MasQTuning:
    torch.manual_seed(0)
    return build_model(tiny_cfg("MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", True))


def _batch(n=2, size=(48, 64)):
    torch.manual_seed(1)
    out = []
    for i in range(n):
        masks = torch.zeros(2, *size, dtype=torch.bool)
        masks[0, 4:20, 4:30] = True
        masks[1, 24:44, 30:60] = True
        out.append({"image": torch.randint(0, 256, (3, *size), dtype=torch.uint8), "height": size[0] * 2,
                    "width": size[1] * 2, "image_id": i,
                    "instances": Instances(size, gt_classes=torch.tensor([0, 2]), gt_masks=masks)})
    return out


def test_structure_and_names(model):
    tops = {k.split(".")[0] for k in model.state_dict()}
    assert tops == {"backbone", "sem_seg_head", "criterion", "masqclip"}
    assert model.state_dict()["criterion.empty_weight"].shape == (4,)
    assert "masqclip.mask_embeddings" in model.state_dict()
    assert "masqclip.visual.transformer.resblocks.0.attn.new_q_proj.weight" in model.state_dict()
    assert not any(k.startswith("masqclip.text") or "token_embedding" in k for k in model.state_dict())


def test_only_mask_token_parameters_change_after_a_step(model):
    m = copy.deepcopy(model)
    m.train()
    assert not m.backbone.training and not m.sem_seg_head.training and not m.masqclip.training
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"masqclip.mask_embeddings"} | {
        f"masqclip.visual.transformer.resblocks.{i}.attn.new_q_proj.{w}"
        for i in range(len(m.masqclip.visual.transformer.resblocks)) for w in ("weight", "bias")}
    before = {k: v.clone() for k, v in m.state_dict().items()}
    # AdamW over EVERY parameter (weight decay included): frozen ones must still not move.
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    losses = m(_batch())
    assert set(losses) == {"loss_masq_ce"} and losses["loss_masq_ce"].item() > 0
    sum(losses.values()).backward()
    optimizer.step()
    for name, value in m.state_dict().items():
        if name in trainable:
            assert not torch.equal(value, before[name]), f"{name} did not train"
        else:
            assert torch.equal(value, before[name]), f"{name} changed"


def test_label_assignment_known_answer():
    gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    gt[0, :4, :4] = True
    gt[1, 4:, :] = True
    pred = torch.full((4, 8, 8), -5.0)
    pred[0, :4, :4] = 5.0  # = gt 0 (dice 1)
    pred[1, 4:, :6] = 5.0  # 24 of gt 1's 32 pixels: dice (2*24 + 1)/(24 + 32 + 1) = 0.86
    pred[2, :2, :2] = 5.0  # 4 of gt 0's 16: dice 9/21 = 0.43 -> background
    labels = assign_mask_labels(pred, gt, torch.tensor([7, 9]), background=10, dice_threshold=0.6, size=8)
    assert labels.tolist() == [7, 9, 10, 10]
    none = assign_mask_labels(pred, gt[:0], torch.tensor([], dtype=torch.int64), background=10,
                              dice_threshold=0.6, size=8)
    assert none.tolist() == [10] * 4


def test_label_assignment_uses_the_smoothed_dice():
    # 2 predicted pixels inside a 5-pixel gt mask: plain dice 4/7 = 0.571 (background), smoothed
    # (4 + 1)/(7 + 1) = 0.625 > 0.6 (the gt's class)
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, 0, :5] = True
    pred = torch.full((1, 8, 8), -5.0)
    pred[0, 0, :2] = 5.0
    assert assign_mask_labels(pred, gt, torch.tensor([4]), background=10, dice_threshold=0.6, size=8).tolist() == [4]


def test_label_assignment_resizes_the_ground_truth_by_nearest():
    # 8x8 ground truth -> 4x4. Nearest takes each 2x2 block's top-left pixel; bilinear (then > 0.5)
    # averages the block. Gt = rows 0 and 2 (stripes): nearest -> the top two rows of the 4x4 grid
    # (8 pixels), bilinear -> 0.5 everywhere there -> empty. The prediction (already 4x4) is
    # those top two rows: nearest gives dice 1 (label 3), bilinear (0 + 1)/(8 + 1) (background).
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, 0] = gt[0, 2] = True
    pred = torch.full((1, 4, 4), -5.0)
    pred[0, :2] = 5.0
    assert assign_mask_labels(pred, gt, torch.tensor([3]), background=10, dice_threshold=0.6, size=4).tolist() == [3]


def _two_query_preds(pad=(8, 8)):
    """One image: gt class 1 on the top half; q0 predicts exactly it, q1 predicts nothing."""
    masks = torch.full((2, *pad), -10.0)
    masks[0, :pad[0] // 2] = 10.0
    gt = torch.zeros(1, *pad, dtype=torch.bool)
    gt[0, :pad[0] // 2] = True
    preds = [{"pred_masks": masks, "padded_size": pad}]
    batch = [{"instances": Instances(pad, gt_classes=torch.tensor([1]), gt_masks=gt)}]
    return preds, batch


def test_loss_known_answer(model):
    # labels: q0 -> class 1 (dice 1), q1 (empty) -> background (dice 1/(32 + 1)). K = 3, background = 3.
    # q0's logits [0, ln 2, 0, 0]: p(1) = 2/5; q1's all 0: p(background) = 1/4.
    # loss = CLASS_WEIGHT 2 x (1 * ln(5/2) + 0.1 * ln 4) / (1 + 0.1)
    preds, batch = _two_query_preds()
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    expected = 2.0 * (math.log(2.5) + 0.1 * math.log(4.0)) / 1.1
    assert model.losses(logits, preds, batch).item() == pytest.approx(expected, rel=1e-6)
    assert (model.no_object_weight, model.class_weight) == (0.1, 2.0)  # the official MASK_FORMER defaults


def _old_weighted_nll(logits, labels, background_weight):
    """The loss before the official keys: weighted mean NLL, "background" (last) weighing
    ``background_weight``, no factor."""
    nll = -logits.log_softmax(-1).flatten(0, 1)[torch.arange(labels.numel()), labels.flatten()]
    w = torch.where(labels.flatten() == logits.shape[-1] - 1, background_weight, 1.0)
    return float((w * nll).sum() / w.sum())


def test_synthetic_loss_weights_reproduce_the_miniatures_background_weight():
    from masqclip.config import setup_cfg

    cfg = setup_cfg(str(REPO / "config/models/synthetic/tuning.yaml"), ["MODEL.DEVICE", "cpu"])
    mf = cfg.MODEL.MASK_FORMER
    assert (mf.NO_OBJECT_WEIGHT, mf.CLASS_WEIGHT) == (0.02, 1.0)
    m = build_model(tiny_cfg("MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", mf.NO_OBJECT_WEIGHT,
                             "MODEL.MASK_FORMER.CLASS_WEIGHT", mf.CLASS_WEIGHT))
    preds, batch = _two_query_preds()
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        logits = 3 * torch.randn(1, 2, 4, generator=generator)
        old = _old_weighted_nll(logits, torch.tensor([[1, 3]]), background_weight=0.02)
        assert m.losses(logits, preds, batch).item() == pytest.approx(old, rel=1e-6)


def test_removed_background_weight_key_names_its_replacement():
    from masqclip.config import ConfigError

    with pytest.raises(ConfigError, match="NO_OBJECT_WEIGHT"):
        tiny_cfg("MODEL.MASQ_CLIP.BACKGROUND_WEIGHT", 0.25)


def test_object_score_fusion(model):
    clip_logits = torch.tensor([[2.0, 0.0, 1.0, 0.5], [0.0, 3.0, 0.0, 4.0]])
    pred_logits = torch.tensor([[1.0, -1.0], [-2.0, 2.0]])
    p_obj = pred_logits.softmax(-1)[:, :1]
    expected = p_obj * clip_logits.softmax(-1)[:, :3]
    torch.testing.assert_close(model.class_probabilities(clip_logits, pred_logits), expected)
    m = copy.deepcopy(model)
    m.use_object_score = False
    torch.testing.assert_close(m.class_probabilities(clip_logits, pred_logits), clip_logits.softmax(-1)[:, :3])


def test_panoptic_keeps_a_query_whose_clip_argmax_is_background(model):
    # K = 3 (classes 0, 1 things; 2 stuff), background = column 3; object score ~1 for both queries.
    # q0 (left half): CLIP probabilities [0.45, 0.04, 0.01 | 0.50]: argmax background, but its
    #   fused score 0.45 passes the object-mask threshold 0.3 -> segment 1, class 0 (thing);
    # q1 (right half): [0.02, 0.03, 0.90 | 0.05] -> segment 2, class 2 (stuff).
    # Dropping q0 for its argmax (the old behaviour) left the left half void and gave q1 id 1.
    m = copy.deepcopy(model).eval()
    m.thing_ids = [0, 1]
    m.object_mask_threshold = m.overlap_threshold = 0.3
    m.semantic_on = m.instance_on = False
    probs = torch.tensor([[0.45, 0.04, 0.01, 0.50], [0.02, 0.03, 0.90, 0.05]])
    masks = torch.full((2, 16, 16), -10.0)
    masks[0, :, :8] = 10.0
    masks[1, :, 8:] = 10.0
    pred = {"pred_logits": torch.tensor([[10.0, -10.0], [10.0, -10.0]]), "pred_masks": masks,
            "image_size": (16, 16), "padded_size": (16, 16)}
    seg, info = m.classify_and_postprocess(probs.log()[None], [pred], [{"height": 16, "width": 16}])[0]["panoptic_seg"]
    assert [(s["id"], s["category_id"], s["isthing"]) for s in info] == [(1, 0, True), (2, 2, False)]
    assert info[0]["score"] == pytest.approx(0.45, rel=1e-5)
    expected = torch.ones(16, 16, dtype=torch.int32)
    expected[:, 8:] = 2
    assert torch.equal(seg, expected)


def test_new_query_projections_start_random_by_default_and_copy_on_request():
    from masqclip.config import setup_cfg

    for name in ("base-novel/masqclip_R50_bs4_10k_base48", "cross-dataset/masqclip_R50_bs4_10k"):
        assert setup_cfg(str(REPO / f"config/models/{name}.yaml"), []).MODEL.MASQ_CLIP.NEW_Q_INIT == "random"
    synthetic = setup_cfg(str(REPO / "config/models/synthetic/tuning.yaml"), [])
    assert synthetic.MODEL.MASQ_CLIP.NEW_Q_INIT == "copy"
    for init in ("random", "copy"):
        torch.manual_seed(0)
        m = build_model(tiny_cfg("MODEL.MASQ_CLIP.NEW_Q_INIT", init) if init == "copy" else tiny_cfg())
        width = m.masqclip.visual.class_embedding.shape[0]
        for block in m.masqclip.visual.transformer.resblocks:
            same = (torch.equal(block.attn.new_q_proj.weight, block.attn.in_proj_weight[:width])
                    and torch.equal(block.attn.new_q_proj.bias, block.attn.in_proj_bias[:width]))
            assert same == (init == "copy")
            if init == "random":  # nn.Linear's default: U(-1/sqrt(width), 1/sqrt(width)) for weight and bias
                bound = 1 / math.sqrt(width)
                assert block.attn.new_q_proj.weight.abs().max() <= bound
                assert block.attn.new_q_proj.bias.abs().max() <= bound
                assert block.attn.new_q_proj.bias.abs().max() > 0  # not zero-initialised


def test_inference_outputs_and_vocabulary_switch(model):
    m = copy.deepcopy(model).eval()
    m.thing_ids = [0, 2]
    batch = [{k: v for k, v in x.items() if k != "instances"} for x in _batch(1)]
    with torch.no_grad():
        out = m(batch)[0]
    assert out["sem_seg"].shape == (3, 96, 128)
    inst = out["instances"]  # top-k over 5 queries x 3 classes, then things only (panoptic model)
    assert inst.pred_masks.shape[1:] == (96, 128) and len(inst) == 5 * 2
    assert set(inst.pred_classes.tolist()) <= {0, 2}
    seg, info = out["panoptic_seg"]
    assert seg.shape == (96, 128)
    calls = []
    embed = m.text_embedder

    def counting(vocabulary):
        calls.append(list(vocabulary))
        return embed(vocabulary)

    m.__dict__["text_embedder"] = counting
    m.set_vocabulary("cat; dog; tree, trees; sky; sea", thing_ids=[0, 1])
    with torch.no_grad():
        out = m(batch)[0]
        m(batch)
    assert out["sem_seg"].shape == (5, 96, 128) and calls == [["cat", "dog", "tree, trees", "sky", "sea"]]
    assert all(int(c) in (0, 1) for c in out["instances"].pred_classes)


def test_frozen_baseline_has_nothing_to_train():
    torch.manual_seed(0)
    m = build_model(tiny_cfg("MODEL.MASQ_CLIP.TUNING", False))
    assert not any(p.requires_grad for p in m.parameters())
    assert m.masqclip.tuning is False


def test_logit_scale_zero_takes_the_clip_models_learned_scale():
    from masqclip.modeling.meta_arch.masq_tuning import resolve_logit_scale

    clip = torch.nn.Module()
    clip.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    assert resolve_logit_scale(100.0, clip) == 100.0
    assert resolve_logit_scale(0.0, clip) == pytest.approx(float(torch.tensor(2.0).exp()))
    with pytest.raises(ValueError, match="LOGIT_SCALE"):
        resolve_logit_scale(0.0, torch.nn.Module())
    torch.manual_seed(0)  # open_clip initialises logit_scale to log(1 / 0.07)
    assert build_model(tiny_cfg("MODEL.MASQ_CLIP.LOGIT_SCALE", 0.0)).logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_checkpoint_round_trip_and_mask_generator_loading(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pth", model, iteration=3)
    fresh = build_model(tiny_cfg())
    missing, unexpected, rest = load_checkpoint(fresh, path)
    assert missing == [] and unexpected == [] and rest["iteration"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    teacher = build_model(tiny_cfg("MODEL.META_ARCHITECTURE", "MaskFormer", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1))
    save_checkpoint(tmp_path / "t.pth", teacher)
    fresh.load_mask_generator(str(tmp_path / "t.pth"))
    for k, v in teacher.state_dict().items():
        if k.startswith(("backbone.", "sem_seg_head.")):
            assert torch.equal(fresh.state_dict()[k], v), k


def _official_block(shared_dir, header_start: str) -> dict[str, tuple[tuple[int, ...], str]]:
    block, inside = {}, False
    for line in (shared_dir / "official_state_dict_keys.txt").read_text().splitlines():
        if line.startswith("##"):
            inside = line.startswith(header_start)
            continue
        if inside and line and not line.startswith("#"):
            name, shape, dtype = line.split()
            block[name] = (tuple(int(s) for s in shape.split("x")), dtype)
    return block


@pytest.mark.slow
def test_official_cross_dataset_names_and_shapes(shared_dir):
    official = _official_block(shared_dir, "## MasQ-Tuning, cross-dataset")
    assert len(official) == 903
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.META_ARCHITECTURE", "MasQTuning",
                         "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 133, "MODEL.MASQ_CLIP.MODEL_NAME", ["ViT-L/14@336px"],
                         "MODEL.MASQ_CLIP.PRETRAINED", ""])
    state = build_model(cfg).state_dict()
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()}
    assert sorted(set(ours) - set(official)) == [] and sorted(set(official) - set(ours)) == []
    assert ours == official


def test_dataset_vocabulary_from_metadata(model):
    from masqclip.data.catalog import MetadataCatalog

    name = "_masq_tuning_test_vocabulary"
    MetadataCatalog.get(name).set(stuff_classes=["cat", "dog, puppy", "grass"], thing_classes=["cat", "dog, puppy"],
                                  thing_dataset_id_to_contiguous_id={1: 0, 2: 1})
    try:
        m = copy.copy(model)  # shallow: only attributes are reassigned below
        m.set_dataset_vocabulary(name)  # the config's VOCABULARY is fixed: kept
        assert m.test_vocabulary == ["red disc", "blue box, box", "grass"]
        m.fixed_vocabulary = False
        m.set_dataset_vocabulary(name)
        assert m.test_vocabulary == ["cat", "dog, puppy", "grass"] and m.thing_ids == [0, 1]
    finally:
        MetadataCatalog.remove(name)
