"""The dataset catalogs register the built-in names on first use: no side-effect import needed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from masqclip.data.catalog import DatasetCatalog, MetadataCatalog

# Run in a fresh interpreter: in this one some other test has long imported the registrations.
FRESH_BUILD = textwrap.dedent("""\
    import json, sys
    from masqclip.config import setup_cfg
    from masqclip.modeling import build_model

    assert "masqclip.data.datasets" not in sys.modules
    out = {}
    for name in ("teacher", "student", "tuning"):
        cfg = setup_cfg(f"config/models/synthetic/{name}.yaml",
                        ["MODEL.DEVICE", "cpu", "MODEL.MASQ_CLIP.PRETRAINED", ""])
        model = build_model(cfg)
        out[cfg.MODEL.META_ARCHITECTURE] = {
            "thing_ids": list(getattr(model, "thing_ids", [])),
            "train_vocabulary": getattr(model, "train_vocabulary", None),
            "test_vocabulary": getattr(model, "test_vocabulary", None)}
    print(json.dumps(out))
""")


def test_build_model_finds_dataset_vocabulary_without_importing_registrations(repo_dir):
    proc = subprocess.run([sys.executable, "-c", FRESH_BUILD], cwd=repo_dir, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(built) == {"MaskFormer", "MaskDistill", "MasQTuning"}
    tuning = built["MasQTuning"]
    assert len(tuning["train_vocabulary"]) == 8  # the synthetic world's base things
    assert len(tuning["test_vocabulary"]) == 12 and tuning["test_vocabulary"][:8] == tuning["train_vocabulary"]
    assert tuning["thing_ids"] == list(range(12))
    assert built["MaskFormer"]["thing_ids"] == built["MaskDistill"]["thing_ids"] == list(range(12))


def test_catalog_lists_builtin_names_in_a_fresh_interpreter():
    code = ("import sys; from masqclip.data.catalog import DatasetCatalog as D; "
            "names = D.list(); assert 'masqclip.data.datasets' in sys.modules; print(len(names), "
            "'coco_instance_val_novel17' in D, 'pascal_context_459_sem_seg_val' in names)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, novel, pc459 = proc.stdout.split()
    assert int(count) >= 13 and novel == pc459 == "True"


def test_a_builtin_name_cannot_be_registered_again():
    with pytest.raises(KeyError, match="already registered"):
        DatasetCatalog.register("coco_instance_val_novel17", lambda: [])
    assert MetadataCatalog.get("coco_instance_val_novel17").get("thing_classes")
