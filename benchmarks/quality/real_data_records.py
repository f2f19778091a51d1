"""real_data.py records: a compare run's scored folds kept as small files in the repository, and the methods x
metrics tables merged from them.

A converged 5-fold comparison takes more CPU hours than one session has, and a session's work folder (models,
predictions) does not survive it. ``compare --record DIR`` therefore writes, after every method of a fold, that
fold's scored rows (the method's, the trivial and the inter-rater rows; the long table of diffoseg_benchmark) and
what produced them:

    DIR/<Dataset>/<configuration>/fold_<f>.csv    dataset, configuration, method, fold, num_cases, mode, metric, value
    DIR/<Dataset>/<configuration>/fold_<f>.json   revision, command, date, raters, the methods' training entries
    DIR/<Dataset>/<configuration>/curve_fold_<f>.csv   with --curves: the fold's learning-curve points (long table
                                                       of learning_curves.collect_curves)

Committed, the records of several sessions add up: ``real_data.py records DIR/<Dataset>/<configuration> ...`` merges
their folds into the same table ``compare`` writes (mean ± std over the recorded folds), and their curve points into
the learning-curve table. A fold recorded again replaces its record.

Every record file has one reader here (``read_fold_record``, ``read_fold_info``, ``read_curve_record``,
``read_test_summary``, ``read_test_per_case``, ``read_test_info``, ``read_test_curve``; ``read_record`` picks it by
the file's name): a record that is missing where its partner exists, empty, cut short (a CSV whose last line has
no end) or of the wrong shape raises ``RecordError``, one line naming the file and the fix
(documentation/robustness.md).
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas loads numpy: real_data.py sets one thread first
    import pandas as pd

from diffoseg_auto.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the readers (one per record file)

class RecordError(UserError):
    """A record file that is missing beside its partner, empty, cut short or of the wrong shape."""


FOLD_FIX = ("Restore it (git checkout), or delete the fold's fold_<f>.csv and fold_<f>.json and record "
            "the fold again with `real_data.py compare --record`.")
CURVE_FIX = ("Restore it (git checkout), or delete it and record the fold again with `real_data.py "
             "compare --curves --record`.")
TEST_FIX = ("Restore it (git checkout), or delete the record's test.csv, test_per_case.csv and test.json "
            "and record the methods again with `real_data.py test --record`.")
TEST_CURVE_FIX = ("Restore it (git checkout), or delete it and record the methods again with `real_data.py "
                  "test --curves --record`.")
TEST_CURVE_KEYS = ["method", "stage", "fraction", "epoch", "seconds", "cases"]


def _read_csv(path: Path, what: str, columns: list[str], fix: str, exact: bool = True) -> "pd.DataFrame":
    """The table in ``path``, whose columns are ``columns`` (``exact``) or include them; RecordError otherwise."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: does not exist. {fix}")
    data = path.read_bytes()
    if not data.strip():
        raise RecordError(f"{path}: is empty. {fix}")
    if not data.endswith(b"\n"):  # pandas ends every line it writes: an interrupted copy or a cut file does not
        raise RecordError(f"{path}: cut short (its last line has no end). {fix}")
    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise RecordError(f"{path}: not a CSV table ({str(e).strip().splitlines()[-1]}). {fix}") from None
    got = list(table.columns)
    fits = got == columns if exact else set(columns) <= set(got)
    if not fits:
        raise RecordError(f"{path}: not {what} (columns {got}, expected {columns}{'' if exact else ' and more'}). {fix}")
    return table


def _read_json(path: Path, what: str, fix: str, shape: dict[str, type]) -> dict:
    """The JSON object in ``path`` whose entries named in ``shape`` (where present) have those types."""
    from diffoseg_auto.utilities.file_ops import load_json

    info = load_json(path, fix)  # missing, empty or not JSON: one line naming the file and the fix
    if not isinstance(info, dict):
        raise RecordError(f"{path}: holds a JSON {type(info).__name__}, not {what}. {fix}")
    bad = [k for k, t in shape.items() if k in info and not isinstance(info[k], t)]
    if bad:
        raise RecordError(f"{path}: not {what} ({', '.join(repr(k) for k in bad)} of the wrong type). {fix}")
    return info


def read_fold_record(path: Path) -> "pd.DataFrame":
    """fold_<f>.csv: the fold's scored rows (method_comparison.COLUMNS)."""
    from diffoseg_auto.evaluation.method_comparison import COLUMNS

    return _read_csv(path, "a fold record", COLUMNS, FOLD_FIX)


