"""``diffoseg_benchmark``: tables and plots over datasets x configurations x folds.

Reads the validation summaries the trainer writes,

    $diffoseg_results/<Dataset>/<TR>__<P>__<C>/fold_<f>/stage1/validation/summary.json   (sample metrics)
    $diffoseg_results/<Dataset>/<TR>__<P>__<C>/fold_<f>/stage2/validation/summary.json   (per-rater metrics)

merges the two stages per fold (a Stage II key that also exists in Stage I becomes
"stage2/<key>"), and writes benchmark.csv / benchmark.md (mean +- sample std over folds) and
benchmark.png. Missing summaries are reported and skipped, never filled in. An inter-rater
reference row (leave-one-rater-out on the raw labels, see inter_rater.py) is added per dataset.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from diffoseg_auto.evaluation.inter_rater import inter_rater_reference
from diffoseg_auto.evaluation.metrics import MODES
from diffoseg_auto.utilities.file_ops import atomic_write, atomic_write_text, load_json, save_json

__all__ = ["inter_rater_reference", "load_fold_metrics", "collect_results", "aggregate", "dataframe_to_markdown",
           "benchmark", "main"]

HEADLINE = ("GED", "Dice_soft", "Dice_max", "Dice_max_reverse", "Dice_match", "Dice_consensus_majority",
            "Dice_consensus_soft", "Dice_rater_strict", "Dice_rater_dpersona")
INTER_RATER = "inter-rater reference"


def _summary_path(model_folder: Path, fold: int, stage: int) -> Path:
    return model_folder / f"fold_{fold}" / f"stage{stage}" / "validation" / "summary.json"


def load_fold_metrics(model_folder: str | Path, fold: int, log=print) -> tuple[dict, dict | None] | None:
    """Merged Stage I + Stage II metrics of one fold, and the Stage II summary (for the matrix).

    Returns None when neither summary exists. Each missing file is reported through ``log``.
    """
    model_folder = Path(model_folder)
    summaries = {}
    for stage in (1, 2):
        path = _summary_path(model_folder, fold, stage)
        if path.is_file():
            summaries[stage] = load_json(path)
        else:
            trainer, plans, cfg = _parse_model_folder(model_folder.name)
            log(f"missing: {path} -- create it with `diffoseg_train {model_folder.parent.name} {cfg} {fold} "
                f"-tr {trainer} -p {plans} --val` (Stage {'I' if stage == 1 else 'II'} validation); "
                "skipped, no numbers are made up.")
    if not summaries:
        return None
    merged = dict(summaries.get(1, {}).get("metrics", {}))
    for k, v in summaries.get(2, {}).get("metrics", {}).items():
        merged[f"stage2/{k}" if k in merged else k] = v
    return merged, summaries.get(2, summaries.get(1))


def _parse_model_folder(name: str) -> tuple[str, str, str]:
    parts = name.split("__")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else (name, "", "")


def collect_results(results_root: Path, datasets: list[str], configurations: list[str], folds: list[int],
                    trainer: str, plans: str, log=print) -> tuple[pd.DataFrame, dict]:
    """Long table (dataset, configuration, fold, metric, value) and per (dataset, configuration) the
    fold-averaged rater x prompt matrix with its rater names."""
    rows, matrices = [], {}
    for ds in datasets:
        for cfg in configurations:
            model_folder = Path(results_root) / ds / f"{trainer}__{plans}__{cfg}"
            if not model_folder.is_dir():
                log(f"missing: {model_folder} -- train it with `diffoseg_train {ds} {cfg} <fold>`; skipped.")
                continue
            mats, raters = [], None
            for f in folds:
                got = load_fold_metrics(model_folder, f, log)
                if got is None:
                    continue
                metrics, summary = got
                rows += [{"dataset": ds, "configuration": cfg, "fold": f, "metric": k, "value": v}
                         for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
                if summary.get("rater_prompt_dice_matrix") is not None:
                    mats.append(np.asarray(summary["rater_prompt_dice_matrix"], dtype=float))
                    raters = summary.get("raters")
            if mats:
                matrices[(ds, cfg)] = (np.nanmean(np.stack(mats), 0), raters)
    df = pd.DataFrame(rows, columns=["dataset", "configuration", "fold", "metric", "value"])
    df["value"] = df["value"].astype(float)
    return df, matrices


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for a single fold) over folds per dataset x configuration x metric."""
    if df.empty:
        return pd.DataFrame(columns=["dataset", "configuration", "metric", "mean", "std", "num_folds"])
    g = df.groupby(["dataset", "configuration", "metric"], sort=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "num_folds": g.count()}).reset_index()
    return out


def _metric_order(metrics) -> list[str]:
    metrics = list(dict.fromkeys(metrics))
    head = [m for m in HEADLINE if m in metrics]
    return head + sorted(m for m in metrics if m not in head)


