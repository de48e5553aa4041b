import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from micrometry.cli import run
from micrometry.io.coco import load_coco, mask_to_rle, rle_to_mask
from micrometry.particles.evaluate import evaluate

H, W = 64, 80


def box_mask(x, y, s=10):
    m = np.zeros((H, W), bool)
    m[y : y + s, x : x + s] = True
    return m


@pytest.fixture
def gt_file(tmp_path):
    """Two 10x10 squares in image 1; image 2 has one square and a crowd region."""
    anns = []
    for i, (image_id, x, y, crowd) in enumerate(
        [(1, 5, 5, 0), (1, 40, 30, 0), (2, 10, 10, 0), (2, 50, 40, 1)], 1
    ):
        anns.append(
            {
                "id": i,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": crowd,
                "segmentation": mask_to_rle(box_mask(x, y)),
                "bbox": [x, y, 10, 10],
                "area": 100,
            }
        )
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "particle"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def result(image_id, mask, score):
    rle = mask_to_rle(mask)
    bbox = [float(v) for v in mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()})]
    return {"image_id": image_id, "category_id": 1, "segmentation": rle, "bbox": bbox, "score": score}


def test_ground_truth_fed_back_scores_one(gt_file):
    gt = load_coco(gt_file)
    results = [result(a.image_id, rle_to_mask(a.rle), 1.0) for a in gt.all_annotations() if not a.iscrowd]
    m = evaluate(results, gt)
    for iou_type in ("segm", "bbox"):
        assert m[iou_type]["AP"] == pytest.approx(1.0)
        assert m[iou_type]["AP50"] == pytest.approx(1.0) and m[iou_type]["AR"] == pytest.approx(1.0)
        assert m[iou_type]["APm"] is None  # no medium objects: undefined, not 0
    for row in m["matching"]:
        assert (row["precision"], row["recall"], row["f1"], row["mean_matched_iou"]) == (1.0, 1.0, 1.0, 1.0)


def test_empty_results_score_zero(gt_file, tmp_path, capsys):
    (tmp_path / "empty.json").write_text("[]")
    assert run(["particles", "evaluate", str(tmp_path / "empty.json"), str(gt_file), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["segm"]["AP"] == 0.0 and m["bbox"]["AR"] == 0.0
    assert all(row["tp"] == 0 and row["fn"] == 3 and row["f1"] == 0.0 for row in m["matching"])


def test_hand_computed_case_and_agreement_with_pycocotools(gt_file):
    gt = load_coco(gt_file)
    results = [
        result(1, box_mask(60, 5), 0.95),  # false positive, highest score
        result(1, box_mask(5, 5), 0.9),  # exact
        result(1, box_mask(42, 30), 0.8),  # shifted 2 px: IoU 80 / 120 = 2/3
        result(2, box_mask(10, 10), 0.7),  # exact
        result(2, box_mask(50, 40), 0.99),  # on the crowd region: ignored
    ]
    m = evaluate(results, gt, max_dets=100)
    # Ranked (crowd match ignored): FP .95, TP .9, TP .8, TP .7 over 3 true objects.
    # IoU <= 2/3 (thresholds .50 .55 .60 .65): precision envelope 3/4 at every recall -> AP 3/4.
    # IoU > 2/3 (6 thresholds): FP .95, TP .9, FP .8, TP .7 -> precision 0, 1/2, 1/3, 1/2 at recall
    # 0, 1/3, 1/3, 2/3; envelope 1/2 for the recall points 0..0.66 (67 of 101), 0 beyond.
    expected = (4 * 0.75 + 6 * 0.5 * 67 / 101) / 10
    assert m["segm"]["AP"] == pytest.approx(expected, abs=1e-6)
    assert m["segm"]["AP50"] == pytest.approx(0.75)
    assert m["segm"]["AR"] == pytest.approx((4 * 1.0 + 6 * 2 / 3) / 10)
    at = {row["iou"]: row for row in m["matching"]}
    assert (at[0.5]["tp"], at[0.5]["fp"], at[0.5]["fn"]) == (3, 1, 0)
    assert at[0.5]["f1"] == pytest.approx(6 / 7)
    assert at[0.5]["mean_matched_iou"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert (at[0.7]["tp"], at[0.7]["fp"], at[0.7]["fn"]) == (2, 2, 1)

    # pycocotools' own summary (maxDets=100 headline) gives the same numbers
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt.to_dict()
        coco_gt.createIndex()
        dets = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert m["segm"]["AP"] == pytest.approx(ev.stats[0])
    assert m["segm"]["AP50"] == pytest.approx(ev.stats[1])
    assert m["segm"]["AP75"] == pytest.approx(ev.stats[2])
    assert m["segm"]["AR"] == pytest.approx(ev.stats[8])


def square_grid(tmp_path, n, per_row):
    """One image of ``n`` separate 8x8 squares, ``per_row`` a row: (truth file, perfect results)."""
    h, w = 10 * -(-n // per_row), 10 * per_row
    anns, results = [], []
    for i in range(n):
        y, x = 10 * (i // per_row), 10 * (i % per_row)
        m = np.zeros((h, w), bool)
        m[y : y + 8, x : x + 8] = True
        rle = mask_to_rle(m)
        anns.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": rle,
                "iscrowd": 0,
                "area": 64,
                "bbox": [x, y, 8, 8],
            }
        )
        results.append({"image_id": 1, "category_id": 1, "segmentation": rle, "score": 0.5 + i / 1000})
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x.png", "height": h, "width": w}],
                "annotations": anns,
                "categories": [{"id": 1, "name": "p"}],
            }
        )
    )
    return gt, results