def read_fold_info(path: Path) -> dict:
    """fold_<f>.json: the fold's provenance (command, revision, date, raters, the methods' entries)."""
    return _read_json(path, "a fold record's provenance", FOLD_FIX, {"raters": list, "methods": dict})


def read_curve_record(path: Path) -> "pd.DataFrame":
    """curve_fold_<f>.csv: the fold's learning-curve points (learning_curves.CURVE_COLUMNS)."""
    from diffoseg_auto.evaluation.learning_curves import CURVE_COLUMNS

    return _read_csv(path, "a curve record", CURVE_COLUMNS, CURVE_FIX)


def read_test_summary(path: Path) -> "pd.DataFrame":
    """test.csv: the held-out test's summary (real_data_test_table.SUMMARY_COLUMNS)."""
    from benchmarks.quality.real_data_test_table import SUMMARY_COLUMNS

    return _read_csv(path, "a held-out test summary", SUMMARY_COLUMNS, TEST_FIX)


def read_test_per_case(path: Path) -> "pd.DataFrame":
    """test_per_case.csv: method, mode, case and one column per metric."""
    from benchmarks.quality.real_data_test_table import KEYS

    return _read_csv(path, "a held-out test's per-case table", KEYS, TEST_FIX, exact=False)


def read_test_info(path: Path) -> dict:
    """test.json: the test sample and each method's provenance."""
    info = _read_json(path, "a held-out test record", TEST_FIX, {"sample": dict, "methods": dict})
    if not isinstance(info.get("sample", {}).get("cases"), list):
        raise RecordError(f"{path}: not a held-out test record (no list of the sample's cases). {TEST_FIX}")
    return info


def read_test_curve(path: Path) -> "pd.DataFrame":
    """test_curve.csv: one line per method and learning-curve checkpoint."""
    return _read_csv(path, "a held-out test's curve record", TEST_CURVE_KEYS, TEST_CURVE_FIX, exact=False)


def read_record(path: Path):
    """The reader of the record file ``path``, picked by its name."""
    name = Path(path).name
    if name.startswith("curve_fold_"):
        return read_curve_record(path)
    if name.startswith("fold_"):
        return read_fold_info(path) if name.endswith(".json") else read_fold_record(path)
    readers = {"test.csv": read_test_summary, "test_per_case.csv": read_test_per_case, "test.json": read_test_info,
               "test_curve.csv": read_test_curve}
    if name not in readers:
        raise ValueError(f"{path}: not a record file name")
    return readers[name](path)


