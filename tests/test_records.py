"""Row schema, parquet parts and the summary on rows with a known answer."""

import json
import math

import pandas as pd
import pytest

from smoothgen_exp.records import RecordWriter, read_records, rows_to_table, summarize, write_summary
from smoothgen_exp.tables import formatted, results_table


def rows(item, certified, correct, radius, time=1.0):
    common = {"run_id": "r", "item_id": item, "label": 1, "time_total_s": time, "certificate_valid": True}
    return [
        {**common, "variant": "baseline", "prediction": 1, "correct": True, "certified": False,
         "abstained": False, "count": None, "p_lower": None, "radius": None},
        {**common, "variant": "smoothed", "prediction": 1 if certified else -1, "correct": correct,
         "certified": certified, "abstained": not certified, "count": 90, "p_lower": 0.8, "radius": radius},
    ]


def test_summary_certified_accuracy_on_known_rows():
    df = pd.DataFrame(rows("a", True, True, 0.3) + rows("b", True, True, 0.1) + rows("c", True, False, 0.6)
                      + rows("d", False, False, 0.0))
    s = summarize(df, [0.0, 0.25, 0.5])
    assert s["certified_accuracy"] == {"0": 0.5, "0.25": 0.25, "0.5": 0.0}
    assert s["abstain_rate"] == 0.25
    assert s["mean_radius"] == pytest.approx((0.3 + 0.1 + 0.6) / 3)
    assert s["average_certified_radius"] == pytest.approx((0.3 + 0.1) / 4)
    assert s["baseline_accuracy"] == 1.0 and s["items"] == 4


def test_rows_of_unknown_validity_are_only_nominal():
    """Records without `certificate_valid` (written before the column existed) cannot show that their
    noise law and oracle model were sound: the summary reports them as nominal_*, never certified."""
    df = pd.DataFrame(rows("a", True, True, 0.3) + rows("b", True, True, 0.1)).drop(columns="certificate_valid")
    s = summarize(df, [0.0, 0.25])
    assert "certified_accuracy" not in s and s["nominal_certified_accuracy"] == {"0": 1.0, "0.25": 0.5}
    assert s["certificate_valid"] is False


def test_parts_are_atomic_typed_and_readable(tmp_path):
    w = RecordWriter(tmp_path, flush_every=2)
    for item in "abcde":
        w.add(rows(item, True, True, 0.2))
    assert len(list((tmp_path / "records").glob("part-*.parquet"))) == 2   # after items 2 and 4
    w.flush()
    assert not list((tmp_path / "records").glob(".*tmp"))
    df = read_records(tmp_path)
    assert len(df) == 10 and str(df["count"].dtype) == "Int64"
    assert df.loc[df.variant == "baseline", "radius"].isna().all()
    # a second writer (e.g. a resumed run) continues the numbering instead of overwriting
    w2 = RecordWriter(tmp_path, flush_every=1)
    w2.add(rows("f", True, True, 0.2))
    assert len(read_records(tmp_path)) == 12


def test_fixed_column_types_do_not_depend_on_values():
    t1 = rows_to_table(rows("a", True, True, 0.2))
    t2 = rows_to_table(rows("b", False, False, 0.0))
    assert t1.schema == t2.schema


def test_summary_file_is_strict_json_with_null_for_nan(tmp_path):
    """NaN and infinity are not JSON (jq and JavaScript refuse them): written as null."""
    write_summary(tmp_path, {"x": math.nan, "y": 1, "z": math.inf})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"x": None, "y": 1, "z": None}


def test_the_summary_prints_smoothed_answers_with_their_certificates(capsys):
    """A language model's run shows a few smoothed answers beside their radius, abstention reason, or a
    NOMINAL radius where the certificate's assumptions fail (never a plain "radius" there)."""
    from smoothgen_exp.report import print_summary

    rows = pd.DataFrame({"variant": ["baseline", "smoothed", "smoothed", "smoothed"],
                         "item_id": ["q0", "q0", "q1", "q2"], "condition": ["Capital of France?"] * 2 + ["2+2?", "Sky?"],
                         "output_text": ["Paris.", "It is Paris.", "It is four.", "Blue."],
                         "certified": [False, True, False, True], "radius": [0.0, 0.0675, 0.0, 0.02],
                         "abstain_reason": ["", "", "no majority", ""], "certificate_valid": [True, True, True, False]})
    print_summary({"items": 3}, "t", records=rows)
    out = capsys.readouterr().out
    assert "3 of 3 items" in out and "It is Paris." in out and "radius 0.0675" in out
    assert "abstains: no majority" in out and "NOMINAL radius 0.02" in out
    print_summary({"items": 3}, "t", records=rows.drop(columns="output_text"))   # image runs: no answers table
    assert "smoothed answers" not in capsys.readouterr().out


