"""`masqclip check-data`, preparation manifests, and the official pixels of ADE20K-847 and layout of
Pascal Context, on the miniature raw releases of fixtures_raw.py."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fixtures_raw import make_ade20k, make_ade20k_full, make_coco, make_pascal_context
from masqclip.cli import main as cli
from masqclip.data.prepare._cvresize import resize_bilinear_u8, resize_nearest


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return tmp_path


def opencv_style_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Independent float reference: half-pixel centres, borders clamped, two taps, no antialiasing."""
    src = image.astype(np.float64)
    h, w = src.shape[:2]
    out = np.zeros((height, width) + src.shape[2:])
    for y in range(height):
        fy = (y + 0.5) * h / height - 0.5
        y0 = min(max(int(np.floor(fy)), 0), h - 1)
        ay = 0.0 if fy < 0 or y0 >= h - 1 else fy - y0
        y1 = min(y0 + 1, h - 1)
        for x in range(width):
            fx = (x + 0.5) * w / width - 0.5
            x0 = min(max(int(np.floor(fx)), 0), w - 1)
            ax = 0.0 if fx < 0 or x0 >= w - 1 else fx - x0
            x1 = min(x0 + 1, w - 1)
            top = src[y0, x0] * (1 - ax) + src[y0, x1] * ax
            bottom = src[y1, x0] * (1 - ax) + src[y1, x1] * ax
            out[y, x] = top * (1 - ay) + bottom * ay
    return np.floor(out + 0.5).astype(np.uint8)


