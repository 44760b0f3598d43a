"""The train / eval / predict commands: help texts, predict's overlay and JSON, and an end-to-end run
of a tiny teacher and student on the generated synthetic world."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from masqclip.cli import build_parser
from masqclip.cli import main as cli
from masqclip.commands.eval import output_paths
from masqclip.commands.predict import MIN_OVERLAY_SIDE, draw_overlay, extract_segments, segments_to_json
from masqclip.structures import Instances

TINY = {"MODEL": {"DEVICE": "cpu", "RESNETS": {"DEPTH": 18, "RES2_OUT_CHANNELS": 64, "NORM": "BN"},
                  "SEM_SEG_HEAD": {"CONVS_DIM": 32, "MASK_DIM": 32, "TRANSFORMER_ENC_LAYERS": 1,
                                   "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 4,
                                   "DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD": 64},
                  "MASK_FORMER": {"HIDDEN_DIM": 32, "NUM_OBJECT_QUERIES": 4, "NHEADS": 4, "DIM_FEEDFORWARD": 64,
                                  "DEC_LAYERS": 2, "TRAIN_NUM_POINTS": 64}},
        "INPUT": {"IMAGE_SIZE": 64, "MIN_SIZE_TEST": 64, "MAX_SIZE_TEST": 128},
        "DATASETS": {"TRAIN": ["synthetic_instance_train_base"], "TEST": ["synthetic_instance_val_all"]},
        "DATALOADER": {"NUM_WORKERS": 0},
        "SOLVER": {"MAX_ITER": 2, "IMS_PER_BATCH": 2, "CHECKPOINT_PERIOD": 1, "LOG_PERIOD": 1, "STEPS": [1],
                   "WARMUP_ITERS": 1, "BASE_LR": 1e-3},
        "SEED": 3}


@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_help_describes_each_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and "--config-file" in text
    assert {"train": "--resume", "eval": "--dataset", "predict": "--vocab"}[command] in text


def test_eval_output_paths():
    assert output_paths("m.json", ["a"]) == {"a": "m.json"}
    assert output_paths("out/m.json", ["a", "b"]) == {"a": "out/m.a.json", "b": "out/m.b.json"}


def test_predict_overlay_and_json_are_sensible(tmp_path):
    h, w = 40, 60
    image = np.full((h, w, 3), 200, np.uint8)
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, 5:15, 5:20] = True
    masks[1, 20:35, 30:55] = True
    masks[2, 0:2, 0:2] = True  # scored below the threshold
    inst = Instances((h, w), pred_masks=masks, pred_classes=torch.tensor([1, 0, 1]),
                     scores=torch.tensor([0.9, 0.7, 0.2]))
    source, segments = extract_segments({"instances": inst}, ["cat, kitty", "dog"], 0.5)
    assert source == "instances" and [s["class"] for s in segments] == ["dog", "cat"]
    records = segments_to_json(segments)
    assert [r["score"] for r in records] == [0.9, 0.7] and records[0]["area"] == 150
    assert records[1]["bbox"] == [30.0, 20.0, 25.0, 15.0]
    for rec, mask in zip(records, masks[:2]):
        assert np.array_equal(mask_utils.decode(rec["segmentation"]).astype(bool), mask.numpy())
    json.dumps(records)
    path = tmp_path / "overlay.png"
    draw_overlay(image, segments, str(path))
    drawn = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # Enlarged x10 (the short side reaches MIN_OVERLAY_SIDE, 384), a legend to the right.
    assert drawn.shape[0] == 400 and drawn.shape[1] > 600
    drawn = drawn[:, :600]
    assert np.abs(drawn[0:20, 0:20] - 200).max() <= 2  # not selected: untouched
    assert np.abs(drawn[50, 100] - 200).max() > 20 and np.abs(drawn[349, 549] - 200).max() > 20  # outlined
    assert np.abs(drawn[60:80, 60:80] - 200).max() <= 2  # inside a mask: the image's own colour
    assert np.abs(drawn[50, 100] - drawn[349, 549]).max() > 10  # one colour per class
    seg = torch.zeros(h, w, dtype=torch.int32)
    seg[masks[1]] = 7
    source, segments = extract_segments({"panoptic_seg": (seg, [{"id": 7, "category_id": 0, "isthing": True,
                                                                   "score": 0.8}])}, ["cat"], 0.5)
    assert source == "panoptic_seg" and torch.equal(segments[0]["mask"], masks[1])
    probs = torch.zeros(2, h, w)
    probs[1] = 1.0
    probs[0, masks[0]] = 2.0
    source, segments = extract_segments({"sem_seg": probs}, ["a", "b"], 0.5)
    assert {s["class"]: int(s["mask"].sum()) for s in segments} == {"a": 150, "b": h * w - 150}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    assert cli(["prepare", "synthetic", "--output", str(root), "--num-train", "4", "--num-val", "2",
                "--image-size", "64", "--crops-train", "1", "--crops-val", "1"]) == 0
    return root


@pytest.mark.slow
def test_teacher_student_eval_predict_end_to_end(world, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    teacher = tmp_path / "teacher"
    assert cli(["train", "--config-file", str(config), "--tag", "setting=e2e", "--tag", "round=0",
                "OUTPUT_DIR", str(teacher)]) == 0
    for name in ("model_final.pth", "config.yaml", "metrics.jsonl", "train_metrics.json", "model_0000000.pth"):
        assert (teacher / name).is_file(), name
    rows = [json.loads(x) for x in (teacher / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1] and all(np.isfinite(r["total_loss"]) for r in rows)
    assert {"loss_ce", "loss_mask", "loss_dice"} <= rows[0].keys()

    student = tmp_path / "student"
    assert cli(["train", "--config-file", str(config), "--resume", "--tag", "round=1", "OUTPUT_DIR", str(student),
                "MODEL.META_ARCHITECTURE", "MaskDistill", "MODEL.WEIGHTS", str(teacher / "model_final.pth"),
                "SOLVER.MAX_ITER", "1"]) == 0
    rows = [json.loads(x) for x in (student / "metrics.jsonl").read_text().splitlines()]
    assert "distill/num_extra" in rows[0] and len(rows) == 1

    metrics = tmp_path / "metrics" / "val_all.json"
    assert cli(["eval", "--config-file", str(config), "--dataset", "synthetic_instance_val_all", "--output",
                str(metrics), "OUTPUT_DIR", str(tmp_path / "eval"), "MODEL.WEIGHTS",
                str(student / "model_final.pth")]) == 0
    record = json.loads(metrics.read_text())
    assert record["dataset"] == "synthetic_instance_val_all" and record["weights"].endswith("model_final.pth")
    manifest_hash = hashlib.sha256((world / ".prepared/synthetic.json").read_bytes()).hexdigest()[:16]
    assert record["data"] == f"synthetic sha256:{manifest_hash}"  # the exact data it was scored on
    assert "proposals" in record["results"] and all(0 <= v <= 100 for v in record["results"]["proposals"].values())

    image = sorted((world / "synthetic").rglob("*.png"))[0]
    out = tmp_path / "pred" / "overlay.png"
    assert cli(["predict", "--config-file", str(config), "--weights", str(teacher / "model_final.pth"),
                "--image", str(image), "--output", str(out), "--min-score", "0"]) == 0
    pred = json.loads(out.with_suffix(".json").read_text())
    width, height = Image.open(image).size
    factor = -(-MIN_OVERLAY_SIDE // min(width, height))  # small images are drawn enlarged
    drawn_w, drawn_h = Image.open(out).size
    assert drawn_h == height * factor and drawn_w > width * factor  # the legend sits to the right
    assert pred["source"] == "instances" and pred["segments"] and pred["segments"][0]["class"] == "object"

    # The checkpoint carries the config it was trained with: predict needs no --config-file.
    from masqclip.checkpoint.provenance import read_metadata

    assert yaml.safe_load(read_metadata(teacher / "model_final.pth")["cfg"])["OUTPUT_DIR"] == str(teacher)
    assert cli(["predict", "--weights", str(teacher / "model_final.pth"), "--image", str(image),
                "--output", str(tmp_path / "pred" / "alone.png"), "--min-score", "0"]) == 0

    # MasQ-Tuning model (tiny CLIP, random weights saved to a file) from the teacher's mask-generator
    # checkpoint, any vocabulary (no CLIP weights at all would be refused: a random text encoder)
    from masqclip.modeling.clip.factory import create_clip

    clip_file = tmp_path / "tiny_clip.pt"
    torch.save(create_clip(model_name="masqclip-tiny", pretrained="").state_dict(), clip_file)
    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "pred" / "vocab.png"
    assert cli(["predict", "--config-file", str(config), "--weights", str(teacher / "model_final.pth"),
                "--image", str(image), "--output", str(out), "--vocab", "red thing; blue thing, azure thing",
                "--min-score", "0", "MODEL.META_ARCHITECTURE", "MasQTuning", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "8",
                "MODEL.MASQ_CLIP.MODEL_NAME", "['masqclip-tiny']", "MODEL.MASQ_CLIP.PRETRAINED", str(clip_file),
                "MODEL.MASQ_CLIP.TRAIN_MASK_SIZE", "64"]) == 0
    pred = json.loads(out.with_suffix(".json").read_text())
    assert pred["classes"] == ["red thing", "blue thing, azure thing"]
    assert pred["segments"] and {s["class"] for s in pred["segments"]} <= {"red thing", "blue thing"}

    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["masqclip"])
    finally:
        mlflow.set_tracking_uri(None)
    jobs = sorted(zip(runs["tags.job"], runs["tags.stage"], runs["status"]))
    # eval's stage comes from the config's META_ARCHITECTURE (MaskFormer) unless --tag stage=... says otherwise
    assert jobs == [("eval", "teacher", "FINISHED"), ("train", "student", "FINISHED"),
                    ("train", "teacher", "FINISHED")]
    assert "proposals/AR_10" in runs.columns.str.replace("metrics.", "", regex=False)
    # every run names the preparation manifest of the data it read
    train_runs = runs[runs["tags.job"] == "train"]
    assert set(train_runs["tags.data.synthetic_instance_train_base"]) == {f"synthetic sha256:{manifest_hash}"}
    assert set(runs[runs["tags.job"] == "eval"]["tags.data.synthetic_instance_val_all"]) == {
        f"synthetic sha256:{manifest_hash}"}