def test_the_answers_table_escapes_model_text_and_shows_what_the_radius_is_for(capsys, monkeypatch):
    """Model text with brackets is printed as is (rich would read "[/INST]" as a closing tag and crash);
    missing values do not crash; an unknown validity is NOMINAL (as valid_certificates counts it); a
    radius for another class than the shown answer's says so, and so does a certificate of the wrong class;
    certified decoding shows certified_text."""
    from smoothgen_exp.report import print_summary

    monkeypatch.setenv("COLUMNS", "250")                                       # no wrapped cells
    rows = pd.DataFrame({"variant": ["smoothed"] * 3, "item_id": ["a", "b", "c"],
                         "condition": ["What is [foo]?", "Q", "Q2"],
                         "output_text": ["It is [/INST] Paris", "blue", "from the aggregator"],
                         "certified_text": [None, None, "from the certifier"],
                         "certified": [True, True, True], "radius": [0.05, 0.04, 0.03],
                         "prediction": [1, 2, 0], "smoothed_class": [1.0, 3.0, None], "label": [0, 2, 0],
                         "correct": pd.array([False, True, pd.NA], dtype="boolean"),
                         "abstain_reason": pd.array([pd.NA, pd.NA, pd.NA], dtype="string"),
                         "certificate_valid": pd.array([True, pd.NA, True], dtype="boolean")})
    print_summary({"items": 3}, "t", records=rows)
    out = capsys.readouterr().out
    assert "It is [/INST] Paris" in out and "What is [foo]?" in out
    # a certificate of the wrong class says so (it read like a certified-safe answer; found by a new user)
    assert "radius 0.05 (certifies class 1, the label is 0)" in out
    assert "NOMINAL radius 0.04 for class 2" in out
    assert "from the certifier" in out and "from the aggregator" not in out


def test_a_token_averaged_answer_is_not_shown_as_the_radius_of_that_text(capsys, monkeypatch):
    """With aggregator=token_average the shown text is the averaged decoder's; Cohen's radius is the vote's
    (single noisy generations, SPEC C1), so the table says so even where the text's class is the vote's
    (it printed a plain "radius 0.0913" beside "door door door ..."; found by review)."""
    from smoothgen_exp.report import print_summary

    monkeypatch.setenv("COLUMNS", "250")
    rows = pd.DataFrame({"variant": ["smoothed"] * 2, "item_id": ["a", "b"], "condition": ["Q", "Q2"],
                         "aggregator": ["token_average", "majority"], "output_text": ["door door", "Paris"],
                         "certified": [True, True], "radius": [0.0913, 0.05], "prediction": [0, 1],
                         "smoothed_class": [0.0, 1.0], "certificate_valid": [True, True]})
    print_summary({"items": 2}, "t", records=rows)
    out = capsys.readouterr().out
    assert "radius 0.0913 for the vote's class 0, not token_average's text" in out
    assert "radius 0.05" in out and "not majority" not in out
    print_summary({"items": 2}, "t", records=rows.assign(aggregator=["TokenAverage", "Majority"]))   # no Hydra choices
    out = capsys.readouterr().out
    assert "not TokenAverage's text" in out and "not Majority" not in out


