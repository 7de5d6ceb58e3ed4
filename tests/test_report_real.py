"""galhpc-encode + galhpc-report end to end on real pixels: HST cutouts of the Hubble Deep
Field (`galhpc.data.hdf`, FITS SCI/ERR/DQ + catalogue) prepped with configs/prep_survey.yaml,
the survey preset trained for a few dozen steps, the FITS folder encoded, then the report.
It checks the report's contract on observed data (issue #25 item 6), not the science: the
truth section skipped with one line, index.html opening with the summary table (3
significant digits, no JSON), object ids on every stamp figure, logarithmic colour scales
for flux-like stamps, statmorph progress, and the search mosaic."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("photutils")
pytest.importorskip("skimage")
pytest.importorskip("statmorph")

ROOT = Path(__file__).resolve().parents[1]
N_STAMPS = 120  # the first detections of the field: enough for 6 clusters, a few seconds of prep
STEPS = 30


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """Trains, encodes the FITS folder and reports; returns the report folder, the log text
    and every stamp figure drawn (its file, the ids argument, the colour scales)."""
    import matplotlib.axes
    import torch
    from astropy.table import Table

    from galhpc.cli.encode import main as encode_main
    from galhpc.cli.report import main as report_main
    from galhpc.config import load_config
    from galhpc.data.hdf import build_hdf_cutouts
    from galhpc.data.prep import run_prep
    from galhpc.report import figures
    from galhpc.runtime import process
    from galhpc.search import output
    from galhpc.train.trainer import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report_real")
    _, catalog = build_hdf_cutouts(root / "hdf", max_objects=N_STAMPS)
    table = Table.read(catalog)
    table[table["has_stamp"]].write(root / "stamps.fits")
    prep = load_config(ROOT / "configs" / "prep_survey.yaml").prep
    source = dataclasses.replace(prep.sources[0], path=str(root / "hdf" / "stamps"), catalog=str(root / "stamps.fits"))
    store = run_prep(dataclasses.replace(prep, sources=[source], output=str(root / "train.h5")))
    cfg = load_config(ROOT / "configs" / "astrovader_survey.yaml")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, store=str(store), out_dir=str(root / "run"), steps=STEPS, backend="single", device="cpu"),
        schedule=dataclasses.replace(cfg.schedule, t_alpha=10, t_beta=10, t_static=5, gmm_init_batches=2))
    ckpt = train(cfg).checkpoint
    catalogue = root / "clusters.h5"
    assert encode_main(["--checkpoint", str(ckpt), "--store", str(root / "hdf" / "stamps"), "--out", str(catalogue),
                        "--threads", "1", "--device", "cpu"]) == 0

    drawn: list[dict] = []  # every stamp figure: its ids and its colour scales
    grid, mosaic, imshow = figures.image_grid, output.write_mosaic, matplotlib.axes.Axes.imshow
    scales: list[tuple[str, str, tuple]] = []

    def spy_imshow(self, x, *args, **kwargs):
        norm, cmap = kwargs.get("norm"), kwargs.get("cmap")
        scales.append((type(norm).__name__ if norm is not None else "linear", str(cmap), np.shape(x)))
        return imshow(self, x, *args, **kwargs)

    def spy_grid(rows, row_labels, path, *args, **kwargs):
        scales.clear()
        result = grid(rows, row_labels, path, *args, **kwargs)
        drawn.append({"file": Path(path).name, "ids": kwargs.get("ids"), "rows": len(rows),
                      "symmetric": kwargs.get("symmetric"), "scales": list(scales)})
        return result

    def spy_mosaic(path, query_stamps, neighbour_stamps, labels, captions):
        scales.clear()
        result = mosaic(path, query_stamps, neighbour_stamps, labels, captions)
        drawn.append({"file": Path(path).name, "labels": list(labels), "captions": np.asarray(captions).tolist(),
                      "scales": list(scales)})
        return result

    out = root / "report"
    import logging

    import galhpc.cli.report as report_cli

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    setup = report_cli.setup_logging

    def setup_logging(*args, **kwargs):  # the CLI replaces galhpc's handlers: ours goes on after
        logger = setup(*args, **kwargs)
        logger.addHandler(handler)
        return logger

    mp = pytest.MonkeyPatch()
    mp.setattr(report_cli, "setup_logging", setup_logging)
    mp.setattr(figures, "image_grid", spy_grid)
    mp.setattr(output, "write_mosaic", spy_mosaic)
    mp.setattr(matplotlib.axes.Axes, "imshow", spy_imshow)
    mp.setattr(process, "LOG_MIN_INTERVAL_S", 0.0)
    mp.setenv("GALHPC_PROGRESS", "log")
    try:
        rc = report_main(["--checkpoint", str(ckpt), "--clusters", str(catalogue), "--store",
                          str(root / "hdf" / "stamps"), "--out", str(out), "--n-morph", "6", "--n-tsne", "30",
                          "--n-holdout", "40", "--threads", "1"])
    finally:
        logging.getLogger("galhpc").removeHandler(handler)
        mp.undo()
    assert rc == 0
    return {"out": out, "log": "\n".join(records), "drawn": drawn,
            "metrics": json.loads((out / "metrics.json").read_text())}


@pytest.mark.slow
def test_truth_section_is_one_line_on_observed_stamps(real_report):
    truth = real_report["metrics"]["truth"]
    assert set(truth) <= {"skipped", "seconds"} and "observed" in truth["skipped"]
    assert "\n" not in truth["skipped"]
    assert not list(real_report["out"].glob("truth*.png"))  # no empty panels, no probes of pixel x/y
    page = (real_report["out"] / "index.html").read_text()
    truth_part = page.split("Truth recovery", 1)[1].split("<h2>", 1)[0]
    assert "Skipped: no truth columns" in truth_part and "<img" not in truth_part


@pytest.mark.slow
def test_index_opens_with_the_summary_table_rounded_without_json(real_report):
    page = (real_report["out"] / "index.html").read_text()
    body = page.split("<body>", 1)[1]
    first = re.sub(r"<h1>.*?</h1>", "", body, count=1).lstrip()
    assert first.startswith("<h2>Summary</h2><table>")  # before any figure or other table
    summary = first.split("</table>", 1)[0]
    assert "<th>model</th><th>baseline</th>" in summary and "<th>pass / flag</th>" in summary
    assert re.search(r"<td>(pass|flag)</td>", summary)
    assert summary.index("<tr") < page.index("<img")
    numbers = re.findall(r"<td>(-?[0-9][0-9.e+-]*)</td>", page)
    assert numbers
    for text in numbers:  # 3 significant digits at most (integers as they are)
        if "." in text or "e" in text:
            mantissa = text.split("e")[0].lstrip("-").replace(".", "").lstrip("0")
            assert len(mantissa) <= 3, text
    assert '{"' not in page and "[[" not in page  # no raw JSON
    # χ² is the likelihood's own (per-pixel σ of the store, its mask left out), as docs/models.md quotes it
    assert real_report["metrics"]["regier"]["noise_sigma_source"] == "the store's per-pixel sigma, its mask left out"


@pytest.mark.slow
def test_every_stamp_figure_shows_object_ids_on_a_log_scale(real_report):
    drawn = {d["file"]: d for d in real_report["drawn"]}
    # the figures of real stamps: each row of real stamps carries ids (model-made rows may not)
    for name in ("reconstructions.png", "best_worst.png", "members_top_gamma.png", "members_random.png"):
        ids = drawn[name]["ids"]
        assert ids is not None and ids[0] is not None and len(ids[0]) > 0, name
        assert all(str(i).strip() for i in ids[0]), name
    for figure in drawn.values():
        for norm, cmap, shape in figure["scales"]:
            if len(shape) >= 2 and min(shape[:2]) >= 16:  # a stamp, not a matrix or a colour bar
                assert norm in ("AsinhNorm", "LogNorm") or cmap == "RdBu_r", (figure["file"], norm, cmap)
    mosaic = drawn["search_mosaic.png"]
    assert mosaic["labels"] and all(re.fullmatch(r"query -?\d+", label) for label in mosaic["labels"])
    assert all(re.match(r"-?\d+ d=", c) for row in mosaic["captions"] for c in row if c)
    assert (real_report["out"] / "search_mosaic.png").stat().st_size > 0
    search = real_report["metrics"]["search"]
    assert len(search["query_object_ids"]) == len(mosaic["labels"]) >= 2
    for query, neighbours in zip(search["query_object_ids"], search["neighbour_object_ids"], strict=True):
        assert query not in neighbours and len(set(neighbours)) == len(neighbours) == search["k"]


@pytest.mark.slow
def test_statmorph_step_shows_progress(real_report):
    assert re.search(r"statmorph, real stamps: \d+/\d+ stamp", real_report["log"])