def test_opencv_style_resize_known_answers():
    rng = np.random.default_rng(0)
    # halving: every output pixel is the 2x2 block's mean, rounded half up
    img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    blocks = img.reshape(3, 2, 4, 2, 3).astype(np.int64).sum(axis=(1, 3))
    assert (resize_bilinear_u8(img, 3, 4) == (blocks + 2) // 4).all()
    # other shrink factors: the independent float reference, up to one grey level (OpenCV's 11-bit
    # fixed-point weights and truncating vertical pass round some values down)
    for (h, w), (H, W) in (((40, 60), (20, 30)), ((37, 53), (19, 29)), ((50, 31), (33, 20))):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours, ref = resize_bilinear_u8(img, H, W).astype(int), opencv_style_bilinear(img, H, W).astype(int)
        assert np.abs(ours - ref).max() <= 1 and (ours == ref).mean() > 0.8, (h, w)
    # nearest: source index floor(x * src / dst), no half-pixel shift
    lab = np.arange(7 * 9).reshape(7, 9)
    assert (resize_nearest(lab, 3, 4) == lab[[0, 2, 4]][:, [0, 2, 4, 6]]).all()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")  # PIL's default quality (75), as the official script
    return buf.getvalue()


def test_ade20k_847_writes_the_official_pixels(root):
    expected = make_ade20k_full(root)
    assert cli(["prepare", "ade20k-847", "--max-short-side", "20"]) == 0
    full = root / "ADE20K_2021_17_01"
    src_big = full / "images/ADE/validation/b/ADE_val_00000002.jpg"  # 40 x 60: resized to 20 x 30
    src_small = full / "images/ADE/validation/a/ADE_val_00000001.jpg"  # 16 x 20: not resized
    out_big = full / "images_detectron2/validation/ADE_val_00000002.jpg"
    out_small = full / "images_detectron2/validation/ADE_val_00000001.jpg"
    with Image.open(src_big) as im:
        original = np.asarray(im)
    resized = resize_bilinear_u8(original, 20, 30)
    assert np.abs(resized.astype(int) - opencv_style_bilinear(original, 20, 30).astype(int)).max() <= 1
    assert out_big.read_bytes() == _jpeg_bytes(resized)
    with Image.open(src_small) as im:
        small = np.asarray(im)
    assert out_small.read_bytes() == _jpeg_bytes(small) != src_small.read_bytes()  # re-encoded at quality 75
    # labels: nearest on the class map, then the official table's labels
    with Image.open(full / "annotations_detectron2/validation/ADE_val_00000002.tif") as im:
        label = np.asarray(im).astype(np.int64)
    classes = expected["class_maps"]["ADE_val_00000002"]
    rows, cols = np.arange(20) * 2, np.arange(30) * 2  # floor(x * 40 / 20)
    lut = expected["official_labels"]
    assert (label == np.vectorize(lambda v: lut.get(int(v), 65535))(classes[rows][:, cols])).all()
    # keeping the original images departs from the official data, and says so
    assert cli(["prepare", "ade20k-847", "--max-short-side", "20", "--keep-original-images"]) == 0
    assert out_small.read_bytes() == src_small.read_bytes() and out_big.read_bytes() == _jpeg_bytes(resized)


def test_pascal_context_matches_the_official_loader_layout(root):
    expected = make_pascal_context(root)
    assert cli(["prepare", "pascal-context-59"]) == 0 and cli(["prepare", "pascal-context-459"]) == 0
    base = root / "pascal_context_full"
    # the official loader strips the last character of every line of val.txt
    with open(base / "val.txt") as fh:
        ids = [line[:-1] for line in fh]
    assert ids == expected["ids"]
    for i in ids:
        assert (base / "images" / f"{i}.jpg").is_file()
        with Image.open(base / "labels_59" / f"{i}.png") as im:
            assert im.format == "PNG" and np.asarray(im).dtype == np.uint8
        with Image.open(base / "labels_459" / f"{i}.tif") as im:
            assert im.format == "TIFF" and np.asarray(im).dtype == np.uint16


def _check(capsys, *argv):
    rc = cli(["check-data", *argv])
    captured = capsys.readouterr()
    return rc, captured.err


PREPARE = {"coco-ovsplit": ["--phases", "val"], "coco-panoptic-semseg": ["--phases", "val"], "ade20k-150": [],
           "ade20k-847": ["--max-short-side", "20"], "pascal-context-59": [], "pascal-context-459": []}


def _prepare_all(root):
    make_coco(root)
    make_ade20k(root)
    make_ade20k_full(root)
    make_pascal_context(root)
    for name, extra in PREPARE.items():
        assert cli(["prepare", name, *extra]) == 0, name


def test_clean_fixtures_pass_and_full_expectations_name_the_counts(root, capsys):
    _prepare_all(root)
    for name in PREPARE:
        rc, err = _check(capsys, name, "--expect", "reduced")
        assert rc == 0, err
        manifest = json.loads((root / ".prepared" / f"{name}.json").read_text())
        assert manifest["preparation"] == name and manifest["masqclip_version"]
        assert len(manifest["preparation_code_sha256"]) == 64
        for summary in manifest["datasets"].values():
            assert summary["images"] > 0 and len(summary["class_table_sha256"]) == 64
    # the paper's datasets hold more images: one line per count
    rc, err = _check(capsys, "pascal-context-59")
    assert rc == 2 and "pascal_context_59_sem_seg_val: 2 images, expected 5105" in err
    rc, err = _check(capsys, "ade20k-150")
    assert rc == 2 and "ade20k_panoptic_val: 2 images, expected 2000" in err
    assert "ade20k_sem_seg_val: 2 images, expected 2000" in err
    rc, err = _check(capsys, "coco-ovsplit")
    assert rc == 2 and "coco/val2017 holds 3 images, expected 5000" in err
    manifest = json.loads((root / ".prepared/ade20k-847.json").read_text())
    assert manifest["datasets"]["ade20k_full_sem_seg_val"]["classes"] == 847


def test_corrupted_fixtures_are_refused_with_one_clear_line(root, capsys):
    _prepare_all(root)
    ade = root / "ADEChallengeData2016"
    pascal = root / "pascal_context_full"

    # a missing annotation: an image without its label file
    (ade / "annotations_detectron2/validation/ADE_val_00000002.png").unlink()
    rc, err = _check(capsys, "ade20k_sem_seg_val", "--expect", "reduced")
    assert rc == 2 and "ADE_val_00000002.jpg: image has no annotation" in err

    # a split file holding an image without any annotation of the split
    split = root / "coco/annotations/ov_split_48_17/instances_val2017_seen48.json"
    data = json.loads(split.read_text())
    data["images"].append({"id": 12, "file_name": "000000000012.jpg", "height": 32, "width": 40})
    split.write_text(json.dumps(data))
    rc, err = _check(capsys, "coco_instance_val_base48", "--expect", "reduced")
    assert rc == 2 and "000000000012.jpg: image has no annotation in the split file" in err

    # a panoptic id without a segment in the JSON
    pan_json = ade / "ade20k_panoptic_val.json"
    data = json.loads(pan_json.read_text())
    dropped = data["annotations"][0]["segments_info"].pop(0)
    pan_json.write_text(json.dumps(data))
    rc, err = _check(capsys, "ade20k_panoptic_val", "--expect", "reduced")
    assert rc == 2 and f"segment id {dropped['id']} has no segment in the JSON" in err

    # a segment of a category the dataset does not have
    data["annotations"][1]["segments_info"][0]["category_id"] = 999
    pan_json.write_text(json.dumps(data))
    rc, err = _check(capsys, "ade20k_panoptic_val", "--expect", "reduced")
    assert rc == 2 and "an annotation names category 999, not one of the dataset's" in err

    # a wrong class count
    cats = json.loads((pascal / "categories_59.json").read_text())
    (pascal / "categories_59.json").write_text(json.dumps(cats[:-1]))
    rc, err = _check(capsys, "pascal_context_59_sem_seg_val", "--expect", "reduced")
    assert rc == 2 and "58 classes, expected 59" in err
    (pascal / "categories_59.json").write_text(json.dumps(cats))

    # an out-of-range label value
    label_file = pascal / "labels_59/2008_000001.png"
    with Image.open(label_file) as im:
        label = np.asarray(im).copy()
    label[0, 1] = 70
    Image.fromarray(label).save(label_file)
    rc, err = _check(capsys, "pascal-context-59", "--expect", "reduced")
    assert rc == 2 and "2008_000001.png: label values [70] outside 0..58 (ignore 255)" in err
    assert "manifest records" not in err  # counts and class table unchanged since preparation
    rc2, err2 = _check(capsys, "pascal-context-59", "--expect", "reduced", "--workers", "2")
    assert (rc2, err2) == (rc, err)  # worker processes find the same problems

    # a class table that is not the official one, by accident: refused
    table_file = root / "ADE20K_2021_17_01/categories_847.json"
    table = json.loads(table_file.read_text())
    table[5]["name"] = "flooring"
    table_file.write_text(json.dumps(table))
    rc, err = _check(capsys, "ade20k-847", "--expect", "reduced")
    assert rc == 2 and "categories_847.json: class 976 has name 'flooring', expected 'floor, flooring'" in err
    # ... on purpose (--categories derived): the manifest says so, the check notes it and passes
    assert cli(["prepare", "ade20k-847", "--max-short-side", "20", "--categories", "derived"]) == 0
    manifest = json.loads((root / ".prepared/ade20k-847.json").read_text())
    assert manifest["departs_from_official"] == ["class table: derived from the index",
                                                 "images: shorter side limited to 20, not 512"]
    rc = cli(["check-data", "ade20k-847", "--expect", "reduced"])
    out = capsys.readouterr().out
    assert rc == 0 and "note: ade20k_full_sem_seg_val: " in out and "3 classes, expected 847" in out
    for line in err.strip().splitlines():
        assert line.startswith("masqclip check-data ")  # one line per problem, no traceback


def test_synthetic_world_meets_its_own_expectations(tiny_world, tmp_path, capsys, monkeypatch):
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    rc, err = _check(capsys, "synthetic", "--root", str(world))
    assert rc == 0, err
    manifest = json.loads((world / ".prepared/synthetic.json").read_text())
    assert manifest["datasets"]["synthetic_instance_val_all"]["images"] == 6
    assert manifest["args"]["num_train"] == 2
    # runs name the manifest of the data they use
    from masqclip.tracking import data_tags

    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))
    tags = data_tags(["synthetic_panoptic_train"])
    assert list(tags) == ["data.synthetic_panoptic_train"] and tags["data.synthetic_panoptic_train"].startswith(
        "synthetic sha256:")
    # an empty instance annotation
    ann_file = world / "synthetic/annotations/instances_val_all.json"
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["area"] = 0
    ann_file.write_text(json.dumps(data))
    rc, err = _check(capsys, "synthetic_instance_val_all", "--root", str(world))
    assert rc == 2 and "annotation 0 is empty (area 0)" in err
    # an image removed after preparation: the world's own count and the manifest both disagree
    (world / "synthetic/images/cross_val/000001.png").unlink()
    (world / "synthetic/semantic_cross_val/000001.png").unlink()
    rc, err = _check(capsys, "synthetic", "--root", str(world))
    assert rc == 2 and "synthetic_cross_sem_seg_val: 5 images, expected 6" in err
    assert "manifest records images 6" in err


def test_same_data_same_manifest_wherever_and_however_prepared(tmp_path):
    args = ["--num-train", "2", "--num-val", "2", "--crops-train", "1", "--crops-val", "1", "--image-size", "64"]
    assert cli(["prepare", "synthetic", "--output", str(tmp_path / "a"), *args]) == 0
    assert cli(["prepare", "synthetic", "--output", str(tmp_path / "b"), *args, "--workers", "2"]) == 0
    first, second = ((tmp_path / r / ".prepared/synthetic.json").read_bytes() for r in ("a", "b"))
    assert first == second  # no path, time or worker count in it
    assert cli(["prepare", "synthetic", "--output", str(tmp_path / "c"), *args, "--seed", "5"]) == 0
    assert (tmp_path / "c/.prepared/synthetic.json").read_bytes() != first  # other data, other manifest