def _fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def dataframe_to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table of a DataFrame (index as first column); cells are str()-ed."""
    index_name = df.index.name or ""
    header = [index_name] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"]
    for idx, row in df.iterrows():
        cells = [str(idx)] + ["" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def benchmark_markdown(table: pd.DataFrame) -> str:
    """One section per dataset: rows = metric, columns = configuration (mean ± std over folds)."""
    parts = ["# Benchmark\n", "Mean ± sample std over folds (inter-rater reference: mean ± std over cases). "
             "Metric definitions: documentation/benchmarking.md.\n"]
    for ds, sub in table.groupby("dataset", sort=False):
        cells = sub.assign(cell=[_fmt(m, s) for m, s in zip(sub["mean"], sub["std"])])
        wide = cells.pivot(index="metric", columns="configuration", values="cell")
        wide = wide.reindex(_metric_order(wide.index))[list(dict.fromkeys(sub["configuration"]))].fillna("")
        wide.index.name = "metric"
        folds = sub.drop_duplicates("configuration").set_index("configuration")["num_folds"]
        parts.append(f"## {ds}\n")
        parts.append("folds: " + ", ".join(f"{c}: {int(n) if not math.isnan(n) else '-'}" for c, n in folds.items()) + "\n")
        parts.append(dataframe_to_markdown(wide) + "\n")
    return "\n".join(parts)


def _inter_rater_rows(ds: str, ref: dict) -> list[dict]:
    return [{"dataset": ds, "configuration": INTER_RATER, "metric": k, "mean": v, "std": ref["metrics_std"].get(k, np.nan),
             "num_folds": np.nan} for k, v in ref["metrics"].items()]


def _prediction_folders(model_folder: Path, fold: int) -> list[Path]:
    """The fold's validation prediction folders: Stage I (samples, consensus), then Stage II (raters)."""
    found = []
    for stage in (1, 2):
        f = model_folder / f"fold_{fold}" / f"stage{stage}" / "validation"
        if any((f / sub).is_dir() for sub in ("samples", "consensus", "raters")):
            found.append(f)
    return found


def case_figures(raw_folder: Path, pred_folders: Path | list[Path], out_dir: Path, prefix: str, max_cases: int = 3,
                 log=print) -> list[Path]:
    """Sample-grid figures for the first ``max_cases`` predicted cases.

    ``pred_folders``: one prediction folder or several (e.g. Stage I and Stage II validation); the
    samples come from the first that has them, the per-rater predictions likewise."""
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.evaluation.figures import plot_case_grid
    from diffoseg_auto.evaluation.prediction_folder import list_predicted_cases, load_prediction, load_reference

    folders = [Path(pred_folders)] if isinstance(pred_folders, (str, Path)) else [Path(f) for f in pred_folders]
    ds = RawDataset(raw_folder)
    images = ds.image_files_by_case("Tr")
    cases = sorted({c for f in folders for c in list_predicted_cases(f, ds.file_ending)})
    written = []
    for case in cases[:max_cases]:
        if case not in images:
            log(f"no image for case '{case}' in {raw_folder / 'imagesTr'}; figure skipped.")
            continue
        labels, mask, props, ref_file = load_reference(raw_folder / "labelsTr", ds.raters, case, ds.file_ending)
        samples = rater_preds = None
        for f in folders:
            s, _, r = load_prediction(f, ds.raters, case, ds.file_ending, props, ref_file)
            samples = samples if samples is not None else s
            rater_preds = rater_preds if rater_preds is not None else r
        image, _, _, _ = ds.load_case(case, images[case])
        out = out_dir / f"{prefix}__{case}.png"
        plot_case_grid(image, labels, samples, rater_preds, out, rater_names=ds.raters, rater_mask=mask,
                       title=f"{prefix} {case}")
        written.append(out)
    return written


