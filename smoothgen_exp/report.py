"""The printed run summary: certified accuracy by radius, the abstentions, every other number with the
direction in which it is better, and, for text outputs, the smoothed answers beside their certificates.
(records.py writes and summarises the rows; this module only shows them.)"""

from __future__ import annotations

import math

import pandas as pd

from smoothgen_exp.records import valid_certificates

CURVES = {"certified_accuracy": "certified accuracy ↑", "certified_fraction": "certified fraction ↑",
          "nominal_certified_accuracy": "NOMINAL certified accuracy (not a certificate)",
          "nominal_certified_fraction": "NOMINAL certified fraction (not a certificate)"}
LOWER_IS_BETTER = ("abstain", "time", "seconds", "samples", "error", "bound_tv", "bound_w", "bound_lip",
                   "bound_harm", "bound_eps_out", "bound_interval", "bound_mcdiarmid", "event", "attack_",
                   "violation", "_mse", "halfwidth")


NEITHER = ("items", "world_size", "n", "n0", "alpha", "sigma", "confidence", "max_certifiable_radius",
           "nominal_max_certifiable_radius", "target_radius", "mean_diag_rho", "attack_within_radius",
           "attack_unmoved_baseline", "attack_unmoved_smoothed", "attack_reference_unstable_baseline",
           "attack_reference_unstable_smoothed",
           "mcdiarmid_n", "alpha_per_bound", "mean_diag_center_radius", "mean_diag_center_frac", "mean_diag_diameter",
           "worth", "give_up_alpha")


def metric_arrow(key: str) -> str:
    """↑ when a higher value is better, ↓ when lower is, "" for settings and counts that are neither (a
    `nominal_` key as its plain one)."""
    key = key.removeprefix("nominal_")
    if key in NEITHER or key.startswith("items") or key.endswith("_items"):
        return ""
    if key.startswith("retention") or "certified_accuracy" in key or "certified_fraction" in key:
        return "↑"
    fid = "fid" in key.split("_")               # a token: "confidence" holds the letters f, i, d too
    return "↓" if fid or any(t in key for t in LOWER_IS_BETTER) else "↑"


def _print_answers(console, rows: pd.DataFrame, examples: int) -> None:
    """The smoothed answers of the first items, each beside what its row certifies: the radius of that
    very answer (certified_text for certified decoding), the radius of the vote's class where the shown
    answer is another aggregator's (token_average: SPEC C1 certifies the vote of single generations, not
    the averaged text) or not the certified class, NOMINAL where the certificate is not valid (`valid_certificates`:
    its assumptions fail, or a row does not say), or the reason it abstains. Model text is escaped: it is never read as rich markup."""
    from rich.markup import escape
    from rich.table import Table

    if not len(rows):
        return
    table = Table(title=f"smoothed answers, {min(examples, len(rows))} of {len(rows)} items", header_style="bold")
    for col in ("item", "condition", "smoothed answer", "certificate"):
        table.add_column(col)
    shown = rows.head(examples)
    for (_, series), valid in zip(shown.iterrows(), valid_certificates(shown), strict=True):
        r = {k: None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
             for k, v in series.items()}
        answer = r.get("certified_text") or r.get("output_text")
        label = "radius" if valid else "NOMINAL radius"          # the summary's own rule (valid_certificates)
        if r.get("certified") is None or not bool(r["certified"]):
            cert = f"abstains: {r['abstain_reason']}" if r.get("abstain_reason") else "no class certificate"
        elif r.get("radius") is None:          # a bound certificate (center smoothing): its bound_* columns
            cert = f"{'bounds' if valid else 'NOMINAL bounds'} in the bound_* columns"
        elif r.get("certifier") == "feature":   # the smoothed feature's cosine to its direction, not this text
            cert = f"{label} {r['radius']:.3g} for the smoothed feature's cosine, not this answer's text"
        elif r.get("certified_text") is None and r.get("aggregator") in ("token_average", "TokenAverage"):
            # the radius is the vote's (single noisy generations), not this aggregator's text (SPEC C1 vs C5)
            cert = f"{label} {r['radius']:.3g} for the vote's class {r['prediction']}, not {r['aggregator']}'s text"
        elif r.get("certified_text") is None and None not in (r.get("smoothed_class"), r.get("prediction")) \
                and r["smoothed_class"] != r["prediction"]:
            cert = f"{label} {r['radius']:.3g} for class {r['prediction']}, not this answer's"
        else:
            cert = f"{label} {r['radius']:.3g}"
        if r.get("certified") and r.get("correct") is not None and not bool(r["correct"]):   # the wrong class
            cert += f" (certifies class {r['prediction']}, the label is {r['label']})"
        table.add_row(*(escape(str(v)[:60]) for v in (r.get("item_id"), r.get("condition"), answer)), escape(cert))
    console.print(table)


