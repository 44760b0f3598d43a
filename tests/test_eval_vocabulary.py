"""Evaluating an open-vocabulary model on several test sets classifies each with its own classes."""
from __future__ import annotations

from masqclip.data import MetadataCatalog
from masqclip.engine.defaults import evaluate_datasets
from masqclip.modeling import build_model
from test_masq_tuning import tiny_cfg

SETS = ["synthetic_instance_val_base", "synthetic_cross_sem_seg_val"]


def test_each_test_set_is_classified_with_its_own_vocabulary(tiny_world, monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tiny_world))
    cfg = tiny_cfg("MODEL.MASQ_CLIP.VOCABULARY", [], "DATASETS.TEST", (SETS[0],),
                   "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128)
    assert not cfg.MODEL.MASQ_CLIP.VOCABULARY  # the datasets decide, not the config
    model = build_model(cfg)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(m.test_vocabulary)))
    results = evaluate_datasets(cfg, model, SETS, str(tmp_path))

    assert set(results) == set(SETS)
    first, second = (tuple(MetadataCatalog.get(n).stuff_classes) for n in SETS)
    assert first != second  # world B has other stuff classes
    switch = seen.index(second)  # images of the first set, then all of the second
    assert switch > 0 and set(seen[:switch]) == {first} and set(seen[switch:]) == {second}
