"""``masqclip predict`` infers at the evaluation size (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST) and maps
the segments back to the photo: right-sized outputs, and bounded memory on a 24-megapixel photo."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from masqclip.checkpoint import save_checkpoint
from masqclip.commands.predict import extract_segments, full_size_mask, inference_input
from masqclip.config import setup_cfg
from masqclip.modeling import build_model

from test_cli_train_eval import TINY
from test_safe_loading import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_PEAK_BYTES = 3 * 1024 ** 3


def _photo(path, height: int, width: int, seed: int = 0):
    """A blocky random photo (compresses well, so large ones stay small on disk)."""
    blocks = np.random.default_rng(seed).integers(0, 255, (max(height // 50, 2), max(width // 50, 2), 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((width, height), Image.NEAREST).save(path)
    return path


def test_predict_infers_at_test_size_and_maps_segments_back(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "TRACKING": {"ENABLED": False}}))
    cfg = setup_cfg(str(config))
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = save_checkpoint(tmp_path / "model.pth", model)
    photo = _photo(tmp_path / "photo.png", 400, 600)
    out = tmp_path / "seg.png"
    proc = run_cli("predict", "--config-file", config, "--weights", weights, "--image", photo, "--output", out,
                   "--min-score", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    drawn_w, drawn_h = Image.open(out).size  # the photo's size, and the legend to its right
    assert (result["height"], result["width"]) == (400, 600) and drawn_h == 400 and drawn_w > 600
    # the same model in process, at the evaluation size (shortest edge 64 -> 64 x 96)
    image = np.asarray(Image.open(photo).convert("RGB"))
    x = inference_input(cfg, image)
    assert tuple(x["image"].shape) == (3, 64, 96)
    model.eval()
    with torch.no_grad():
        output = model([x])[0]
    _, segments = extract_segments(output, ["object"], 0.0)
    assert len(result["segments"]) == len(segments) > 0
    by_score = sorted(segments, key=lambda s: -s["score"])
    for record, seg in zip(result["segments"], by_score):
        decoded = mask_utils.decode(record["segmentation"]).astype(bool)
        assert decoded.shape == (400, 600)
        assert np.array_equal(decoded, full_size_mask(seg["mask"], (400, 600)))
    # nearest mapping: each inference pixel becomes a block of the photo
    small = torch.zeros(2, 3, dtype=torch.bool)
    small[0, 1] = small[1, 2] = True
    big = full_size_mask(small, (4, 6))
    assert big.tolist() == [[False, False, True, True, False, False]] * 2 + [[False] * 4 + [True] * 2] * 2


@pytest.mark.slow
def test_predict_on_a_24_megapixel_photo_stays_under_3_gb(tmp_path):
    cfg = setup_cfg(os.path.join(REPO, "config/models/synthetic/teacher.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "teacher.pth", build_model(cfg))
    photo = _photo(tmp_path / "photo.png", 4000, 6000)
    out = tmp_path / "seg.png"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    # VmHWM is this process image's own peak; ru_maxrss would also count the RSS pytest had when it forked.
    script = ("import re, sys\nfrom masqclip.cli import main\nrc = main(sys.argv[1:])\n"
              "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
              "print('PEAK_KB', hwm, file=sys.stderr)\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", script, "predict", "--config-file",
                           os.path.join(REPO, "config/models/synthetic/teacher.yaml"), "--weights", str(weights),
                           "--image", str(photo), "--output", str(out), "--min-score", "0", "MODEL.DEVICE", "cpu",
                           "TRACKING.ENABLED", "False"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0]) * 1024
    assert peak < MAX_PEAK_BYTES, f"peak memory {peak / 1024 ** 3:.2f} GB"
    result = json.loads(out.with_suffix(".json").read_text())
    assert (result["height"], result["width"]) == (4000, 6000) and result["segments"]
    assert mask_utils.decode(result["segments"][0]["segmentation"]).shape == (4000, 6000)
    drawn_w, drawn_h = Image.open(out).size
    assert drawn_h == 4000 and drawn_w > 6000
