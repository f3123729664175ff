"""The first records' claims, frozen and mapped to today's claim ids, and the "what changed" table."""
import shutil
from pathlib import Path

import pytest

from smlib.book.what_changed import what_changed
from smlib.experiments import first_claims as FC
from smlib.experiments import records

RESULTS = Path(__file__).resolve().parents[1] / "results"
NAMES = list(FC.NAMES)


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A copy of the book's results folders of the five experiments, as $SMLIB_RESULTS_DIR."""
    for n in NAMES:
        (tmp_path / n).mkdir()
        for f in ("results.json", "first_record_claims.json", "what_changed.json"):
            shutil.copy(RESULTS / n / f, tmp_path / n / f)
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", NAMES)
def test_every_first_claim_is_mapped_to_an_id_of_the_claim_code(results, name):
    first = FC.load(name)
    assert first["sha256"] == FC.FIRST_SHA256[name]
    # from the code: literal claim("<id>") calls and claims() itself, on the record in results/
    ids = FC.claim_ids(name, _record_data(name))
    for c in first["claims"]:
        assert c["successor"] is None and c["why"] or c["successor"] in ids, c
    mapped = {c["successor"] for c in first["claims"]}
    if _is_first(name):
        assert set(first["new_without_predecessor"]) == ids - mapped
    else:  # a new record can judge claims the first one had no runs for (e.g. a new CD reading): "new" rows
        assert set(first["new_without_predecessor"]) <= ids - mapped
    assert all(first["new_without_predecessor"].values())


@pytest.mark.parametrize("name", NAMES)
def test_frozen_file_is_what_the_script_writes_from_the_first_record(results, name):
    if FC.sha256(results / name / "results.json") != FC.FIRST_SHA256[name]:
        pytest.skip("a new record has replaced the first one; the frozen file is kept as it is")
    assert FC.frozen(name) == FC.load(name)
    assert len(FC.load(name)["claims"]) == len(records.load(name)["data"]["summary"]["claims"])


def test_literal_ids_are_read_from_the_claim_calls():
    ids = FC._literal_ids(Path(FC.__file__).parent / "swersky2011_claims.py")
    assert {"sm-curvature", "sm-lowest-one-step", "mean-filter-structure"} <= ids
    assert not any(i.startswith(("C_", "W_")) for i in ids)  # loop tuples of filter names are not ids


def test_a_wrong_or_missing_mapping_is_refused(results, monkeypatch):
    name = next((n for n in ("swersky2011_features", "swersky2011") if _is_first(n)), None)  # frozen() needs a first record
    if name is None:
        pytest.skip("both Swersky first records have been replaced")
    original, bad = FC.SUCCESSOR[name], dict(FC.SUCCESSOR[name])
    bad[next(iter(bad))] = ("a-typo-id", "")
    monkeypatch.setitem(FC.SUCCESSOR, name, bad)
    with pytest.raises(ValueError, match="a-typo-id"):
        FC.frozen(name)
    short = dict(list(FC.SUCCESSOR[name].items())[:1])
    monkeypatch.setitem(FC.SUCCESSOR, name, short)
    with pytest.raises(ValueError, match="without a mapping"):
        FC.frozen(name)
    monkeypatch.setitem(FC.SUCCESSOR, name, original)
    if not _is_first("swersky2011"):
        return
    monkeypatch.setitem(FC.NEW_CLAIMS, "swersky2011", {})
    with pytest.raises(ValueError, match="sm-lowest-one-step"):  # a new claim needs its reason
        FC.frozen("swersky2011")


def _is_first(name):
    return FC.sha256(RESULTS / name / "results.json") == FC.FIRST_SHA256[name]


def _first_data(name):
    if not _is_first(name):
        pytest.skip("the first record is no longer in results/")
    return _record_data(name)


def _record_data(name):
    """The data of the record in the book's results/: the first record or the one that replaced it."""
    return records.read_json(RESULTS / name / "results.json", what=f"record of {name}")["data"]


def _plant(results, name, edit):
    """Write a new record into ``results/<name>/`` with records.save: today's claims of the book's record
    (first or new), edited."""
    mod = __import__(f"smlib.experiments.{FC.NAMES[name][0]}", fromlist=["claims"])
    claims = edit(mod.claims(_record_data(name)))
    prov = {k: "x" for k in records.PROVENANCE_KEYS} | {"commit": "feedbeef" * 5, "date": "2027-01-01"}
    records.save(name, {"summary": {"claims": claims}}, provenance=prov)


def test_save_keeps_the_frozen_claims_and_the_reasons(results):
    _plant(results, "deen_patches", lambda cs: cs)
    assert FC.sha256(results / "deen_patches" / "results.json") != FC.FIRST_SHA256["deen_patches"]
    assert (results / "deen_patches" / "first_record_claims.json").is_file()
    assert (results / "deen_patches" / "what_changed.json").is_file()
    assert "kept as it is" in FC.freeze("deen_patches")  # re-running the script leaves the frozen file alone


def test_first_record_says_it_is_the_first(results):
    firsts = [name for name in NAMES if _is_first(name)]
    if not firsts:
        pytest.skip("every first record has been replaced")
    for name in firsts:
        text = what_changed(name)
        assert text.startswith(f"`results/{name}/`: the record is still the first one (commit ") and "under way" in text
        assert str(FC.load(name)["provenance"]["commit"])[:7] in text


def test_new_record_shows_old_and_new_verdicts_by_id(results):
    def edit(cs):
        for c in cs:
            c["claim"] = "reworded: " + c["claim"]
        cs[0]["verdict"] = "not testable: planted"
        cs[1]["id"] = "a-claim-nobody-mapped"
        return cs
    (results / "deen_2d" / "what_changed.json").write_text('{"deen-energy-end": "the planted reason"}')
    _plant(results, "deen_2d", edit)
    rows = {r.split(" | ")[0]: r for r in what_changed("deen_2d").splitlines() if r.startswith("| ")}
    end = next(r for k, r in rows.items() if "`deen-energy-end`" in k)
    assert "reworded: DEEN learns" in end and "| holds | **not testable: planted** | the planted reason |" in end
    new = next(r for k, r in rows.items() if "`a-claim-nobody-mapped`" in k)
    assert "| new (no claim in the first record) |" in new
    gone = next(r for k, r in rows.items() if "(first wording) `deen-energy-paper-iterations`" in k)
    assert "| partly | not in the new record |" in gone
    curl = next(r for k, r in rows.items() if "`deen-zero-curl`" in k)
    assert "| holds | **holds** |  |" in curl


def test_moved_verdict_without_reason_says_so_and_bad_input_is_refused(results):
    (results / "swersky2011_features" / "what_changed.json").write_text("{}")  # no reason written
    _plant(results, "swersky2011_features", lambda cs: [{**cs[0], "verdict": "holds"}, cs[1]])
    table = what_changed("swersky2011_features")
    assert "| partly | **holds** | reason not written yet |" in table
    (results / "swersky2011_features" / "what_changed.json").write_text('{"no-such-claim": "why"}')
    with pytest.raises(ValueError, match="no-such-claim"):
        what_changed("swersky2011_features")
    (results / "swersky2011_features" / "what_changed.json").write_text('{"ae-worse": ""}')
    with pytest.raises(ValueError, match="non-empty"):
        what_changed("swersky2011_features")
    _plant(results, "swersky2011_features", lambda cs: [{k: v for k, v in c.items() if k != "id"} for c in cs])
    with pytest.raises(ValueError, match="without an id"):
        what_changed("swersky2011_features")