def revision() -> str:
    """The checkout's short revision; "unknown" outside a git checkout or without git (a lent GPU machine)."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "unknown"
    except FileNotFoundError:
        return "unknown"


def record_folder(record_dir: Path, dataset: str, configuration: str) -> Path:
    return Path(record_dir) / dataset / configuration


def recorded_methods(record_dir: Path, dataset: str, configuration: str, fold: int) -> set[str]:
    """The method rows that the fold's record holds (empty when it has none): a later session, whose machine no
    longer has the run folders, reuses a fold recorded for every method instead of training it again."""
    csv = record_folder(record_dir, dataset, configuration) / f"fold_{fold}.csv"
    return set(read_fold_record(csv)["method"]) if csv.is_file() else set()


REFERENCE_METHODS = ("all-empty", "raters' majority repeated", "raters' STAPLE repeated", "inter-rater")  # scored from the labels alone


def record_fold(record_dir: Path, per_fold: "pd.DataFrame", fold: int, info: dict) -> list[Path]:
    """Write the rows of ``fold`` of each (dataset, configuration) in ``per_fold`` (method_comparison_per_fold.csv)
    and ``info`` to their record files; returns the CSV files written. A method already recorded for the fold
    and absent from ``per_fold`` is kept (runs of one method each add up, across sessions); a method in both is
    replaced, and the earlier run's provenance stays in the JSON's ``earlier_runs``."""
    import pandas as pd

    from diffoseg_auto.utilities.file_ops import atomic_write, save_json

    rows = per_fold[per_fold["fold"] == fold]
    written = []
    for (ds, cfg), sub in rows.groupby(["dataset", "configuration"], sort=False):
        folder = record_folder(record_dir, ds, cfg)
        csv, meta = folder / f"fold_{fold}.csv", folder / f"fold_{fold}.json"
        entry = {**info, "revision": revision(), "date": datetime.date.today().isoformat()}
        if csv.is_file():
            old = read_fold_record(csv)
            if set(old["num_cases"]) != set(sub["num_cases"]):
                raise RecordError(f"{csv}: recorded on {sorted(set(old['num_cases']))} cases, this run on "
                                 f"{sorted(set(sub['num_cases']))}; a fold's methods must be scored on the same "
                                 "cases (delete the record to start it again)")
            kept = old[~old["method"].isin(set(sub["method"]))]  # the reference rows too, when this run has them
            if len(kept.loc[~kept["method"].isin(REFERENCE_METHODS)]):
                before = read_fold_info(meta)
                entry["methods"] = {**before.get("methods", {}), **entry.get("methods", {})}
                for k, v in before.items():  # e.g. the planner's notes of a DiffOSeg run, when this run has none
                    if k != "earlier_runs":
                        entry.setdefault(k, v)
                earlier = before.pop("earlier_runs", [])
                if any(before.get(k) != entry.get(k) for k in ("command", "revision", "date")):
                    # one compare run records each method as it finishes: only another run's provenance is kept
                    earlier.append({k: before.get(k) for k in ("command", "revision", "date")}
                                   | {"kept_methods": sorted(set(kept["method"]) - set(REFERENCE_METHODS))})
                if earlier:
                    entry["earlier_runs"] = earlier
            sub = pd.concat([kept, sub], ignore_index=True)
        atomic_write(csv, lambda p, sub=sub: sub.to_csv(p, index=False))
        save_json(entry, meta)
        written.append(csv)
    return written


def record_curve(record_dir: Path, dataset: str, configuration: str, fold: int, curve: "pd.DataFrame") -> Path | None:
    """The fold's learning-curve points (collect_curves' long table) as curve_fold_<f>.csv, keeping the recorded
    points of methods that ``curve`` does not have (as record_fold does); None when it has none."""
    from diffoseg_auto.utilities.file_ops import atomic_write

    rows = curve[curve["fold"] == fold]
    if rows.empty:
        return None
    csv = record_folder(record_dir, dataset, configuration) / f"curve_fold_{fold}.csv"
    rows = with_other_methods(csv, rows)
    atomic_write(csv, lambda p: rows.to_csv(p, index=False))
    return csv


def with_other_methods(csv: Path, rows: "pd.DataFrame") -> "pd.DataFrame":
    """``rows`` and the rows of the record ``csv`` (when it exists) of the methods that ``rows`` does not have."""
    import pandas as pd

    if not csv.is_file():
        return rows
    old = read_record(csv)
    return pd.concat([old[~old["method"].isin(set(rows["method"]))], rows], ignore_index=True)


def load_curves(folders: list[Path]) -> "pd.DataFrame":
    """Every recorded curve point of ``folders`` (empty when no fold was recorded with --curves)."""
    import pandas as pd

    from diffoseg_auto.evaluation.learning_curves import CURVE_COLUMNS

    parts = [read_curve_record(f) for f in sorted(p for folder in folders for p in Path(folder).glob("curve_fold_*.csv"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CURVE_COLUMNS)


def load_records(folders: list[Path]) -> tuple["pd.DataFrame", dict[str, list[str]], dict[str, dict]]:
    """(the long table of every recorded fold, dataset -> raters, 'dataset/configuration/fold' -> its info)."""
    import pandas as pd

    longs, raters, infos = [], {}, {}
    for folder in folders:
        # a fold is its .csv and .json: either one without the other is a broken record
        files = sorted({p.with_suffix(".csv") for p in Path(folder).glob("fold_*.*") if p.suffix in (".csv", ".json")})
        if not files:
            raise RecordError(f"{folder}: no fold_<f>.csv record. Give folders DIR/<Dataset>/<configuration> that "
                              "`real_data.py compare --record DIR` wrote.")
        for f in files:
            long = read_fold_record(f)
            info = read_fold_info(f.with_suffix(".json"))
            for ds in long["dataset"].unique():
                raters[ds] = info.get("raters", raters.get(ds, []))
            infos[f"{Path(folder).parent.name}/{Path(folder).name}/{f.stem}"] = info
            longs.append(long)
    return pd.concat(longs, ignore_index=True), raters, infos


def merged_markdown(folders: list[Path], brief: bool = False) -> str:
    """The method comparison of every recorded fold of ``folders``, and where each fold's numbers come from;
    ``brief``: strict mode only, without headings (for a marker block of results.md)."""
    from diffoseg_auto.evaluation.method_comparison import aggregate, comparison_markdown

    long, raters, infos = load_records(folders)
    folds = {ds: sorted(int(f) for f in sub["fold"].unique()) for ds, sub in long.groupby("dataset")}
    table = (comparison_markdown(aggregate(long), raters, folds, modes=("strict",), headings=False) if brief
             else comparison_markdown(aggregate(long), raters, folds))
    lines = [table, per_fold_markdown(long), "Records (fold: revision, date, command):", ""]
    lines += [f"- {k}: {v.get('revision', '?')}, {v.get('date', '?')}, `{v.get('command', '?')}`"
              for k, v in sorted(infos.items())]
    word = planner_word_markdown(infos)
    if word:
        lines += ["", word]
    curves = load_curves(folders)
    if not curves.empty:
        from diffoseg_auto.evaluation.learning_curves import aggregate_curves, curves_markdown

        lines += ["", "Learning curves (held-out, strict; mean ± std over the recorded folds that have the point):", "",
                  curves_markdown(aggregate_curves(curves))]
    return "\n".join(lines) + "\n"


def per_fold_markdown(long: "pd.DataFrame", metric: str = "GED") -> str:
    """Strict ``metric`` of every method on every recorded fold (methods x folds), per dataset and configuration:
    which method wins on which fold, not only on the mean."""
    parts = []
    strict = long[(long["mode"] == "strict") & (long["metric"] == metric)]
    for (ds, cfg), sub in strict.groupby(["dataset", "configuration"], sort=False):
        folds = sorted(sub["fold"].unique())
        cells = sub.set_index(["method", "fold"])["value"]
        lines = [f"{metric} per fold (strict), {ds}, {cfg}:", "",
                 "| method | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---|" + "---:|" * len(folds)]
        for m in dict.fromkeys(sub["method"]):
            lines.append(f"| {m} | " + " | ".join(f"{cells[(m, f)]:.3f}" if (m, f) in cells.index else ""
                                                  for f in folds) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def planner_word_markdown(infos: dict[str, dict]) -> str:
    """Per recorded time-budget fold, DiffOSeg's training time (the epochs' seconds of its final checkpoints)
    against the hours asked and the planner's estimate: the planner's word (goal: within 15% of the hours).
    Empty when no record has a time budget."""
    lines = []
    for key, info in sorted(infos.items()):
        hours = info.get("time_budget_hours")
        trained = ((info.get("methods") or {}).get("DiffOSegTrainer") or {}).get("trained") or {}
        if not hours or not trained:
            continue
        taken = sum(v["epoch_seconds"] for v in trained.values()) / 3600
        planned = (info.get("time_budget") or {}).get("estimated_training_hours")
        lines.append(f"| {key} | {hours:g} | {'' if planned is None else f'{planned:.3f}'} | {taken:.3f} | "
                     f"{100 * (taken / hours - 1):+.0f}% |")
    if not lines:
        return ""
    head = ["The planner's word (DiffOSeg's epochs in its final checkpoints against the hours asked; goal: within "
            "15%):", "", "| record | hours asked | planned h | taken h | taken vs asked |", "|---|---:|---:|---:|---:|"]
    return "\n".join(head + lines) + "\n"


def curves_figure(folders: list[Path], path: Path) -> bool:
    """The merged learning curves of ``folders`` (mean ± std over the recorded folds) as one figure, as compare
    --curves draws a single run's; False (nothing written) when no fold was recorded with --curves."""
    from diffoseg_auto.evaluation.learning_curves import aggregate_curves, plot_curves

    curves = load_curves(folders)
    if curves.empty:
        return False
    folds = ", ".join(str(f) for f in sorted(curves["fold"].unique()))
    plot_curves(aggregate_curves(curves), path, title=f"{', '.join(Path(f).name for f in folders)}: folds {folds}")
    return True


