"""The detectron2-style config system: inheritance, overrides, type checks, safety."""
import textwrap

import pytest

from masqclip.config import ConfigError, get_cfg, setup_cfg


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_base_inheritance_is_relative_and_child_wins(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "Base.yaml", """
        MODEL:
          MASK_FORMER: {HIDDEN_DIM: 64, NUM_OBJECT_QUERIES: 16}
        SOLVER: {BASE_LR: 0.5}
    """)
    child = write(tmp_path / "sub" / "child.yaml", """
        _BASE_: ../Base.yaml
        MODEL:
          MASK_FORMER: {HIDDEN_DIM: 128}
        DATASETS:
          TRAIN: ("coco_instance_train_base48",)
    """)
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert cfg.MODEL.MASK_FORMER.HIDDEN_DIM == 128  # child overrides base
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 16  # inherited
    assert cfg.SOLVER.BASE_LR == 0.5
    assert cfg.DATASETS.TRAIN == ("coco_instance_train_base48",)  # d2's tuple-as-string form


def test_unknown_key_names_key_and_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "MODEL:\n  MASK_FORMER:\n    HIDEN_DIM: 3\n")
    with pytest.raises(ConfigError, match=r"MODEL\.MASK_FORMER\.HIDEN_DIM.*bad\.yaml"):
        get_cfg().merge_from_file(bad)


def test_wrong_type_is_refused(tmp_path):
    bad = write(tmp_path / "bad.yaml", "SOLVER:\n  MAX_ITER: many\n")
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER.*expected int"):
        get_cfg().merge_from_file(bad)


def test_eval_tags_are_refused_with_a_clear_message(tmp_path):
    bad = write(tmp_path / "official.yaml", """
        INPUT:
          MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 640) for x in range(5, 21)]"]
    """)
    with pytest.raises(ConfigError, match="run code"):
        get_cfg().merge_from_file(bad)


def test_command_line_overrides_parse_literals_and_check_keys():
    cfg = setup_cfg(None, ["SOLVER.BASE_LR", "0.001", "SOLVER.STEPS", "(10, 20)", "MODEL.WEIGHTS", "a.pth"])
    assert cfg.SOLVER.BASE_LR == 0.001 and cfg.SOLVER.STEPS == (10, 20) and cfg.MODEL.WEIGHTS == "a.pth"
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.SEED = 3
    with pytest.raises(ConfigError, match="SOLVER.NOPE"):
        setup_cfg(None, ["SOLVER.NOPE", "1"])
    with pytest.raises(ConfigError, match="odd"):
        setup_cfg(None, ["SOLVER.BASE_LR"])


def test_dump_round_trips(tmp_path):
    cfg = setup_cfg(None, ["MODEL.MASK_FORMER.HIDDEN_DIM", "96", "DATASETS.TEST", "('a', 'b')"])
    path = tmp_path / "dump.yaml"
    path.write_text(cfg.dump())
    again = setup_cfg(str(path))
    assert again.flatten() == cfg.flatten()


def test_clip_model_name_accepts_official_list_and_plain_string(tmp_path):
    f = write(tmp_path / "m.yaml", 'MODEL:\n  MASQ_CLIP:\n    MODEL_NAME: ["ViT-L/14@336px"]\n')
    cfg = get_cfg()
    cfg.merge_from_file(f)
    assert cfg.MODEL.MASQ_CLIP.MODEL_NAME == ["ViT-L/14@336px"]
    cfg.merge_from_list(["MODEL.MASQ_CLIP.MODEL_NAME", "ViT-B-16"])
    assert cfg.MODEL.MASQ_CLIP.MODEL_NAME == ["ViT-B-16"]


def test_cli_config_command_reports_bad_key(tmp_path, capsys):
    from masqclip.cli import main

    bad = write(tmp_path / "bad.yaml", "SOLVER:\n  NOT_A_KEY: 1\n")
    assert main(["config", "--config-file", str(bad)]) == 2
    assert "SOLVER.NOT_A_KEY" in capsys.readouterr().err
    assert main(["config", "SOLVER.MAX_ITER", "7"]) == 0
    assert "MAX_ITER: 7" in capsys.readouterr().out
