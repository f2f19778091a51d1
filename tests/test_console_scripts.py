"""Every console script runs through diffoseg_auto.cli.console: a user error is one line on stderr
and exit code 1, a bug keeps its traceback, -v / -q set the logging level."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diffoseg_auto.cli import console
from diffoseg_auto.cli.console import command_targets
from diffoseg_auto.utilities.command_runner import run_command, split_verbosity
from diffoseg_auto.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent/diffoseg_input"

# per command: arguments that name a dataset or input that does not exist
MISSING_INPUT_ARGS = {
    "diffoseg_convert_lidc": ["-i", MISSING + ".npz", "-d", "20"],
    "diffoseg_convert_npc170": ["-i", MISSING, "-d", "21"],
    "diffoseg_convert_bubil": ["-i", MISSING, "-d", "22"],
    "diffoseg_convert_qubiq": ["-i", MISSING, "-d", "23", "-n", "prostate"],
    "diffoseg_convert_folder": ["-i", MISSING, "-m", MISSING, "-d", "24", "-n", "Folder"],
    "diffoseg_generate_toy_dataset": ["-d", "25"],  # run with $diffoseg_raw unset: no place to write it
    "diffoseg_verify_dataset": ["-d", "999"],
    "diffoseg_plan_and_preprocess": ["-d", "999"],
    "diffoseg_extract_fingerprint": ["-d", "999"],
    "diffoseg_plan_experiment": ["-d", "999"],
    "diffoseg_preprocess": ["-d", "999"],
    "diffoseg_add_reference_configuration": ["-d", "999"],
    "diffoseg_train": ["999", "2d", "0", "-device", "cpu"],
    "diffoseg_add_rater": ["-d", "999", "-c", "2d", "-f", "0", "--name", "x", "-i", MISSING, "-l", MISSING],
    "diffoseg_predict": ["-i", MISSING, "-o", MISSING + "_out", "-d", "999", "-c", "2d", "-f", "0", "-device", "cpu"],
    "diffoseg_evaluate": ["-ref", MISSING, "-pred", MISSING],
    "diffoseg_benchmark": ["-d", "999", "-c", "2d"],
    "diffoseg_find_best_configuration": ["-d", "999"],
    "diffoseg_ensemble": ["-i", MISSING, MISSING + "_2", "-o", MISSING + "_out"],
    "diffoseg_export_model_to_zip": ["-d", "999", "-c", "2d", "-o", MISSING + ".zip"],
    "diffoseg_install_pretrained_model_from_zip": [MISSING + ".zip"],
    "diffoseg_rank_cases": ["-i", MISSING, "-o", MISSING + ".csv"],
}


def test_every_declared_command_has_a_case():
    declared = set(re.findall(r'"(diffoseg_[a-z0-9_]+)":', (ROOT / "setup.py").read_text()))
    assert declared == set(command_targets()) == set(MISSING_INPUT_ARGS)


@pytest.mark.parametrize("command", sorted(MISSING_INPUT_ARGS))
def test_missing_input_is_one_line_and_exit_1(command, env_folders, monkeypatch, capsys):
    if command == "diffoseg_generate_toy_dataset":
        monkeypatch.delenv("diffoseg_raw")
    # exactly what the installed script runs: `from diffoseg_auto.cli.console import <command>; sys.exit(<command>())`
    script = getattr(console, command)
    monkeypatch.setattr(sys, "argv", [command, *MISSING_INPUT_ARGS[command]])
    with pytest.raises(SystemExit) as exc:
        script()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # progress messages (logging INFO) may precede it; the error itself is one line, the last
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err
    assert re.search(r"999|nonexistent|diffoseg_raw", errors[0]), errors[0]  # it names what is missing


@pytest.mark.slow
def test_installed_script_prints_no_traceback(env_folders):
    script = Path(sys.executable).parent / "diffoseg_train"
    proc = subprocess.run([str(script), "999", "2d", "0", "-device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("diffoseg_train: error: No dataset with id 999")


# every entry module of setup.py's CONSOLE_SCRIPTS, as `python -m <module>` runs it
ENTRY_MODULES = sorted({target.split(":")[0] for target in
                        re.findall(r'"diffoseg_[a-z0-9_]+": "([^"]+)"', (ROOT / "setup.py").read_text())})
# what torchrun sets for a DDP child rank (diffoseg_train -num_gpus N runs `python -m ...run_training` under it)
DDP_CHILD = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("module, extra_env", [(m, {}) for m in ENTRY_MODULES] +
                         [("diffoseg_auto.training.run_training", DDP_CHILD)])
def test_module_run_answers_a_missing_input_with_one_line(module, extra_env, env_folders, monkeypatch):
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    main_block = source[source.index('if __name__ == "__main__":'):]
    command = re.search(r'run_command\("(diffoseg_\w+)"', main_block).group(1)  # the command the module runs as
    if command == "diffoseg_generate_toy_dataset":
        monkeypatch.delenv("diffoseg_raw")
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    proc = subprocess.run([sys.executable, "-m", module, *MISSING_INPUT_ARGS[command]], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # as from the console script: one error line, the last, naming what is missing
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert [line for line in proc.stderr.splitlines() if "error" in line.lower()] == [last], proc.stderr
    assert re.search(r"999|nonexistent|diffoseg_raw", last), last
    assert last.startswith(f"{command}: error: ") or command == "diffoseg_verify_dataset"  # it reports every -d itself


@pytest.mark.slow
def test_ddp_launch_reports_user_errors_without_tracebacks(env_folders):
    """diffoseg_train -num_gpus 2: a missing dataset is one line from the launching process (no rank starts); an
    error inside the ranks is their one line each, and torchrun's own report adds no traceback."""
    def train(dataset: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "diffoseg_auto.training.run_training", dataset, "2d", "0",
                               "-device", "cpu", "-num_gpus", "2"], capture_output=True, text=True, timeout=300,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    proc = train("999")
    assert proc.returncode == 1 and proc.stderr.startswith("diffoseg_train: error: No dataset with id 999")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    (env_folders["raw"] / "Dataset998_NoPlans").mkdir()
    proc = train("998")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    # each failing rank prints its one line; torchrun may stop the second rank before it prints (a loaded machine)
    assert len(errors) in (1, 2) and all(e.startswith("diffoseg_train: error: ") and "plans file not found" in e
                                    for e in errors), proc.stderr