def records(a: argparse.Namespace) -> None:
    folders = [Path(f) for f in a.folders]
    text = merged_markdown(folders, brief=a.brief)
    print(text)
    if a.figure and not curves_figure(folders, Path(a.figure)):
        raise SystemExit(f"--figure: no curve_fold_<f>.csv in {', '.join(map(str, folders))}; record folds with "
                         "compare --curves --record")
    if a.md:
        from diffoseg_auto.utilities.file_ops import atomic_write_text

        atomic_write_text(Path(a.md), text)


def add_records_parser(sub) -> None:
    r = sub.add_parser("records", help="the method comparison merged from compare --record files",
                       description=__doc__.splitlines()[0])
    r.add_argument("folders", nargs="+", help="record folders DIR/<Dataset>/<configuration>")
    r.add_argument("--md", default=None, help="also write the merged tables to this file")
    r.add_argument("--brief", action="store_true",
                   help="strict mode only and no headings, for a marker block (benchmarks/lib/fill_markers.py)")
    r.add_argument("--figure", default=None, metavar="PNG",
                   help="also draw the recorded folds' learning curves (mean ± std over folds) into this file")
    r.set_defaults(func=records)


# ---------------------------------------------------------------- the held-out test's records (real_data.py test)

HELD_OUT_FILES = ("test.csv", "test_per_case.csv", "test.json", "test_curve.csv")