def test_a_feature_or_center_certificate_is_not_shown_as_the_radius_of_the_answer(capsys, monkeypatch):
    """certifier=feature certifies the smoothed feature's cosine, not the shown text: with majority the
    table printed a plain "radius 0.31" beside the answer, and with token_average "for the vote's class
    None" (review). A center-smoothing row has bounds and no radius: the table raised a TypeError
    formatting None."""
    from smoothgen_exp.report import print_summary

    monkeypatch.setenv("COLUMNS", "250")
    rows = pd.DataFrame({"variant": ["smoothed"] * 3, "item_id": ["a", "b", "c"], "condition": ["Q", "Q2", "Q3"],
                         "certifier": ["feature", "feature", "center"],
                         "aggregator": ["majority", "token_average", "majority"],
                         "output_text": ["hello", "hi", "hey"], "certified": [True, True, True],
                         "radius": [0.31, 0.2, None], "prediction": [None, None, None],
                         "certificate_valid": [True, True, True]})
    print_summary({"items": 3}, "t", records=rows)
    out = capsys.readouterr().out
    assert out.count("for the smoothed feature's cosine, not this answer's text") == 2
    assert "radius 0.31 for" in out and "class None" not in out
    assert "bounds in the bound_* columns" in out


def test_summary_arrows_point_the_right_way():
    """The summary table printed `confidence ↓` ("confidence" holds the letters of fid) and ↑ beside
    settings and counts such as world_size and items_total (found by a new user)."""
    from smoothgen_exp.report import metric_arrow

    for neither in ("confidence", "world_size", "items_total", "items", "alpha", "sigma", "n", "n0",
                    "max_certifiable_radius", "mean_diag_rho", "attack_within_radius", "attack_w2_items",
                    "nominal_mean_diag_rho", "nominal_max_certifiable_radius", "worth", "give_up_alpha"):
        assert metric_arrow(neither) == "", neither
    assert metric_arrow("metric_fid_baseline") == metric_arrow("abstain_rate") == "↓"
    assert metric_arrow("retention_fid") == metric_arrow("certified_accuracy_r0.5") == metric_arrow("mean_radius") == "↑"


def test_the_preview_figure_says_what_the_certificate_says(tmp_path):
    """samples.png labels the smoothed output's class with its certificate: an abstaining item's majority
    class is shown as 'not certified', an invalid certificate as nominal, a bound certifier's row plainly."""
    from types import SimpleNamespace

    import torch

    from smoothgen_exp.plots import certificate_note, preview_grid

    abstained = {"smoothed_prediction": 3, "certified": False, "abstained": True, "radius": 0.0, "prediction": -1}
    certified = {"smoothed_prediction": 3, "certified": True, "abstained": False, "radius": 0.4213,
                 "prediction": 3, "certificate_valid": True}
    assert certificate_note(abstained) == "not certified"
    assert certificate_note(certified) == "certified 3, r = 0.42"
    assert certificate_note({**certified, "certificate_valid": False}) == "nominal: certified 3, r = 0.42"
    assert certificate_note({"smoothed_prediction": 3, "bound_tv_eps0.1": 0.2}) == ""
    feature = {"certified": True, "abstained": False, "radius": 0.42, "certificate_valid": True}   # no class
    assert certificate_note(feature) == "certified, r = 0.42"
    item = SimpleNamespace(condition="a three", label=3)
    img = torch.zeros(1, 8, 8)
    preview_grid([(item, 3, abstained, img, img), (item, 3, certified, img, None)], tmp_path / "samples.png")
    assert (tmp_path / "samples.png").stat().st_size > 1000


def test_the_curve_marks_radii_no_row_can_reach(capsys, monkeypatch):
    """Zeros past the ceiling are marked so; a sequential run certifies only its target radius, whose
    value the summary carries, and zeros past it are marked as above the target."""
    from smoothgen_exp.certifiers.sequential import SequentialCertifier
    from smoothgen_exp.report import print_summary

    monkeypatch.setenv("COLUMNS", "200")
    curve = {"certified_accuracy": {"0.1": 0.5, "0.2": 0.0, "0.5": 0.0}}
    print_summary({**curve, "max_certifiable_radius": 0.3}, "t")
    out = capsys.readouterr().out
    assert out.count("(above the ceiling)") == 1 and "target" not in out
    seq = SequentialCertifier(n0=10, n=100, alpha=0.001, batch_size=64, target_radius=0.1, give_up_alpha=0.01,
                              budget_share=0.0)
    for valid in (True, False):       # a setting, never nominal_-prefixed (review: adaptive noise lost it)
        frame = pd.DataFrame(rows("a", True, True, 0.1)).assign(certificate_valid=valid)
        assert summarize(frame, [0.1], seq)["target_radius"] == 0.1
    summary = {**curve, "max_certifiable_radius": 0.3, **seq.settings()}
    print_summary(summary, "t")
    out = capsys.readouterr().out
    assert out.count("(above the target radius)") == 2 and "target_radius" in out
    # a nominal configuration's curve and ceiling (review: the nominal_ ceiling lost its marks), and a NaN
    # point that strict JSON wrote as null
    print_summary({"nominal_certified_accuracy": {"0.1": None, "0.2": 0.0, "0.5": 0.0},
                   "nominal_max_certifiable_radius": 0.3}, "t")
    out = capsys.readouterr().out
    assert out.count("(above the ceiling)") == 1 and "nan" in out


