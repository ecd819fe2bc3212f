import io

import numpy as np
import pytest
from PIL import Image

from export.report import COLOURS, REPORT_IMAGE, REPORT_SUMMARY, write_report


def history(base: float, epochs: int = 3, gauc: float | None = None) -> list[dict]:
    """Synthetic per-epoch metrics: rising AUC/GAUC, falling loss; a higher base, a lower loss."""
    rows, loss = [], 1.4 - base
    for epoch in range(1, epochs + 1):
        step = 0.02 * epoch
        valid = {"auc": base + step, "gauc": base - 0.01 + step, "logloss": loss - step}
        test = {"auc": base + 0.01 + step, "gauc": base + step, "logloss": loss - 0.01 - step}
        if gauc is not None:
            valid["gauc"] = test["gauc"] = gauc
        rows.append(
            {"epoch": epoch, "train_loss": loss + 0.05 - 2 * step, "valid": valid, "test": test}
        )
    return rows


RUNS = {"DIN": history(0.70), "BaseModel": history(0.65)}
BEST = {"DIN": 3, "BaseModel": 2}


def colour_pixels(png: bytes, colour: str, tolerance: int = 30) -> list[int]:
    """How many pixels within tolerance of colour, in each third of the image's width."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    close = (np.abs(pixels - target) <= tolerance).all(axis=2)
    return [int(part.sum()) for part in np.array_split(close, 3, axis=1)]


def test_write_report_writes_both_files_and_returns_their_bytes(tmp_path):
    files = write_report(tmp_path, RUNS, BEST)
    assert set(files) == {REPORT_IMAGE, REPORT_SUMMARY}
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data


def test_png_is_1300_by_400_with_each_model_in_every_panel(tmp_path):
    png = write_report(tmp_path, RUNS, BEST)[REPORT_IMAGE]
    assert Image.open(io.BytesIO(png)).size == (1300, 400)
    for label in RUNS:
        assert all(count > 200 for count in colour_pixels(png, COLOURS[label])), label


def test_png_of_din_alone_has_no_basemodel_colour(tmp_path):
    png = write_report(tmp_path, {"DIN": RUNS["DIN"]}, {"DIN": 3})[REPORT_IMAGE]
    assert all(count > 200 for count in colour_pixels(png, COLOURS["DIN"]))
    assert sum(colour_pixels(png, COLOURS["BaseModel"])) == 0


def test_png_bytes_are_deterministic(tmp_path):
    assert write_report(tmp_path / "a", RUNS, BEST) == write_report(tmp_path / "b", RUNS, BEST)


def test_markdown_shows_best_epochs_test_auc_comparison_and_image(tmp_path):
    md = write_report(tmp_path, RUNS, BEST)[REPORT_SUMMARY].decode()
    din_auc, base_auc = RUNS["DIN"][2]["test"]["auc"], RUNS["BaseModel"][1]["test"]["auc"]
    assert f"| DIN | 3 | {din_auc:.4f} |" in md
    assert f"| BaseModel | 2 | {base_auc:.4f} |" in md
    diff = RUNS["DIN"][2]["test"]["gauc"] - RUNS["BaseModel"][1]["test"]["gauc"]
    assert f"DIN beats BaseModel on test GAUC by +{diff:.4f}" in md
    assert "## DIN per epoch" in md and "## BaseModel per epoch" in md
    assert f"![training curves]({REPORT_IMAGE})" in md


def test_markdown_says_trails_with_a_negative_gap(tmp_path):
    runs = {"DIN": history(0.60), "BaseModel": history(0.65)}
    md = write_report(tmp_path, runs, {"DIN": 1, "BaseModel": 1})[REPORT_SUMMARY].decode()
    assert "DIN trails BaseModel on test GAUC by -0.0500" in md
    assert "beats" not in md


def test_single_model_report_has_no_comparison_line(tmp_path):
    md = write_report(tmp_path, {"DIN": RUNS["DIN"]}, {"DIN": 3})[REPORT_SUMMARY].decode()
    assert "BaseModel" not in md
    assert "beats" not in md and "trails" not in md


@pytest.mark.parametrize("labels", [("DIN",), ("DIN", "BaseModel")])
def test_nan_gauc_is_drawn_as_nothing_and_shown_as_na(tmp_path, labels):
    runs = {label: history(0.7, gauc=float("nan")) for label in labels}
    files = write_report(tmp_path, runs, dict.fromkeys(labels, 1))
    md = files[REPORT_SUMMARY].decode()
    assert "n/a" in md and "nan" not in md.lower()
    assert Image.open(io.BytesIO(files[REPORT_IMAGE])).size == (1300, 400)


def test_other_labels_get_fallback_colours(tmp_path):
    runs = {"DIN": RUNS["DIN"], "Wide&Deep": history(0.6)}
    png = write_report(tmp_path, runs, {"DIN": 3, "Wide&Deep": 1})[REPORT_IMAGE]
    assert sum(colour_pixels(png, COLOURS["BaseModel"])) == 0
    assert all(count > 200 for count in colour_pixels(png, COLOURS["DIN"]))
