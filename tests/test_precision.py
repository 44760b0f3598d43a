"""Mixed precision: which dtype each device gets, fp32 losses under autocast, bf16 training on CPU.

The bf16 training test runs on any CPU (bf16 autocast is emulated where the CPU lacks AMX, only
slower); ``build_trainer`` picks bf16 by itself only where the CPU has AMX (checked both ways).
"""
from __future__ import annotations

import math

import pytest
import torch

from engine_toys import toy_cfg
from model_toys import blob_image, train_losses
from masqclip.config import setup_cfg
from masqclip.engine.defaults import build_trainer
from masqclip.engine.trainer import AMPTrainer, SimpleTrainer
from masqclip.modeling import build_model
from masqclip.utils.precision import amp_from_config, cpu_native_bf16, full_precision, resolve_amp

SYNTHETIC = "config/models/synthetic/teacher.yaml"
# bf16 keeps 8 bits of mantissa (~0.4% per rounding); over a few Mask2Former steps the losses of the
# bf16 and fp32 runs of the same weights and data stay within 3% of each other (measured: < 1%).
BF16_LOSS_RTOL = 0.03


def test_resolve_amp_per_device():
    off = resolve_amp(False, "auto", "cuda")
    assert off.dtype is None and not off.notice and off.name == "fp32"
    gpu = resolve_amp(True, "auto", "cuda", gpu_bf16=True)
    assert (gpu.dtype, gpu.grad_scaler, gpu.notice) == (torch.bfloat16, False, "")
    old_gpu = resolve_amp(True, "auto", "cuda", gpu_bf16=False)
    assert (old_gpu.dtype, old_gpu.grad_scaler, old_gpu.notice) == (torch.float16, True, "")
    fp16 = resolve_amp(True, "fp16", "cuda", gpu_bf16=True)
    assert (fp16.dtype, fp16.grad_scaler) == (torch.float16, True)
    asked_bf16 = resolve_amp(True, "bf16", "cuda", gpu_bf16=False)
    assert asked_bf16.dtype == torch.float16 and "no bf16" in asked_bf16.notice
    amx = resolve_amp(True, "auto", "cpu", cpu_bf16=True)
    assert (amx.dtype, amx.grad_scaler, amx.device_type, amx.notice) == (torch.bfloat16, False, "cpu", "")
    no_amx = resolve_amp(True, "auto", "cpu", cpu_bf16=False)
    assert no_amx.dtype is None and no_amx.notice == \
        "SOLVER.AMP: this CPU has no native bf16 matrix units (AMX); running in fp32"
    assert resolve_amp(True, "fp16", "cpu", cpu_bf16=True).dtype == torch.bfloat16  # never fp16 on CPU
    assert resolve_amp(True, "bfloat16", "cpu", cpu_bf16=True).dtype == torch.bfloat16  # old spelling
    with pytest.raises(ValueError, match=r"SOLVER.AMP.PRECISION: 'fp8' is not one of auto, fp16, bf16"):
        resolve_amp(True, "fp8", "cpu")


def test_inference_switch_is_separate_and_inherits_the_precision():
    cfg = toy_cfg("/tmp/unused", **{"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": "bf16"})
    assert not amp_from_config(cfg, "cpu", inference=True).enabled  # TEST.AMP is off by default
    cfg.TEST.AMP.ENABLED = True
    inference = amp_from_config(cfg, "cpu", inference=True)
    assert inference.enabled == cpu_native_bf16()
    assert inference.notice.startswith("TEST.AMP") or inference.dtype == torch.bfloat16


def test_build_trainer_takes_bf16_exactly_where_the_cpu_has_amx(tmp_path, caplog):
    flags = open("/proc/cpuinfo").read().split() if __import__("os").path.exists("/proc/cpuinfo") else []
    if flags:
        assert cpu_native_bf16() == ("amx_bf16" in flags)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = toy_cfg(tmp_path, **{"SOLVER.AMP.ENABLED": True})
    with caplog.at_level("INFO", logger="masqclip"):
        trainer, scaler = build_trainer(cfg, model=model, data_loader=(), optimizer=opt, device=torch.device("cpu"))
    assert scaler is None
    if cpu_native_bf16():
        assert type(trainer) is AMPTrainer and trainer.dtype == torch.bfloat16
    else:
        assert type(trainer) is SimpleTrainer
        assert "no native bf16 matrix units (AMX); running in fp32" in caplog.text
    trainer, _ = build_trainer(toy_cfg(tmp_path), model=model, data_loader=(), optimizer=opt,
                               device=torch.device("cpu"))
    assert type(trainer) is SimpleTrainer  # AMP off by default


@pytest.fixture(scope="module")
def teacher(repo_dir):
    torch.manual_seed(0)
    return build_model(setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu"])).train()


def test_matcher_and_criterion_ignore_autocast(teacher):
    """Under bf16 autocast the matching and the losses are computed exactly as outside it (same
    inputs, same point samples): they run in fp32 whatever the surrounding region does."""
    batch = [blob_image(seed=s) for s in range(2)]
    images, _ = teacher.preprocess_images(batch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = teacher.sem_seg_head(teacher.backbone(images), aux_masks=True)
    assert outputs["pred_masks"].dtype == torch.bfloat16  # the head itself did run in bf16
    targets = teacher.prepare_targets(batch, tuple(images.shape[-2:]))
    torch.manual_seed(3)
    plain = teacher.criterion(outputs, targets)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = teacher.criterion(outputs, targets)
        indices = teacher.criterion.matcher(outputs, [{**t, "masks": t["masks"].float()} for t in targets])
    assert set(auto) == set(plain)
    for key in plain:
        assert auto[key].dtype == torch.float32, key
        assert torch.equal(auto[key], plain[key]), key
    assert all(len(src) == 2 for src, _ in indices)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
        with full_precision("cpu"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_clip_logits_and_loss_stay_fp32_under_autocast():
    from test_masq_tuning import _batch, tiny_cfg

    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    batch = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds = model.predict_queries(batch)
        logits = model.clip_logits(batch, preds, model.train_vocabulary)
        loss = model.losses(logits, preds, batch)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bf16_training_steps_match_fp32(repo_dir):
    """Three Mask2Former training steps (the synthetic teacher) in bf16 autocast on CPU: every loss
    finite and within BF16_LOSS_RTOL of the fp32 run from the same weights and data."""
    def _train_losses(trainer_cls, **kwargs):
        torch.manual_seed(0)
        model = build_model(setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu"])).train()
        return train_losses(model, trainer_cls, 3, **kwargs)

    fp32 = _train_losses(SimpleTrainer)
    bf16 = _train_losses(AMPTrainer, dtype=torch.bfloat16, device_type="cpu")
    print("fp32 losses", fp32, "bf16 losses", bf16)
    assert len(bf16) == len(fp32) == 3
    assert all(math.isfinite(v) for v in bf16)
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= BF16_LOSS_RTOL * abs(a), (fp32, bf16)
