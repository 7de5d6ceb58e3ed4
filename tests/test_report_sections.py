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
from galhpc.report.sections import Figures, Requirement, Section, register


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
