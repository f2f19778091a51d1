"""benchmarks/: every tool's --help runs in a subprocess from the repository root, by path and with `python -m` (as
a user calls it), and every benchmark command written in a fenced code block of benchmarks/README.md or
documentation/results.md parses with that tool's own parser (the tool and subcommand exist, the options exist, the
values have the right types). Nothing is benchmarked."""
from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# tool (its path under benchmarks/) -> its subcommands ([] : none)
TOOLS = {"speed/speed.py": ["preprocess", "train", "sampling", "profile", "prediction"],
         "speed/budget_replay.py": [], "speed/budget_word.py": [],
         "quality/toy_proof.py": ["run", "render"],
         "quality/real_data.py": ["compare", "test", "steps", "prompt_blocks", "budget_sweep", "records", "routes"],
         "quality/new_rater_proof.py": [], "quality/sampling_evidence.py": [], "quality/triage.py": [],
         "gpu/gpu_train_check.py": [], "gpu/gpu_compare.py": [], "gpu/check_imports.py": [],
         "lib/fill_markers.py": []}
HELP_CASES = [(tool, [sub] if sub else []) for tool, subs in TOOLS.items() for sub in [None, *subs]]
DOCUMENTS = [BENCHMARKS / "README.md", ROOT / "documentation" / "results.md"]
# the lab notebook's older commands name the scripts of their day; what moved there from results.md is today's
NOTEBOOK = ROOT / "documentation" / "experiments"
MOVED_HEADING = "## Moved from results.md"
SHELL_ENDS = {">", ">>", "2>&1", "&", "&&", "|", ";"}
# a generated table (benchmarks/lib/fill_markers.py) quotes the commands its records ran, at the path of their day
GENERATED = re.compile(r"<!-- begin (\S+) -->.*?<!-- end \1 -->", flags=re.S)


def module_name(tool: str) -> str:
    """'quality/real_data.py' -> 'benchmarks.quality.real_data'."""
    return "benchmarks." + tool[:-3].replace("/", ".")