def benchmark(datasets: list[str], configurations: list[str], folds: list[int], output_folder: str | Path | None = None,
              trainer: str = "DiffOSegTrainer", plans: str = "DiffOSegPlans", figures: bool = False,
              inter_rater_details: bool = False, mode: str | None = None, log=print) -> pd.DataFrame:
    """Write benchmark.csv / benchmark.md / benchmark.png (and figures/) and return the aggregated table."""
    from diffoseg_auto.paths import raw_root, results_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    res_root = results_root()
    names = [resolve_dataset_name(d) for d in datasets]
    out = Path(output_folder) if output_folder is not None else res_root / "benchmark"
    long, matrices = collect_results(res_root, names, configurations, folds, trainer, plans, log)
    table = aggregate(long)
    if mode is None:  # score the raters as the models were scored
        mode = "strict"
        for ds in names:
            for cfg in configurations:
                for f in folds:
                    for stage in (1, 2):
                        p = _summary_path(res_root / ds / f"{trainer}__{plans}__{cfg}", f, stage)
                        if p.is_file():
                            mode = load_json(p).get("mode", mode)
    extra, inter = [], {}
    for ds in names:
        raw = raw_root() / ds
        if not (raw / "dataset.json").is_file():
            log(f"missing: {raw}/dataset.json -- the inter-rater reference needs the raw labels; row skipped.")
            continue
        try:
            inter[ds] = inter_rater_reference(raw, mode=mode)
        except RuntimeError as e:
            log(f"inter-rater reference for {ds} skipped: {e}")
            continue
        extra += _inter_rater_rows(ds, inter[ds])
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True) if not table.empty else pd.DataFrame(extra)
    if table.empty:
        log("nothing to tabulate: no validation summary and no raw labels were found.")
        return table
    table = table.sort_values(["dataset"], kind="stable").reset_index(drop=True)
    atomic_write(out / "benchmark.csv", lambda p: table.to_csv(p, index=False))
    atomic_write_text(out / "benchmark.md", benchmark_markdown(table))
    if inter_rater_details:
        for ds, ref in inter.items():
            save_json(ref, out / f"inter_rater__{ds}.json")
    _plot(table, matrices, out / "benchmark.png")
    if figures:
        for ds in names:
            for cfg in configurations:
                for f in folds:
                    pf = _prediction_folders(res_root / ds / f"{trainer}__{plans}__{cfg}", f)
                    if not pf:
                        log(f"no validation predictions for {ds} {cfg} fold {f} (samples/, consensus/ or raters/ "
                            "under fold_<f>/stage*/validation); run `diffoseg_train ... --val` or diffoseg_predict; figures skipped.")
                        continue
                    case_figures(raw_root() / ds, pf, out / "figures", f"{ds}__{cfg}__fold{f}", log=log)
    log(f"written: {out / 'benchmark.csv'}, {out / 'benchmark.md'}, {out / 'benchmark.png'}")
    return table


def _plot(table: pd.DataFrame, matrices: dict, out_png: Path) -> None:
    from diffoseg_auto.evaluation.figures import plot_benchmark

    panels = []
    for ds, sub in table.groupby("dataset", sort=False):
        bars: dict[str, dict] = {}
        for _, r in sub[sub["metric"].isin(HEADLINE)].iterrows():
            bars.setdefault(r["configuration"], {})[r["metric"]] = (r["mean"], r["std"])
        order = _metric_order(m for c in bars for m in bars[c])
        mats = [(cfg, m) for (d, cfg), m in matrices.items() if d == ds]
        panel = {"dataset": ds, "bars": bars, "metrics": order, "matrix": None}
        if mats:
            cfg, (m, raters) = mats[0]
            panel.update(matrix=m, raters=raters, matrix_label=f"rater x prompt Dice ({cfg}, mean over folds)")
        panels.append(panel)
    plot_benchmark(panels, out_png)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Tables (csv, md) and plots of the validation results of trained models "
                                            "over datasets, configurations and folds, with an inter-rater reference row.")
    p.add_argument("-d", nargs="+", required=True, help="dataset ids or names")
    p.add_argument("-c", nargs="+", required=True, help="configurations, e.g. 2d 3d_fullres")
    p.add_argument("-f", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-o", default=None, help="output folder (default: $diffoseg_results/benchmark)")
    p.add_argument("-tr", nargs="+", default=["DiffOSegTrainer"],
                   help="trainer name(s) (default: DiffOSegTrainer). Several (e.g. -tr DiffOSegTrainer "
                        "ConsensusUNetTrainer MultiHeadUNetTrainer ProbUNetTrainer) write the method comparison "
                        "(methods x metrics with the trivial and inter-rater rows, method_comparison.md/.csv/.json, "
                        "bar charts); see documentation/benchmarking.md")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default: DiffOSegPlans)")
    p.add_argument("--figures", action="store_true",
                   help="also draw sample grids (image, raters, samples, per-rater predictions) for a few validation cases")
    p.add_argument("--inter_rater", action="store_true",
                   help="also write inter_rater__<dataset>.json with per-case and per-rater leave-one-out agreement "
                        "(the inter-rater row itself is always in the tables)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="metric mode of the inter-rater row (default: the mode of the validation summaries, else strict)")
    p.add_argument("--compare", action="store_true", help="the method comparison also for a single -tr")
    return p


def main() -> None:
    args = build_parser().parse_args()
    if len(args.tr) > 1 or args.compare:
        from diffoseg_auto.evaluation.comparison_report import compare_methods

        compare_methods(args.d, args.c, args.f, args.tr, args.o, args.p, figures=args.figures)
        return
    table = benchmark(args.d, args.c, args.f, args.o, args.tr[0], args.p, figures=args.figures,
                      inter_rater_details=args.inter_rater, mode=args.mode)
    if not table.empty:
        print(benchmark_markdown(table))


if __name__ == "__main__":
    main()
