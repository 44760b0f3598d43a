"""The same models on a CUDA device: outputs equal the CPU's, and training runs under AMP.

Marked ``gpu``: they skip without CUDA (conftest.py), or fail under MASQCLIP_REQUIRE_GPU=1."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from masqclip.checkpoint.io import read_checkpoint
from masqclip.cli import main as cli
from masqclip.config import setup_cfg
from masqclip.modeling import build_model

pytestmark = pytest.mark.gpu

SYNTHETIC_TEACHER = "config/models/synthetic/teacher.yaml"
SYNTHETIC_TUNING = "config/models/synthetic/tuning.yaml"


@pytest.fixture
def exact_cuda_math():
    """cuDNN convolutions in full float32 (TF32 would differ from the CPU by ~1e-3)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _images(n=2, size=(64, 96), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (3, *size), generator=gen, dtype=torch.uint8).float(),
             "height": size[0], "width": size[1], "image_id": i} for i in range(n)]


def _on_both_devices(cfg_file, repo_dir, *opts):
    torch.manual_seed(0)
    cpu = build_model(setup_cfg(str(repo_dir / cfg_file), ["MODEL.DEVICE", "cpu", *opts])).eval()
    cuda = copy.deepcopy(cpu).to("cuda")
    return cpu, cuda


def test_teacher_queries_on_cuda_equal_cpu(repo_dir, exact_cuda_math):
    cpu, cuda = _on_both_devices(SYNTHETIC_TEACHER, repo_dir)
    batch = _images()
    with torch.no_grad():
        expected = cpu.predict_queries(batch)
        got = cuda.predict_queries(batch)
    for e, g in zip(expected, got):
        assert g["pred_logits"].device.type == "cuda"
        torch.testing.assert_close(g["pred_logits"].cpu(), e["pred_logits"], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(g["pred_masks"].cpu(), e["pred_masks"], rtol=1e-3, atol=1e-3)


def test_masq_tuning_inference_on_cuda_equals_cpu(repo_dir, exact_cuda_math, tmp_path, monkeypatch):
    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path))
    opts = ["MODEL.MASQ_CLIP.PRETRAINED", "", "MODEL.MASQ_CLIP.VOCABULARY", "['red disc', 'blue box, box', 'grass']",
            "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "True"]
    cpu, cuda = _on_both_devices(SYNTHETIC_TUNING, repo_dir, *opts)
    batch = _images(seed=1)
    with torch.no_grad():
        expected = cpu(batch)
        got = cuda(batch)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g["sem_seg"].cpu(), e["sem_seg"], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(g["instances"].scores.cpu(), e["instances"].scores, rtol=1e-3, atol=1e-3)


def test_training_on_cuda_with_amp_then_resume(tiny_world, repo_dir, tmp_path, monkeypatch):
    """`masqclip train` on the GPU with mixed precision: finite losses, and a strict --resume that
    continues from the checkpoint (optimizer, scheduler and any grad-scaler state included)."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tiny_world))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump({
        "_BASE_": str(repo_dir / SYNTHETIC_TEACHER),
        "MODEL": {"DEVICE": "cuda"}, "DATALOADER": {"NUM_WORKERS": 0},
        "SOLVER": {"MAX_ITER": 3, "IMS_PER_BATCH": 2, "CHECKPOINT_PERIOD": 2, "LOG_PERIOD": 1,
                   "AMP": {"ENABLED": True}},
        "SEED": 5}))
    out = tmp_path / "teacher"
    assert cli(["train", "--config-file", str(config), "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["total_loss"])) for r in rows)
    state = read_checkpoint(out / "model_final.pth")
    assert state["iteration"] == 1 and {"optimizer", "scheduler"} <= state.keys()
    assert cli(["train", "--config-file", str(config), "--resume", "OUTPUT_DIR", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["iteration"] == 2