def run_help(command: list[str]) -> None:
    """``command --help`` from the repository root, without the root on PYTHONPATH: by path, a tool finds the package
    `benchmarks` itself (benchmarks/README.md, "Running a tool")."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    res = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("usage:") and len(res.stdout) > 200


@pytest.mark.slow
@pytest.mark.parametrize("tool,args", HELP_CASES, ids=[" ".join([t, *a]) for t, a in HELP_CASES])
def test_help_runs(tool, args):
    run_help([str(BENCHMARKS / tool), *args])


@pytest.mark.slow
@pytest.mark.parametrize("tool", TOOLS)
def test_help_runs_as_a_module(tool):
    """`python -m benchmarks.<job>.<tool> --help` from the repository root (the by-path idiom is skipped then)."""
    run_help(["-m", module_name(tool)])


def test_every_tool_is_listed():
    """Every tool of benchmarks/ (a module with a command line) is in TOOLS, so its --help and commands are checked."""
    found = {str(p.relative_to(BENCHMARKS)) for p in BENCHMARKS.glob("*/*.py")
             if "\nif __name__ == \"__main__\":" in p.read_text()}
    assert found == set(TOOLS) | {"gpu/repack_wheels.py"}  # repack_wheels.py: positional wheel files, no options


def documented_commands(text: str) -> list[tuple[str, list[str]]]:
    """(tool, arguments) of every `benchmarks/<job>/<tool>.py ...` or `python -m benchmarks.<job>.<tool> ...` in the
    fenced code blocks of a Markdown text and in its inline code that starts with `python benchmarks/` or
    `python -m benchmarks.`; a tool as written, e.g. 'quality/real_data.py'."""
    commands = []
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"(?<!`)`(python (?:-m )?benchmarks[/.][^`]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    for block in blocks + inline:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for i, w in enumerate(words):
                m = re.fullmatch(r"(?:.*/)?benchmarks/((?:\w+/)?\w+\.py)", w)
                tool = m.group(1) if m else None
                m = re.fullmatch(r"benchmarks\.(\w+)\.(\w+)", w) if i and words[i - 1] == "-m" else None
                tool = f"{m.group(1)}/{m.group(2)}.py" if m else tool
                if tool:
                    args = words[i + 1:]
                    end = next((k for k, a in enumerate(args) if a in SHELL_ENDS), len(args))
                    commands.append((tool, args[:end]))
    return commands


def bench_module(name: str):
    """A module of benchmarks/ by its file name, e.g. 'real_data_records'."""
    path = next(BENCHMARKS.glob(f"*/{name}.py"))
    return importlib.import_module(module_name(str(path.relative_to(BENCHMARKS))))


def parser_of(tool: str):
    return importlib.import_module(module_name(tool)).build_parser()


def check_commands(source: Path, text: str) -> None:
    """Every command of ``text`` names a tool at its path and parses; a generated table's recorded commands name the
    tool at the path of their day (before benchmarks/ was split by job: benchmarks/<tool>) and are resolved by its
    file name."""
    by_name = {Path(t).name: t for t in TOOLS}
    written = [(tool, args, False) for tool, args in documented_commands(GENERATED.sub("", text))]
    generated = [(by_name.get(Path(tool).name, tool), args, True)
                 for block in GENERATED.finditer(text) for tool, args in documented_commands(block.group(0))]
    for tool, args, recorded in written + generated:
        assert tool in TOOLS, f"{source}: `benchmarks/{tool}` is not a benchmark tool (removed, renamed or moved?)"
        try:
            parser_of(tool).parse_args(args)
        except SystemExit as e:
            what = "a recorded command" if recorded else "a command"
            pytest.fail(f"{source}: {what} `benchmarks/{tool} {shlex.join(args)}` does not parse (exit {e.code})")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_documented_commands_parse(document):
    text = document.read_text()
    assert len(documented_commands(text)) >= 4, f"{document}: expected the benchmark commands in fenced code blocks"
    check_commands(document, text)


def moved_from_results(text: str) -> str:
    """The level-2 sections of a notebook file whose heading starts with MOVED_HEADING (up to the next level-2
    heading outside a code block)."""
    parts, keep, fenced = [], False, False
    for line in text.splitlines(keepends=True):
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("## "):
            keep = line.startswith(MOVED_HEADING)
        if keep:
            parts.append(line)
    return "".join(parts)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK.glob("*.md")), ids=lambda p: p.name)
def test_commands_moved_from_results_parse(notebook):
    """The commands moved from results.md into the notebook (issue 34) stay valid there."""
    check_commands(notebook, moved_from_results(notebook.read_text()))


def test_moved_sections_are_found():
    text = ("## Old\n`python benchmarks/old.py`\n" f"{MOVED_HEADING} (issue 34)\n```bash\n## not a heading\n"
            "python benchmarks/speed/speed.py train\n```\n### kept\n`python benchmarks/speed/speed.py profile`\n"
            "## Later\nx\n")
    assert documented_commands(moved_from_results(text)) == [("speed/speed.py", ["train"]),
                                                             ("speed/speed.py", ["profile"])]
    moved = [p.name for p in NOTEBOOK.glob("*.md") if documented_commands(moved_from_results(p.read_text()))]
    assert sorted(moved) == ["real_data.md", "speed.md", "time_budget_and_new_experts.md"]


def test_documented_commands_are_found():
    text = "```bash\nnohup python benchmarks/quality/real_data.py compare -d 100 \\\n    --out /tmp/x > /tmp/x.log 2>&1 &\n" \
           "python -m benchmarks.speed.speed profile --steps 2 | tee x\n" \
           "cd benchmarks && python toy_proof.py run  # not a benchmarks/ path\n```\n" \
           "Inline: `python benchmarks/speed/speed.py train --plans PLANS`, `python -m benchmarks.quality.triage -d 1` " \
           "and `speed.py sampling` (not a command line).\n"
    assert documented_commands(text) == [("quality/real_data.py", ["compare", "-d", "100", "--out", "/tmp/x"]),
                                         ("speed/speed.py", ["profile", "--steps", "2"]),
                                         ("speed/speed.py", ["train", "--plans", "PLANS"]),
                                         ("quality/triage.py", ["-d", "1"])]


def test_a_recorded_command_names_its_tool_at_the_path_of_its_day(tmp_path):
    """In a generated table the former flat path of a tool resolves to the tool; outside one it is refused."""
    recorded = "<!-- begin T -->\n- fold_0: `python benchmarks/real_data.py compare -d 100 -c 2d --minutes 4 --out OUT`\n<!-- end T -->\n"
    check_commands(tmp_path / "doc.md", recorded)
    with pytest.raises(AssertionError, match="not a benchmark tool"):
        check_commands(tmp_path / "doc.md", GENERATED.sub("", recorded) + recorded.split("\n")[1])


def test_fill_markers_replaces_only_its_block(tmp_path):
    fill_markers = bench_module("fill_markers")
    doc = tmp_path / "doc.md"
    doc.write_text("a\n<!-- begin T -->\nold\nrows\n<!-- end T -->\nb <!-- begin U -->\nkeep\n<!-- end U -->\n")
    table = tmp_path / "t.md"
    table.write_text("| x |\n|---|\n| 1 |\n\n")
    fill_markers.main([str(doc), f"T={table}"])
    assert doc.read_text() == ("a\n<!-- begin T -->\n| x |\n|---|\n| 1 |\n<!-- end T -->\n"
                               "b <!-- begin U -->\nkeep\n<!-- end U -->\n")
    with pytest.raises(ValueError, match="marker 'V'"):
        fill_markers.fill(doc.read_text(), "V", "x")
    with pytest.raises(SystemExit, match="NAME=FILE"):
        fill_markers.main([str(doc), "T"])


def test_fold_records_add_up_to_the_comparison_table(tmp_path):
    """Folds recorded by different runs merge into the same mean ± std table that compare writes; a fold recorded
    again replaces its record; a file that is not a record is named, not a traceback."""
    import pandas as pd

    from diffoseg_auto.evaluation.method_comparison import COLUMNS

    records = bench_module("real_data_records")

    def long(fold, ged_a, ged_b):
        return pd.DataFrame([["Dataset009_X", "2d", m, fold, 3, mode, "GED", v] for m, v in (("A", ged_a), ("B", ged_b))
                             for mode in ("strict", "dpersona")], columns=COLUMNS)

    rec = tmp_path / "records"
    records.record_fold(rec, long(0, 0.9, 0.5), 0, {"command": "run one", "raters": ["r1", "r2"]})
    records.record_fold(rec, pd.concat([long(0, 0.0, 0.0), long(1, 0.7, 0.3)]), 1, {"command": "run two"})
    folder = rec / "Dataset009_X" / "2d"
    assert sorted(f.name for f in folder.iterdir()) == ["fold_0.csv", "fold_0.json", "fold_1.csv", "fold_1.json"]
    text = records.merged_markdown([folder])
    assert "(folds 0, 1)" in text
    assert "| A | 0.8000 ± 0.1414 |" in text and "| B | 0.4000 ± 0.1414 |" in text  # fold 1's run kept fold 0 out
    assert "`run one`" in text and "`run two`" in text
    assert "planner's word" not in text  # no record has a time budget
    brief = records.merged_markdown([folder], brief=True)
    assert "dpersona" in text and "#" not in brief and "dpersona" not in brief
    assert "| A | 0.8000 ± 0.1414 |" in brief
    assert "| A | 0.900 | 0.700 |" in brief and "| B | 0.500 | 0.300 |" in brief  # GED per fold
    assert records.recorded_methods(rec, "Dataset009_X", "2d", 1) == {"A", "B"}  # what a later run reuses
    assert records.recorded_methods(rec, "Dataset009_X", "2d", 2) == set()
    # a run of one more method adds its rows and keeps the others', with the earlier run's provenance
    c = long(1, 0.4, 0.4)
    records.record_fold(rec, c[c["method"] == "A"].assign(method="C"), 1, {"command": "run C"})
    assert records.recorded_methods(rec, "Dataset009_X", "2d", 1) == {"A", "B", "C"}
    meta = json.loads((rec / "Dataset009_X" / "2d" / "fold_1.json").read_text())
    assert meta["command"] == "run C" and meta["earlier_runs"][0]["command"] == "run two"
    assert meta["earlier_runs"][0]["kept_methods"] == ["A", "B"]
    # the same run recording its next method adds no provenance of itself
    records.record_fold(rec, c[c["method"] == "A"].assign(method="D"), 1, {"command": "run C",
                                                                          "time_budget": {"hours": 0.5}})
    meta = json.loads((rec / "Dataset009_X" / "2d" / "fold_1.json").read_text())
    assert [r["command"] for r in meta["earlier_runs"]] == ["run two"]
    # a later run without planner's notes (the baselines only) keeps the earlier run's
    records.record_fold(rec, c[c["method"] == "A"].assign(method="E"), 1, {"command": "run E"})
    meta = json.loads((rec / "Dataset009_X" / "2d" / "fold_1.json").read_text())
    assert meta["time_budget"] == {"hours": 0.5} and meta["command"] == "run E"
    assert [r["command"] for r in meta["earlier_runs"]] == ["run two", "run C"]
    assert records.recorded_methods(rec, "Dataset009_X", "2d", 1) == {"A", "B", "C", "D", "E"}
    with pytest.raises(records.RecordError, match="fold_1.csv: recorded on \\[3\\] cases, this run on \\[4\\]"):
        records.record_fold(rec, c.assign(num_cases=4), 1, {"command": "other cases"})
    (rec / "Dataset009_X" / "2d" / "fold_1.csv").write_text(  # back to runs one and two for the checks below
        long(1, 0.7, 0.3).to_csv(index=False))
    records.record_fold(rec, long(1, 0.9, 0.5), 1, {"command": "run three"})  # fold 1 again: replaced
    assert "| A | 0.9000 ± 0.0000 |" in records.merged_markdown([folder])
    (folder / "fold_2.csv").write_text("a,b\n1,2\n")
    with pytest.raises(records.RecordError, match="fold_2.csv: not a fold record"):
        records.merged_markdown([folder])


def test_a_route_table_averages_repeats_per_configuration_on_the_same_cases(tmp_path):
    """Repeated runs of a configuration average into one row that lists every run's GED; reference rows come from
    the same cases; runs on different folds are refused with the reason."""
    import pandas as pd

    from diffoseg_auto.evaluation.method_comparison import COLUMNS

    routes = bench_module("real_data_routes")

    def run(name, cfg, ged, fold=0):
        out = tmp_path / name
        out.mkdir()
        rows = [["Dataset009_X", cfg, "DiffOSeg", fold, 3, "strict", "GED", ged],
                ["Dataset009_X", cfg, "DiffOSeg", fold, 3, "strict", "Dice_soft", 1 - ged],
                ["Dataset009_X", cfg, "DiffOSeg", fold, 3, "dpersona", "GED", 0.0],
                ["Dataset009_X", cfg, "all-empty", fold, 3, "strict", "GED", 0.9]]
        pd.DataFrame(rows, columns=COLUMNS).to_csv(out / "method_comparison_per_fold.csv", index=False)
        return out

    outs = [run("a1", "plain", 0.5), run("a2", "plain", 0.6), run("b1", "strong", 0.4)]
    text = routes.route_table(outs)
    assert "| plain | 2 | 0.500, 0.600 | 0.550 | 0.450 |" in text
    assert "| strong | 1 | 0.400 | 0.400 | 0.600 |" in text
    assert "| all-empty (same cases) | | | 0.900 |  |" in text
    with pytest.raises(SystemExit, match="different folds"):
        routes.route_table(outs + [run("c1", "plain", 0.5, fold=1)])


def test_recorded_curve_points_merge_into_the_learning_curve_table(tmp_path):
    """Each fold's curve points, recorded by a different run, average into one curve; a fold without curve
    points adds none, and a file that is not a curve record is named."""
    import pandas as pd

    from diffoseg_auto.evaluation.learning_curves import CURVE_COLUMNS
    from diffoseg_auto.evaluation.method_comparison import COLUMNS

    records = bench_module("real_data_records")
    rec = tmp_path / "records"

    def curve(fold, ged_half, ged_end):
        return pd.DataFrame([["A", fold, 1, f, 5, s, "GED", v] for f, s, v in ((0.5, 100.0 + fold, ged_half),
                                                                               (1.0, 200.0 + fold, ged_end))],
                            columns=CURVE_COLUMNS)

    for fold, half, end in ((0, 0.6, 0.4), (1, 0.8, 0.2)):
        # DiffOSeg's two stages took 270 + 90 s (fold 0) and 324 + 90 s (fold 1) of a 0.1 h budget planned at 0.097 h
        trained = {"stage1": {"epoch_seconds": 270.0 + 54 * fold}, "stage2": {"epoch_seconds": 90.0}}
        records.record_fold(rec, pd.DataFrame([["Dataset009_X", "2d", "A", fold, 3, "strict", "GED", end]],
                                              columns=COLUMNS), fold,
                            {"command": f"run {fold}", "time_budget_hours": 0.1,
                             "time_budget": {"estimated_training_hours": 0.097},
                             "methods": {"DiffOSegTrainer": {"trained": trained}}})
        assert records.record_curve(rec, "Dataset009_X", "2d", fold, curve(fold, half, end)).name == \
            f"curve_fold_{fold}.csv"
    assert records.record_curve(rec, "Dataset009_X", "2d", 2, curve(0, 0.1, 0.1)) is None  # no point of fold 2
    other = curve(1, 0.5, 0.5).assign(method="B")  # another method's run keeps A's points
    records.record_curve(rec, "Dataset009_X", "2d", 1, other)
    assert set(pd.read_csv(rec / "Dataset009_X" / "2d" / "curve_fold_1.csv")["method"]) == {"A", "B"}
    records.record_curve(rec, "Dataset009_X", "2d", 1, curve(1, 0.8, 0.2))  # A again: replaced, B kept
    kept = pd.read_csv(rec / "Dataset009_X" / "2d" / "curve_fold_1.csv")
    assert len(kept[kept["method"] == "A"]) == 2 and len(kept[kept["method"] == "B"]) == 2
    kept[kept["method"] == "A"].to_csv(rec / "Dataset009_X" / "2d" / "curve_fold_1.csv", index=False)
    folder = rec / "Dataset009_X" / "2d"
    text = records.merged_markdown([folder])
    assert "| A | 1 | 0.5 | 100 | 2 | 0.700 ± 0.141 |" in text  # seconds 100 and 101: mean 100.5 prints 100
    assert "| A | 1 | 1 | 200 | 2 | 0.300 ± 0.141 |" in text
    assert "| Dataset009_X/2d/fold_0 | 0.1 | 0.097 | 0.100 | +0% |" in text  # 360 s of 0.1 h
    assert "| Dataset009_X/2d/fold_1 | 0.1 | 0.097 | 0.115 | +15% |" in text  # 414 s
    assert records.curves_figure([folder], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not records.curves_figure([tmp_path / "no_records"], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    (folder / "curve_fold_3.csv").write_text("a\n1\n")
    with pytest.raises(records.RecordError, match="curve_fold_3.csv: not a curve record"):
        records.merged_markdown([folder])


def test_the_sampling_speedup_table_is_rendered_from_the_runs(tmp_path):
    speed_sampling = bench_module("speed_sampling")
    ours = {"cpu_seconds": 1.5, "sampling_steps": 25, "cpu_seconds_runs": [1.6, 1.5, 1.4]}
    ref = {"cpu_seconds": 150.0, "sampling_steps": 250, "cpu_seconds_runs": [150.0, 149.0, 151.0]}
    result = {"runs": [{"precision": "fp32", "rows": [ours, ref], "speedup_cpu": 100.0}]}
    text = speed_sampling.speedup_markdown([result, {"runs": [{**result["runs"][0], "precision": "auto"}]}])
    lines = text.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| precision | ours: CPU s |")
    assert lines[2] == ("| `fp32` | 1.5 (S = 25) | 150.0 (250 steps) | **100.0x** | [1.6, 1.5, 1.4] | "
                        "[150.0, 149.0, 151.0] |")
    assert lines[3].startswith("| `auto` |")


def test_the_profile_tables_are_rendered_from_the_run():
    speed_sampling = bench_module("speed_sampling")
    run = {"precision": "bf16", "autocast_dtype": "torch.bfloat16", "self_cpu_ms_per_step": 80.5, "conversion_share": 0.05,
           "top": [{"operator": "aten::cat", "self_cpu_ms_per_step": 9.0, "share": 0.112, "calls_per_step": 11.0,
                    "input_dtypes": ["bfloat16"], "formats": ["channels_last>channels_last"]}],
           "operators_with_fp32_inputs": ["aten::exp"]}
    text = speed_sampling.profile_markdown({"runs": [run]})
    assert "`bf16` (autocast torch.bfloat16): 80.5 ms of operator time per step, 5.0% of it" in text
    assert "| `aten::cat` | 9.0 | 11.2% | 11.0 | bfloat16 | channels_last>channels_last |" in text
    assert "float32 inputs under bf16 autocast: `aten::exp`." in text


def test_sampling_evidence_keeps_tuning_curves_apart_and_adds_up_across_sessions(tmp_path):
    """Fold 0 is the planner's curve, another fold only reported; --add_to keeps an earlier evidence file's curves
    and a new file replaces the curve of its source."""
    import json

    evidence = bench_module("sampling_evidence")

    def steps_file(fold, ged):
        f = tmp_path / f"steps_sweep_f{fold}_{ged}.json"
        f.write_text(json.dumps({"dataset": "Dataset009_X", "configuration": "2d", "fold": fold,
                                 "rows": [{"S": s, "GED": g, "GED_se": 0.01, "cases": 5} for s, g in ((5, ged), (25, ged - 0.1))]}))
        return f

    first = evidence.build_evidence([steps_file(0, 0.5)])
    assert [c["source"] for c in first["sampling_steps"]["curves"]] == ["Dataset009_X 2d fold 0 (tuning)"]
    assert first["sampling_steps"]["reported"] == [] and first["samples_per_rater"]["curves"] == []
    later = evidence.build_evidence([steps_file(1, 0.6), steps_file(0, 0.4)], base=first)
    assert [c["source"] for c in later["sampling_steps"]["curves"]] == ["Dataset009_X 2d fold 0 (tuning)"]
    assert later["sampling_steps"]["curves"][0]["rows"][0]["GED"] == 0.4  # replaced, not duplicated
    assert [c["source"] for c in later["sampling_steps"]["reported"]] == ["Dataset009_X 2d fold 1"]
    assert "| Dataset009_X 2d fold 1 | 25 | 0.500 ± 0.010 | 5 | **pick** |" in evidence.render(later)


def test_compare_trains_only_the_methods_a_fold_has_not_recorded(tmp_path, monkeypatch):
    """A later session (whose machine lost the run folders) trains a fold's methods of -tr that its record does not
    hold, none when it holds them all, and all of them with --retrain."""
    import argparse

    import pandas as pd

    import diffoseg_auto.utilities.dataset_name_id as names
    from diffoseg_auto.evaluation.method_comparison import COLUMNS

    records, compare = bench_module("real_data_records"), bench_module("real_data_compare")
    monkeypatch.setattr(names, "resolve_dataset_name", lambda d: "Dataset009_X")
    rows = [["Dataset009_X", "2d", m, 0, 3, "strict", "GED", 0.5] for m in ("DiffOSeg", "ProbUNet", "all-empty")]
    records.record_fold(tmp_path, pd.DataFrame(rows, columns=COLUMNS), 0, {"command": "c"})
    a = argparse.Namespace(record=str(tmp_path), dataset_id=9, configuration="2d",
                           tr=["DiffOSegTrainer", "ProbUNetTrainer"])
    a.retrain = False
    assert compare.trainers_to_train(a, 0) == []
    assert compare.trainers_to_train(a, 1) == ["DiffOSegTrainer", "ProbUNetTrainer"]
    a.tr = ["DiffOSegTrainer", "ConsensusUNetTrainer"]
    assert compare.trainers_to_train(a, 0) == ["ConsensusUNetTrainer"]
    a.retrain = True
    assert compare.trainers_to_train(a, 0) == ["DiffOSegTrainer", "ConsensusUNetTrainer"]


def test_compare_records_each_method_as_it_finishes(tmp_path, monkeypatch):
    """A session cut while a fold's second method trains keeps the first method's record, and a method's record
    holds its own rows and the reference rows only (another method's stale predictions are left out)."""
    import argparse

    import pandas as pd
    import torch

    import diffoseg_auto.evaluation.comparison_report as report
    from diffoseg_auto.evaluation.method_comparison import COLUMNS

    compare = bench_module("real_data_compare")
    rows = pd.DataFrame([["Dataset009_X", "2d", m, 0, 3, "strict", "GED", 0.5]
                         for m in ("DiffOSeg", "ProbUNet", "all-empty", "inter-rater")], columns=COLUMNS)
    assert sorted(compare.rows_of(rows, ["DiffOSegTrainer"])["method"]) == ["DiffOSeg", "all-empty", "inter-rater"]

    recorded = []

    def one_method(a, fold, trainer, work, log):
        if trainer == "ProbUNetTrainer":
            raise KeyboardInterrupt  # the session ends while the second method trains

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(compare, "run_method", one_method)
    monkeypatch.setattr(compare, "budget_notes", lambda dataset_id, configuration: {})
    monkeypatch.setattr(report, "compare_methods", lambda *args, **kwargs: None)
    monkeypatch.setattr(compare, "record", lambda a, fold, trainers, out, log, planned: recorded.append((fold, trainers)))
    a = argparse.Namespace(stage1_fraction=2 / 3, minutes=1.0, time_budget=None, min_stage1_iterations=1,
                           out=str(tmp_path), work=None, prepare=None, add_configuration=False, folds=[0, 1],
                           record=str(tmp_path / "records"), retrain=False, dataset_id=9, configuration="2d",
                           curves=False, num_samples=None, tr=["DiffOSegTrainer", "ProbUNetTrainer"], device="cpu",
                           num_workers=0)
    monkeypatch.setattr(compare, "trainers_to_train", lambda a, fold: list(a.tr))
    with pytest.raises(KeyboardInterrupt):
        compare.compare(a)
    assert recorded == [(0, ["DiffOSegTrainer"])]


def test_budget_sweep_reports_the_plan_the_run_trained_not_a_later_one(env_folders, tmp_path):
    """Planning the same budget again on another (slower) machine rewrites the configuration's notes in the plans;
    the sweep row of an earlier run keeps that run's own schedule and estimate, copied into its run.json."""
    import argparse

    import pandas as pd

    from diffoseg_auto.evaluation.method_comparison import COLUMNS
    from diffoseg_auto.utilities.file_ops import save_json

    sweep = bench_module("real_data_sweep")

    def notes(stage1_iterations: int, hours: float) -> dict:
        row = {"candidate": "spacing_x1_widths_div1", "stage1": {"iterations": stage1_iterations},
               "stage2": {"iterations": stage1_iterations // 2}}
        return {"hours": 0.5, "chosen": row["candidate"], "estimated_training_hours": hours, "candidates": [row]}

    ds, cfg = "Dataset009_X", "2d_0.5h_spacing_x1_widths_div1"
    (env_folders["preprocessed"] / ds).mkdir()
    save_json({"configurations": {cfg: {"notes": {"time_budget": notes(440, 0.49)}}}},
              env_folders["preprocessed"] / ds / "DiffOSegPlans.json")  # re-planned on the slower machine
    out = tmp_path / "run"
    out.mkdir()
    trained = {"stage1": {"epoch_seconds": 1200.0}, "stage2": {"epoch_seconds": 600.0}}
    save_json({"configuration": cfg, "time_budget": notes(840, 0.495),
               "methods": {"DiffOSegTrainer": {"3": {"trained": trained, "training": {}}}}}, out / "run.json")
    per_fold = pd.DataFrame([[ds, cfg, m, 3, 14, "strict", "GED", v] for m, v in (("DiffOSeg", 0.4), ("all-empty", 0.9))],
                            columns=COLUMNS)
    per_fold.to_csv(out / "method_comparison_per_fold.csv", index=False)
    per_fold.rename(columns={"value": "mean"}).to_csv(out / "method_comparison.csv", index=False)
    md = tmp_path / "sweep.md"
    sweep.budget_sweep(argparse.Namespace(outs=[str(out)], md=str(md)))
    header, _, row = md.read_text().splitlines()[:3]
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert (cells["stage1_iterations"], cells["stage2_iterations"], cells["planned_h"]) == ("840", "420", "0.495")
    assert (cells["epochs_h"], cells["taken_vs_asked"], cells["GED"]) == ("0.500", "+0%", "0.400")