def test_summaries_read_back_null_as_nan(tmp_path):
    """summary.json writes NaN as null; the tables read it back as a float NaN (a column of None broke
    the scripts' number formatting)."""
    from smoothgen_exp.tables import load_summaries

    for name, fid in (("a", math.nan), ("b", math.nan)):
        (tmp_path / name).mkdir()
        write_summary(tmp_path / name, {"metric_fid_smoothed": fid, "certified_accuracy": {"0.5": 0.25}})
    df = load_summaries([tmp_path / "a", tmp_path / "b"])
    assert df["metric_fid_smoothed"].dtype == float and f"{df['metric_fid_smoothed'][0]:.1f}" == "nan"


def test_a_completed_run_summarised_by_other_code_says_so(tmp_path, caplog, monkeypatch):
    """Rerunning a finished command reprints its summary.json; where provenance.json names other code than
    this, the summary follows that code's rules (validity, confidence), and the log says so."""
    import json

    import smoothgen_exp.records as records
    from smoothgen_exp.outcome import completed_summary
    from smoothgen_exp.provenance import git_state

    if git_state()[0] == "unknown":
        pytest.skip("not a git checkout: no code version to compare")
    monkeypatch.setattr(records, "read_records", lambda run_dir: None)
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "summary.json").write_text(json.dumps({"config_hash": "h", "items": 1}))
    for sha, warned in (("0" * 40, True), (git_state()[0], False)):
        (tmp_path / "provenance.json").write_text(json.dumps({"git_sha": sha}))
        caplog.clear()
        assert completed_summary(tmp_path, "h", "r")["items"] == 1
        assert any("not this code" in r.getMessage() for r in caplog.records) == warned
    assert completed_summary(tmp_path, "other", "r") is None


def test_set_level_metrics_after_a_resume_say_how_many_items_they_cover(caplog):
    """A resumed run's FID covers only the items generated since the resume (found by a new user: 45 of
    60 gave 53.7 against 50.3, with nothing in the log or summary)."""
    from types import SimpleNamespace

    from smoothgen_exp.outcome import set_level_quality

    metrics = SimpleNamespace(enabled=True, summary=lambda records: {"metric_fid_smoothed": 50.0})
    assert set_level_quality(metrics, None, 60, 0) == {"metric_fid_smoothed": 50.0}
    assert not caplog.records
    assert set_level_quality(metrics, None, 45, 15) == {"metric_fid_smoothed": 50.0, "quality_items": 45}
    assert "cover the 45 items generated since the resume, not the 15" in caplog.text
    assert set_level_quality(metrics, None, 0, 60) == {}                  # nothing new: nothing to compute