def test_max_dets_above_100_counts_crowded_images(tmp_path):
    """150 objects in one image: maxDets=100 caps recall at 2/3, maxDets=300 finds them all."""
    gt, results = square_grid(tmp_path, 150, 30)
    ds = load_coco(gt)
    with pytest.warns(UserWarning, match="below the 150 true particles"):
        assert evaluate(results, ds, max_dets=100)["segm"]["AR"] == pytest.approx(100 / 150)
    assert evaluate(results, ds, max_dets=300)["segm"]["AP"] == pytest.approx(1.0)


def test_max_dets_follows_the_most_crowded_image(tmp_path, capsys):
    """400 particles in one image: the automatic maxDets (600) counts them all; 300 would cap recall at 3/4."""
    gt, results = square_grid(tmp_path, 400, 80)
    m = evaluate(results, load_coco(gt))
    assert m["max_dets"] == 600 and m["most_particles_per_image"] == 400
    assert m["segm"]["AP"] == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="capped"):
        assert evaluate(results, load_coco(gt), max_dets=300)["segm"]["AR"] == pytest.approx(300 / 400)
    capsys.readouterr()
    assert run(["particles", "evaluate", "--json", str(_write(tmp_path / "r.json", results)), str(gt)]) == 0
    assert json.loads(capsys.readouterr().out)["max_dets"] == 600


def test_cli_table_and_bad_inputs(gt_file, tmp_path, capsys):
    gt = load_coco(gt_file)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "results.json").write_text(json.dumps([result(1, box_mask(5, 5), 0.9)]))
    assert run(["particles", "evaluate", str(pred), str(gt_file)]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "mean matched IoU" in out and "segm" in out
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 99, "score": 1, "bbox": [0, 0, 1, 1]}]))
    assert run(["particles", "evaluate", str(tmp_path / "bad.json"), str(gt_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert "result 0 points at unknown image 99" in err and len(err.splitlines()) == 1
    (tmp_path / "notjson.json").write_text("{")
    assert run(["particles", "evaluate", str(tmp_path / "notjson.json"), str(gt_file)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert gt.n_annotations == 4


def test_python_results_with_polygons_and_numpy_types(gt_file):
    gt = load_coco(gt_file)
    polygon = [5.0, 5.0, 15.0, 5.0, 15.0, 15.0, 5.0, 15.0]  # exactly the first square
    results = [
        {"image_id": np.int64(1), "category_id": 1, "segmentation": [polygon], "score": np.float32(0.9)}
    ]
    m = evaluate(results, gt)
    assert m["matching"][0]["tp"] == 1 and m["matching"][0]["mean_matched_iou"] == pytest.approx(1.0)


def _write(path, records):
    path.write_text(json.dumps(records))
    return path