def test_a_bug_keeps_its_traceback():
    def main(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        run_command("diffoseg_x", main, [])


def test_user_error_line_joins_lines_and_exit_status_passes_through(capsys):
    def bad(argv):
        raise UserError("Dataset x has 2 problem(s):\n- a.nii.gz: wrong shape\n- b.nii.gz: missing")

    assert run_command("diffoseg_x", bad, []) == 1
    assert capsys.readouterr().err == "diffoseg_x: error: Dataset x has 2 problem(s):; a.nii.gz: wrong shape; b.nii.gz: missing\n"
    assert run_command("diffoseg_x", lambda argv: 3, []) == 3
    assert run_command("diffoseg_x", lambda argv: None, []) == 0


@pytest.mark.parametrize("flags, level", [([], logging.INFO), (["-v"], logging.DEBUG), (["--quiet"], logging.WARNING),
                                          (["-q", "-q"], logging.WARNING)])
def test_verbosity_flags_set_the_logging_level(flags, level):
    seen = {}

    def main(argv):
        seen["argv"], seen["level"] = argv, logging.getLogger().level

    run_command("diffoseg_x", main, ["-d", "1", *flags, "--c"])
    assert seen == {"argv": ["-d", "1", "--c"], "level": level}


@pytest.mark.parametrize("flags, shown", [([], True), (["-v"], True), (["-q"], False)])
def test_epoch_lines_print_unless_quiet(flags, shown, capsys):
    from diffoseg_auto.training.logger import TrainingLogger

    run_command("diffoseg_x", lambda argv: TrainingLogger().print("epoch 1/1  train_loss 0.5"), flags)
    assert ("epoch 1/1  train_loss 0.5" in capsys.readouterr().out) == shown


def test_split_verbosity_leaves_arguments_after_double_dash():
    assert split_verbosity(["-v", "a", "--", "-q"]) == (1, ["a", "--", "-q"])


def test_help_lists_the_common_options(capsys):
    from diffoseg_auto.training.run_training import main

    with pytest.raises(SystemExit) as exc:
        run_command("diffoseg_train", main, ["-h"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "-v, --verbose" in out and "-q, --quiet" in out


def test_unknown_command_is_an_attribute_error():
    with pytest.raises(AttributeError, match="diffoseg_nothing"):
        getattr(console, "diffoseg_nothing")