def test_make_table_refuses_a_metric_no_run_has(tmp_path, capsys):
    """`--metrics certified_acuracy/0.1` (a typo) wrote a table with the group columns only, silently."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_table", "scripts/make_table.py")
    make_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_table)
    run = tmp_path / "run"
    records = rows("a", True, True, 0.3) + rows("b", False, False, 0.0)
    df = pd.DataFrame(records)
    writer = RecordWriter(run, rank=0, flush_every=10)
    writer.add(records)
    writer.flush()
    write_summary(run, summarize(df, [0.0, 0.1]))
    with pytest.raises(SystemExit, match=r"--metrics certified_acuracy/0.1 \(did you mean certified_accuracy/0.1\?\)"):
        make_table.main([str(run), "--metrics", "certified_acuracy/0.1", "--out", str(tmp_path / "t")])
    table = make_table.main([str(run), "--metrics", "certified_accuracy/0.1", "--out", str(tmp_path / "t")])
    assert table["certified_accuracy/0.1"].tolist() == [0.5]



def test_tables_mark_a_certified_curve_read_above_the_ceiling(tmp_path):
    """quality.md showed certified_accuracy/0.25 = 0.000 ± 0.000 for a run whose ceiling was 0.15, as if
    measured (found by a new user); the printed summary marks it, and so do the tables now."""
    for name, ceiling in (("low", 0.15), ("high", 0.4)):
        run = tmp_path / name
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"items": 4, "max_certifiable_radius": ceiling,
                                                      "certified_accuracy": {"0": 0.5, "0.25": 0.0}}))
    metrics = ["certified_accuracy/0", "certified_accuracy/0.25"]
    cells = formatted(results_table(sorted(tmp_path.iterdir()), metrics, by=[]), metrics)
    assert cells.iloc[:, -1].tolist() == ["0.000 ± 0.000", "0.000 ± 0.000 (above the ceiling)"]   # high, low
    assert not cells.iloc[:, -2].str.contains("above").any()
    # a sequential run certifies its target radius only: marked as the printed summary marks it (review)
    (tmp_path / "low" / "summary.json").write_text(json.dumps({"items": 4, "max_certifiable_radius": 0.4,
                                                               "target_radius": 0.1,
                                                               "certified_accuracy": {"0": 0.5, "0.25": 0.0}}))
    cells = formatted(results_table(sorted(tmp_path.iterdir()), metrics, by=[]), metrics)
    assert cells.iloc[:, -1].tolist() == ["0.000 ± 0.000", "0.000 ± 0.000 (above the target radius)"]


def test_a_run_and_its_rerun_print_the_same_summary(capsys, tmp_path):
    """New-user review: a run printed `mean_bound_eps_out_eps1 ↓ inf` and NaN means over no items, while
    summary.json holds null for them, so the `already complete` rerun (which prints summary.json) showed
    neither: the two tables differed. Values that are not finite numbers are not printed."""
    import json

    from smoothgen_exp.records import write_summary
    from smoothgen_exp.report import print_summary

    summary = {"items": 2, "mean_bound_eps_out_eps1": math.inf, "mean_bound_harm_eps0.1": math.nan,
               "mean_bound_harm_eps0.1_items": 0, "abstain_rate": 0.5}
    print_summary(summary, "t")
    first = capsys.readouterr().out
    write_summary(tmp_path, summary)
    print_summary(json.loads((tmp_path / "summary.json").read_text()), "t")
    assert capsys.readouterr().out == first
    assert "inf" not in first and "nan" not in first and "abstain_rate" in first and "_items" in first


def test_a_key_overridden_in_some_runs_only_is_a_swept_key(tmp_path):
    """New-user review: `make_table.py outputs/runs` printed two identical-looking rows, because a key set in
    one run only (certifier.n0=2000; aggregator=mean) had a single recorded value and was not shown."""
    from smoothgen_exp.tables import swept_keys

    runs = {"a": ["model=dcgan_faces", "certifier=center"],
            "b": ["model=dcgan_faces", "certifier=center", "certifier.n0=2000", "hydra.run.dir=x"],
            "c": ["model=dcgan_faces", "certifier=center", "+aggregator=mean", "resume=true", "progress=false"]}
    dirs = []
    for name, overrides in runs.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        dirs.append(tmp_path / name)
    assert swept_keys(dirs) == ["aggregator", "certifier.n0"]          # not resume, progress: no result changes
    assert swept_keys(dirs[:1]) == ["certifier", "model"]


def test_certificates_counts_only_valid_certified_smoothed_rows():
    """valid_certificates is certificate_valid alone, true on baseline and abstaining rows too: counting it
    gave 60 certificates where a run had 46 (new-user review). `certificates` is the mask to count with."""
    from smoothgen_exp.records import certificates, valid_certificates

    rows = pd.DataFrame({"variant": ["baseline", "smoothed", "smoothed", "smoothed", "smoothed"],
                         "certified": [None, True, False, True, True],
                         "certificate_valid": [True, True, True, False, None]})
    assert valid_certificates(rows).tolist() == [True, True, True, False, False]
    assert certificates(rows).tolist() == [False, True, False, False, False]
    assert not certificates(rows.drop(columns="certified")).any()