def held_out_record(record_dir: Path, dataset: str, configuration: str) -> tuple["pd.DataFrame", "pd.DataFrame", dict]:
    """(per-case rows, sample-level rows, info) that ``test --record`` kept for the dataset and configuration
    (empty tables and {} when none): test_per_case.csv, the sample-level numbers of test.csv and test.json."""
    import pandas as pd

    from benchmarks.quality.real_data_test_table import KEYS, SAMPLE_LEVEL_COLUMNS

    folder = record_folder(record_dir, dataset, configuration)
    summary, csv, meta = (folder / f for f in HELD_OUT_FILES[:3])
    if not any(f.is_file() for f in (summary, csv, meta)):  # record_held_out writes the three together
        return pd.DataFrame(columns=KEYS), pd.DataFrame(columns=SAMPLE_LEVEL_COLUMNS), {}
    per_case, table, info = read_test_per_case(csv), read_test_summary(summary), read_test_info(meta)
    sample = table[~table["metric"].isin(per_case.columns)].rename(columns={"mean": "value"})
    return per_case, sample[SAMPLE_LEVEL_COLUMNS].reset_index(drop=True), info


def same_sample_or_exit(recorded: dict, info: dict, folder: Path) -> None:
    """SystemExit naming the record when its test sample (``recorded``, its test.json) is not ``info``'s."""
    old, new = recorded.get("sample", {}), info["sample"]
    if recorded and old.get("cases") != new["cases"]:
        raise SystemExit(f"{folder / HELD_OUT_FILES[2]}: recorded on another test sample (seed {old.get('seed')}, "
                         f"{len(old.get('cases', []))} cases) than this run (seed {new['seed']}, {len(new['cases'])} "
                         "cases); every row must be scored on the same cases (run with that --seed and --test_sample, "
                         "or delete the record to start it again)")


def record_held_out(record_dir: Path, per_case: "pd.DataFrame", sample_level: "pd.DataFrame", info: dict,
                    methods: dict[str, dict]) -> Path:
    """Keep this run's rows (per case and sample level: its methods' and the reference rows) in DIR/<Dataset>/
    <configuration>/, replacing those rows of an earlier record and keeping the other methods' rows, so that runs
    of one method each add up across sessions; test.csv is the summary of everything kept (mean ± standard error
    over the cases), test.json the sample and each method's provenance (``methods``: label -> its entry, with
    command, revision and date). A record of another test sample is refused: every row must be scored on the
    same cases. Returns test.csv."""
    import pandas as pd

    from diffoseg_auto.utilities.file_ops import atomic_write, save_json
    from benchmarks.quality.real_data_test_table import summary_table

    dataset, configuration = info["dataset"], info["configuration"]
    _, old_sample, old_info = held_out_record(record_dir, dataset, configuration)
    folder = record_folder(record_dir, dataset, configuration)
    same_sample_or_exit(old_info, info, folder)
    here = set(per_case["method"])
    per_case = with_other_methods(folder / HELD_OUT_FILES[1], per_case)
    sample_level = pd.concat([old_sample[~old_sample["method"].isin(here)], sample_level], ignore_index=True)
    entry = {**old_info, **info, "methods": {**old_info.get("methods", {}), **methods}}
    csv = folder / HELD_OUT_FILES[0]
    atomic_write(folder / HELD_OUT_FILES[1], lambda p: per_case.to_csv(p, index=False, float_format="%.6g"))
    summary = summary_table(per_case, sample_level, dataset, configuration)
    atomic_write(csv, lambda p: summary.to_csv(p, index=False))
    save_json(entry, folder / HELD_OUT_FILES[2])
    return csv


def record_held_out_curve(record_dir: Path, dataset: str, configuration: str, curve: "pd.DataFrame") -> Path | None:
    """The test's learning-curve points (one line per method and checkpoint) as test_curve.csv, keeping the
    recorded points of methods that ``curve`` does not have; None when it has none."""
    from diffoseg_auto.utilities.file_ops import atomic_write

    if curve.empty:
        return None
    csv = record_folder(record_dir, dataset, configuration) / HELD_OUT_FILES[3]
    curve = with_other_methods(csv, curve)
    atomic_write(csv, lambda p: curve.to_csv(p, index=False))
    return csv
