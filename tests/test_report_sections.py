"""The report's sections: a registry in report order, each declaring what it requires; the
builder skips a section in one place (logged, with the reason) and the inputs are frozen."""

import dataclasses
import logging

import numpy as np
import pytest

from galhpc.report import build, sections
from galhpc.report.heldout import EncodedObjects
from galhpc.report.inputs import CheckpointInputs, HeldOutInputs, ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sampling import ClusterSample
from galhpc.report.sections import Figures, Requirement, Section, generation, register


class _Model:
    name, generative = "toy", False


def _inputs(holdout=None):
    return ReportInputs(checkpoint=CheckpointInputs(model=_Model()), clusters=None, holdout=holdout)


def test_sections_are_registered_in_report_order_with_the_page_titles():
    assert list(sections.SECTIONS) == ["reconstruction", "clusters", "generation", "latents", "regier", "fidelity",
                                       "generated_vs_real", "truth", "rarity", "search"]
    titles = [s.title for s in sections.SECTIONS.values() if s.title is not None]
    assert [t.split(".")[0] for t in titles] == [str(i) for i in range(1, 10)]  # fidelity: metrics.json only


def test_register_refuses_a_second_section_of_one_name():
    with pytest.raises(ValueError, match="'clusters' is registered already"):
        register(Section(name="clusters", title=None, requires=(), run=lambda *a: {}))


def test_a_missing_requirement_skips_the_run_in_one_place_with_its_reason(tmp_path, caplog):
    calls = []
    needs_x = Requirement("x", lambda inp, opt: inp.holdout is not None, "no x here")
    section = Section(name="toy", title=None, requires=(needs_x,),
                      run=lambda *a: calls.append("run") or {"ran": True},
                      always=lambda *a: calls.append("always") or {"first": 1})
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.INFO, logger="galhpc.report"):
        out = build.run_section(section, _inputs(), ReportOptions(), Figures(tmp_path), rng)
    assert out == {"first": 1, "skipped": "no x here"} and calls == ["always"]
    assert "toy: skipped — no x here" in caplog.text
    assert rng.random() == np.random.default_rng(0).random()  # a skip draws no random numbers

    images = np.zeros((3, 1, 4, 4), np.float32)
    objects = EncodedObjects(np.arange(3), np.arange(3), images, np.zeros((3, 2)), images, {},
                             np.zeros(3, np.int64), 1, "test", "")
    out = build.run_section(section, _inputs(HeldOutInputs(objects, objects.components)), ReportOptions(),
                            Figures(tmp_path), rng)
    assert out == {"first": 1, "ran": True} and calls == ["always", "always", "run"]


def test_the_first_missing_requirement_gives_the_reason():
    opt = ReportOptions()
    assert sections.SECTIONS["regier"].missing(_inputs(), opt) == "no --store or --holdout-store: no held-out images"
    search = sections.SECTIONS["search"]
    assert search.missing(_inputs(), opt) == "no --store: no stamps to show the search results with"
    images = np.zeros((3, 1, 4, 4), np.float32)
    held = HeldOutInputs(EncodedObjects(np.arange(3), np.arange(3), images, np.zeros((3, 2)), images, {},
                                        np.zeros(3, np.int64), 1, "test", ""), np.zeros(3, np.int64))
    assert sections.SECTIONS["generated_vs_real"].missing(_inputs(held), opt) == \
        "model 'toy' is not generative and no --synth was given"
    assert sections.SECTIONS["fidelity"].missing(_inputs(held), dataclasses.replace(opt, n_morph=4)) == \
        "model 'toy' is not generative and no --synth was given"  # the generator is asked before the size


def test_inputs_are_frozen():
    inputs = _inputs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.holdout = object()
    assert inputs.labels == {} and inputs.model.name == "toy"


class _Condition:
    def __init__(self, kind, column):
        self.kind, self.column, self.num_classes = kind, column, 2


class _Conditioned:
    name, generative = "cond", True

    def __init__(self, kind="float", column="hlr"):
        self.sample_condition = _Condition(kind, column)


def _held(groups, group_name):
    n = len(groups)
    images = np.zeros((n, 1, 4, 4), np.float32)
    objects = EncodedObjects(np.arange(n), np.arange(n), images, np.zeros((n, 2)), images, {},
                             np.zeros(n, np.int64), 1, "test", "")
    return HeldOutInputs(objects, np.asarray(groups), group_name)


def _conditioned_inputs(groups, group_name, kind="float"):
    return ReportInputs(checkpoint=CheckpointInputs(model=_Conditioned(kind)), clusters=None,
                        holdout=_held(groups, group_name))


def test_fidelity_asks_for_the_condition_values_before_drawing():
    fidelity, opt = sections.SECTIONS["fidelity"], ReportOptions(n_morph=10)
    assert fidelity.missing(_conditioned_inputs(np.zeros(12), "component"), opt) == \
        "float-conditioned model: the held-out stamps carry no 'hlr' to sample at"
    one_nan = np.r_[np.ones(11), np.nan]  # a draw of 10 of 12 may miss the NaN: skipped all the same
    assert fidelity.missing(_conditioned_inputs(one_nan, "hlr"), opt) == \
        "held-out stamps without a finite 'hlr' to sample at"
    assert fidelity.missing(_conditioned_inputs(np.ones(12), "hlr"), opt) is None
    assert fidelity.missing(_conditioned_inputs(np.zeros(12), "component", kind="class"), opt) is None


def test_generated_vs_real_runs_a_float_conditioned_model_only_when_every_draw_can_be_binned():
    gvr = sections.SECTIONS["generated_vs_real"]
    two_nan = np.r_[1.0, np.nan, np.nan]
    assert gvr.missing(_conditioned_inputs(two_nan, "hlr"), ReportOptions(n_morph=3)) is None  # 3 of 3: one finite
    assert gvr.missing(_conditioned_inputs(two_nan, "hlr"), ReportOptions(n_morph=2)) == (
        "float-conditioned model without --synth: only 1 of the 3 held-out stamps have a finite labels/hlr, "
        "so the 2 chosen may have none to bin, so no condition to sample at")
    assert gvr.missing(_conditioned_inputs(np.ones(3), "component"), ReportOptions(n_morph=3)) == (
        "float-conditioned model without --synth: the store has no finite labels/hlr for the held-out "
        "stamps to bin, so no condition to sample at")


def test_the_parts_that_need_a_store_record_why_they_are_left_out(tmp_path):
    n = 12
    rng = np.random.default_rng(0)
    component = np.arange(n) % 3
    clusters = ClusterSample(rows=np.arange(n), object_id=np.arange(n), mu=rng.normal(size=(n, 2)) + component[:, None],
                             component=component, n_total=n, n_components=3, occupancy=np.bincount(component))
    inputs = ReportInputs(checkpoint=CheckpointInputs(model=_Model()), clusters=clusters)
    out = build.run_section(sections.SECTIONS["clusters"], inputs, ReportOptions(), Figures(tmp_path), rng)
    assert out["labels"] == {} and out["labels_skipped"] == out["members_skipped"] == "no --store"
    assert "silhouette_overall" in out and "skipped" not in out  # the rest of the section ran
    assert generation.deblending(inputs, ReportOptions(), Figures(tmp_path)) == \
        {"skipped": "needs a store with labels/has_companion"}
