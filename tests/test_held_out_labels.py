"""A dataset's held-out test labels (imagesTs / labelsTs): the raw dataset, the inter-rater reference and a
method's scores read the split they are asked for, and the training split stays the default. Values are computed
here by hand (strict mode)."""
from __future__ import annotations

import numpy as np
import pytest

from diffoseg_auto.cli.fold_images import link_test_images, sample_cases
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, RawDataset, write_dataset_json
from diffoseg_auto.evaluation.inter_rater import inter_rater_reference, labelled_cases
from diffoseg_auto.evaluation.method_comparison import EMPTY, INTER_RATER, MAJORITY, score_fold
from diffoseg_auto.evaluation.prediction_folder import EvaluationInputError
from diffoseg_auto.io.image_io import write_image, write_seg
from diffoseg_auto.results_layout import fold_folder, ts_learning_curve_folder, ts_predictions_folder

PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [4, 4]}
RATERS = ["a", "b", "c"]


def cols(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), np.uint8)
    m[:, list(idx)] = 1
    return m


TRAIN = {"c1": {"a": cols(0), "b": cols(0), "c": cols(0)}}  # the raters agree on the training case
TEST = {"t1": {"a": cols(0, 1), "b": cols(0), "c": cols(0, 1, 2)},
        "t2": {"a": cols(3), "b": cols(2, 3)},  # rater c did not annotate t2
        "t3": {"a": cols(1), "b": cols(1), "c": cols(1)}}
SAMPLES = np.stack([cols(0), cols(0, 1)])  # method A's two samples on every test case


def ged(S, R) -> float:
    def iou(x, y):
        u = np.logical_or(x, y).sum()
        return 1.0 if u == 0 else np.logical_and(x, y).sum() / u

    mean_d = lambda A, B: np.mean([1 - iou(x, y) for x in A for y in B])
    return float(2 * mean_d(S, R) - mean_d(S, S) - mean_d(R, R))


@pytest.fixture
def held_out(env_folders, tmp_path):
    raw = env_folders["raw"] / "Dataset004_Held"
    write_dataset_json(raw, DatasetDescription(name="Held", channel_names={0: "CT"},
                                               labels={"background": 0, "fg": 1}, raters=RATERS, num_training=1,
                                               file_ending=".nii.gz", extra={"numTest": 3, "test_split": "hand-made"}))
    for split, cases in (("Tr", TRAIN), ("Ts", TEST)):
        for case, by_rater in cases.items():
            write_image(np.arange(16, dtype=np.float32).reshape(4, 4), PROPS, raw / f"images{split}" / f"{case}_0000.nii.gz")
            for r, m in by_rater.items():
                write_seg(m, PROPS, raw / f"labels{split}" / r / f"{case}.nii.gz")
    pred = tmp_path / "A"
    (pred / "samples").mkdir(parents=True)
    for case in TEST:
        np.savez(pred / "samples" / f"{case}.npz", samples=SAMPLES)
    return RawDataset(raw), pred


def test_the_raw_dataset_reads_the_split_it_is_asked_for(held_out):
    ds, _ = held_out
    assert ds.cases == ds.cases_of("Tr") == ["c1"] and ds.cases_of("Ts") == ["t1", "t2", "t3"]
    assert ds.label_file("a", "t1", split="Ts") == ds.folder / "labelsTs" / "a" / "t1.nii.gz"
    assert ds.label_file("c", "t2", split="Ts") is None and ds.label_file("a", "t1") is None  # not a training case
    assert ds.rater_mask("t2", split="Ts").tolist() == [True, True, False]
    assert ds.rater_mask("c1").tolist() == [True, True, True] and ds.rater_mask("t1").tolist() == [False] * 3
    assert labelled_cases(ds) == ["c1"] and labelled_cases(ds, "Ts") == ["t1", "t2", "t3"]
    assert ds.cases_of("Val") == []  # no such folder


def test_inter_rater_reference_on_the_test_labels(held_out):
    ds, _ = held_out
    assert inter_rater_reference(ds.folder)["metrics"]["GED"] == 0.0  # training labels by default: agreement
    ref = inter_rater_reference(ds.folder, split="Ts")
    by_hand = {}
    for case, by_rater in TEST.items():
        R = np.stack(list(by_rater.values()))
        by_hand[case] = np.mean([ged(R[k:k + 1], np.delete(R, k, 0)) for k in range(len(R))])
    assert by_hand["t3"] == 0.0 and by_hand["t1"] > 0
    assert [c["case"] for c in ref["per_case"]] == ["t1", "t2", "t3"]
    assert [c["GED"] for c in ref["per_case"]] == pytest.approx([by_hand[c] for c in TEST])
    assert ref["metrics"]["GED"] == pytest.approx(np.mean(list(by_hand.values())))


def test_score_fold_on_the_test_labels_with_the_per_case_values(held_out):
    ds, pred = held_out
    per_case: dict = {}
    means, _ = score_fold(ds, {"A": [pred]}, ["t1", "t2", "t3"], num_samples=2, split="Ts", per_case_out=per_case)
    refs = {c: np.stack(list(by_rater.values())) for c, by_rater in TEST.items()}
    a = [ged(SAMPLES, refs[c]) for c in TEST]
    assert [d["case"] for d in per_case[("A", "strict")]] == ["t1", "t2", "t3"]
    assert [d["GED"] for d in per_case[("A", "strict")]] == pytest.approx(a)
    assert means[("A", "strict")]["GED"] == pytest.approx(np.mean(a))
    empty = [ged(np.zeros((2, 4, 4), np.uint8), refs[c]) for c in TEST]
    assert [d["GED"] for d in per_case[(EMPTY, "strict")]] == pytest.approx(empty)
    # the majority of t3 is the raters' common mask: GED 0 there
    assert per_case[(MAJORITY, "strict")][2]["GED"] == pytest.approx(0.0)
    assert [d["case"] for d in per_case[(INTER_RATER, "dpersona")]] == ["t1", "t2", "t3"]
    assert {mode for _, mode in per_case} == {"strict", "dpersona"}
    # the default split is the training labels, which the test cases do not have
    with pytest.raises(EvaluationInputError, match="labelsTr/a/t1.nii.gz"):
        score_fold(ds, {"A": [pred]}, ["t1"], num_samples=2)


def test_a_seeded_sample_of_the_test_images_is_linked(held_out, tmp_path):
    ds, _ = held_out
    out = tmp_path / "ts_images"
    cases = link_test_images(ds.name, out, max_cases=2, seed=3)
    assert cases == sample_cases(["t1", "t2", "t3"], 2, seed=3) and len(cases) == 2
    assert sorted(f.name for f in out.iterdir()) == [f"{c}_0000.nii.gz" for c in cases]
    assert link_test_images(ds.name, out) == ["t1", "t2", "t3"]  # no sample size: every test case, folder renewed
    assert len(list(out.iterdir())) == 3


def test_the_test_prediction_folders_belong_to_fold_all(tmp_path):
    assert ts_predictions_folder(tmp_path) == fold_folder(tmp_path, "all") / "test_predictions"
    assert ts_learning_curve_folder(tmp_path, "checkpoint_stage1_at_0.5.pth") == \
        fold_folder(tmp_path, "all") / "test_learning_curve" / "checkpoint_stage1_at_0.5"