def ceiling_mark(summary) -> tuple[float, str]:
    """(the largest radius a run can certify, how a certified curve read above it is marked): its ceiling,
    or a sequential run's target radius, which is all it certifies. `summary` is a dict or a table row."""
    def number(key):
        value = summary.get(key)
        return math.inf if value is None or value != value else float(value)     # missing, null or NaN

    ceiling = min(number("max_certifiable_radius"), number("nominal_max_certifiable_radius"))
    target = number("target_radius")
    return min(ceiling, target), " (above the target radius)" if target < ceiling else " (above the ceiling)"


def print_summary(summary: dict, title: str, records: pd.DataFrame | None = None, examples: int = 5,
                  run_dir=None) -> None:
    """The summary as two small tables: certified accuracy by radius, then every other number that is
    finite (a mean over no items, an infinite bound: summary.json holds null, and they are not shown, so a
    run and its `already complete` rerun print the same); for text outputs (language models), first the
    smoothed answers of a few items with their certificates. The run directory follows on a line of its
    own (in a narrow table's title it wrapped mid-word)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if records is not None and "output_text" in records:
        _print_answers(console, records[(records.variant == "smoothed") & records.output_text.notna()], examples)
    reach, mark = ceiling_mark(summary)
    for key, label in ((k, v) for k, v in CURVES.items() if k in summary):
        table = Table(title=title, header_style="bold")
        table.add_column("radius ≥", justify="right")
        table.add_column(label, justify="right")
        for r, acc in summary[key].items():      # 0 by arithmetic above what n can certify: say so
            acc = math.nan if acc is None else acc       # strict JSON writes NaN as null
            table.add_row(r, f"{acc:.3f}" + (mark if float(r) > reach and not acc else ""))
        console.print(table)
    smoothed = records[records.variant == "smoothed"] if records is not None and "abstained" in records else None
    if smoothed is not None and (why := smoothed.abstain_reason[smoothed.abstained.fillna(False).astype(bool)]).size:
        console.print(f"abstained: {len(why)} of {len(smoothed)} items (" + "; ".join(
            f"{k}: {v}" for k, v in why.fillna("no reason given").value_counts().items()) + ")")
    if not summary.get("certificate_valid", True):
        console.print("[bold red]WARNING: some rows rest on assumptions that fail (input-dependent noise, "
                      "Sukenik et al. 2022; or the symmetric oracle-error model) or, written before rows recorded "
                      "it, do not say whether they hold, so their radii and bounds are NOT certificates. They are "
                      "reported only as nominal_*.[/]")
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or key in ("n0", "n", "alpha", "sigma"):
            continue
        if not math.isfinite(value):      # summary.json holds null (strict JSON), so a rerun shows none either
            continue
        arrow = metric_arrow(key)
        table.add_row(f"{key} {arrow}", f"{value:.4g}")
    console.print(table)
    if run_dir is not None:
        console.print(f"run directory: {run_dir}", soft_wrap=True, highlight=False)
