"""Mutants that must die: deliberate one-line breaks of denselab's core rules, each run
against the tests named to guard it. ``make mutants`` (and CI, after ``make test``).

A test suite that only checks that parts agree with each other lets a wrong rule through
(reporting the last epoch instead of the best passed every test once). Each mutant below is
such a wrong rule; the run fails if any of them passes its tests. Every rule that matters
gets its mutant here, with the fastest tests that should catch it.

How it works: the package, its config and tests are copied to scratch folders (one per
worker), the mutation is applied to the copy (its old text must occur exactly once: a
mutant that no longer applies is an error, not a pass), and pytest runs the named tests
with the copy first on PYTHONPATH, for the tests' subprocesses too. The named tests are
first run unmutated: a mutant is killed only by a test that passes without it.

    python tests/mutants.py [--jobs 2] [--only WORDS]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One mutant's tests may take this long; past it the mutant counts as killed (it hung).
MUTANT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the checkout
    old: str  # must occur exactly once in the file
    new: str
    tests: list[str]  # pytest node ids


# A sweep job's finish-don't-redo rules on a real store, in a second (make test also runs
# the slow sweeps that show them end to end: test_sweep_rules.py).
JOB_RULES_TEST = (
    "tests/test_search_settings.py::test_a_sweep_job_reuses_only_whole_finished_runs_and_tags_them"
)
CONFIG_HASH_TEST = (
    "tests/test_sweep_report.py::test_config_hash_ignores_speed_and_storage_not_what_is_trained"
)

CHUNK_TEST = "tests/test_chunking.py::test_eight_steps_per_batch_train_exactly_as_one[sgd-nesterov]"

CONFUSION_TEST = (
    "tests/test_figures.py::test_confusion_matrix_draws_true_classes_down_and_predicted_across"
)
DIVERGENCE_TEST = (
    "tests/test_lifecycle.py::test_a_loss_over_a_thousand_times_the_first_stops_the_run"
)

MUTANTS = [
    # -- what a job is: its config and its data ------------------------------------------
    Mutant(
        "a job's identity leaves out its data",
        "src/denselab/tracking/params.py",
        "    params[DATA_TAG] = data_digest\n",
        "",
        [CONFIG_HASH_TEST],
    ),
    Mutant(
        "the data digest leaves out the labels",
        "src/denselab/data/base.py",
        "{name: array_digest(s.x, s.y) for",
        "{name: array_digest(s.x) for",
        ["tests/test_digest.py"],
    ),
    Mutant(
        "a resume on other data is continued",
        "src/denselab/tracking/resume.py",
        "    if resume.data_digest and resume.data_digest != data_digest:",
        "    if False:",
        ["tests/test_digest.py"],
    ),
    # -- the reported result is the best checkpoint's ------------------------------------
    Mutant(
        "the run is tested on its last epoch, not its best",
        "src/denselab/training/trainer.py",
        'trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)',
        'trainer.test(model, datamodule=data, ckpt_path=None, verbose=False)',
        ["tests/test_best_checkpoint.py"],
    ),
    # -- sweeps: what is skipped, what runs again ----------------------------------------
    Mutant(
        "a rerun skips jobs that FAILED, not only FINISHED ones",
        "src/denselab/sweeps/job.py",
        "and attributes.status = 'FINISHED'\",",
        "and attributes.status != 'KILLED'\",",
        [JOB_RULES_TEST],
    ),
    Mutant(
        "tracking.skip_finished=false still skips finished jobs",
        "src/denselab/sweeps/job.py",
        "        bool(cfg.tracking.skip_finished),\n",
        "        True,\n",
        [JOB_RULES_TEST],
    ),
    Mutant(
        "a job reused from another sweep is not tagged",
        "src/denselab/sweeps/job.py",
        "        if self.parent_id not in parents:\n",
        "        if False:\n",
        [JOB_RULES_TEST],
    ),
    Mutant(
        "the sweep's jobs ranked by test/acc",
        "src/denselab/sweeps/summary.py",
        "table = table.sort_values(OBJECTIVE, ascending=False,",
        'table = table.sort_values("test/acc", ascending=False,',
        ["tests/test_sweep_report.py::test_the_best_job_is_the_best_by_validation_even_where_test_ranks_otherwise"],
    ),
    Mutant(
        "the sweep's best job chosen by test/acc",
        "src/denselab/sweeps/summary.py",
        '    return done.loc[done[OBJECTIVE].astype(float).idxmax()]',
        '    return done.loc[done["test/acc"].astype(float).idxmax()]',
        ["tests/test_sweep_report.py::test_the_best_job_is_the_best_by_validation_even_where_test_ranks_otherwise"],
    ),
    # -- figures: numbers drawn the right way round -------------------------------------
    Mutant(
        "the confusion heatmap drawn transposed",
        "src/denselab/reporting/figures.py",
        "image = ax.imshow(np.ma.masked_equal(counts, 0),",
        "image = ax.imshow(np.ma.masked_equal(counts.T, 0),",
        [CONFUSION_TEST],
    ),
    Mutant(
        "the confusion counts written in transposed cells",
        "src/denselab/reporting/figures.py",
        "                predicted, true, str(count),",
        "                true, predicted, str(count),",
        [CONFUSION_TEST],
    ),
    Mutant(
        "the first-layer weight figure drawn with flipped sign",
        "src/denselab/reporting/figures.py",
        "        image = ax.imshow(tile, cmap=WEIGHT_CMAP,",
        "        image = ax.imshow(-tile, cmap=WEIGHT_CMAP,",
        ["tests/test_figures.py::test_first_layer_weight_figure_draws_positive_green_negative_purple"],
    ),
    # -- training: divergence, ranks, resume ---------------------------------------------
    Mutant(
        "a loss may grow a million times before the run is stopped",
        "src/denselab/training/divergence.py",
        "max_growth: float = 1000.0,",
        "max_growth: float = 1e6,",
        [DIVERGENCE_TEST],
    ),
    Mutant(
        "the loss growth check switched off",
        "src/denselab/training/divergence.py",
        "value <= self.max_growth * max(self.first_loss, 1e-12)",
        "True",
        [DIVERGENCE_TEST],
    ),
    Mutant(
        "every rank trains on the whole epoch",
        "src/denselab/data/base.py",
        "(trainer.global_rank, trainer.world_size)",
        "(0, 1)",
        ["tests/test_devices.py::test_each_rank_trains_on_its_own_half_of_the_training_split"],
    ),
    Mutant(
        "resume may change the optimizer",
        "src/denselab/tracking/resume.py",
        '    "steps_per_batch",\n)',
        '    "steps_per_batch",\n    "optimizer",\n)',
        ["tests/test_resume.py::test_resume_refuses_every_change_to_what_is_trained"],
    ),
    Mutant(
        "resume may not raise trainer.max_epochs",
        "src/denselab/tracking/resume.py",
        '    "trainer.max_epochs",\n',
        "",
        ["tests/test_digest.py::test_a_resume_on_other_data_is_refused_naming_both_digests"],
    ),
    # -- several optimizer steps per Lightning batch -----------------------------------------
    # (The chunk's order, its step count, the progress bar and the rules for a user's
    # callback or training_step are guarded by tests/test_chunking.py in make test; their
    # mutants were killed once and left out here for CI's time.)
    Mutant(
        "a chunk zeroes each gradient after its backward",
        "src/denselab/training/module.py",
        "            optimizer.zero_grad()\n            loss.backward()\n",
        "            loss.backward()\n            optimizer.zero_grad()\n",
        [CHUNK_TEST],
    ),
    Mutant(
        "a divergence inside a chunk is named at the chunk's last step",
        "src/denselab/training/divergence.py",
        "            first = step - len(values) + 1\n",
        "            first = step\n",
        ["tests/test_chunking.py::test_a_divergence_inside_a_chunk_names_its_exact_step"],
    ),
    Mutant(
        "a chunked run's checkpoint counts chunks",
        "src/denselab/training/chunking.py",
        '            self._epoch.to_steps(checkpoint["loops"]["fit_loop"])\n',
        "            pass\n",
        ["tests/test_chunking.py::test_a_run_state_carries_no_trace_of_k"],
    ),
    Mutant(
        "a chunked run resumes a checkpoint's counts as chunks",
        "src/denselab/training/chunking.py",
        '                self._epoch.to_chunks(self._loaded["loops"]["fit_loop"])\n',
        "                pass\n",
        ["tests/test_chunking.py::test_a_run_stopped_mid_epoch_resumes_to_the_same_result[1-8]"],
    ),
    Mutant(
        "gradient clipping is trained in chunks (and so never clipped)",
        "src/denselab/training/chunking.py",
        "(trainer.gradient_clip_val not in (None, 0),",
        "(False,",
        [
            "tests/test_chunking.py::test_settings_that_act_at_every_step_train_one_step_per_batch"
            "_and_say_so[gradient_clip_val]"
        ],
    ),
    # -- the Optuna search -----------------------------------------------------------------
    Mutant(
        "a search minimises val/acc_best",
        "src/denselab/sweeps/study.py",
        "    return [OBJECTIVES[o] for o in objectives]\n",
        '    return ["minimize" for o in objectives]\n',
        ["tests/test_search_settings.py::test_the_bare_sweeper_maximises_what_the_jobs_return"],
    ),
    Mutant(
        "a continued study asks its first trials again",
        "src/denselab/sweeps/study.py",
        "else settings.seed + asked_before",
        "else settings.seed",
        ["tests/test_search_settings.py::test_the_same_command_is_the_same_study_whatever_its_trials_and_a_continued_one_asks_anew"],
    ),
    Mutant(
        "a pruned trial is told COMPLETE",
        "src/denselab/sweeps/search.py",
        "    if attrs.get(PRUNED_ATTR) is not None:\n",
        "    if False:\n",
        ["tests/test_search_settings.py::test_trials_are_told_what_their_jobs_left"],
    ),
    Mutant(
        "a pruned run is reused as a finished job",
        "src/denselab/sweeps/job.py",
        '            accept=lambda run: run.data.tags.get(STATE_TAG) != "PRUNED",\n',
        "",
        [JOB_RULES_TEST],
    ),
    # -- figures of data without labelled test rows ---------------------------------------
    Mutant(
        "data without labelled test rows draws no final figures",
        "src/denselab/reporting/callbacks.py",
        '        if "test" not in self.evaluator.splits:\n',
        "        if False:\n",
        ["tests/test_image_table.py::test_training_scores_train_and_valid_and_logs_hidden_predictions"],
    ),
    # -- rules the fast tier guarded already ----------------------------------------------
    Mutant(
        "the validation split ignores the seed",
        "src/denselab/data/base.py",
        "np.random.default_rng(seed).permutation(n)",
        "np.random.default_rng(0).permutation(n)",
        ["tests/test_data.py::test_validation_split_follows_the_seed"],
    ),
    Mutant(
        "training batches of uint8 pixels are not divided by 255",
        "src/denselab/data/pixels.py",
        "return x.float().div_(UINT8_MAX)",
        "return x.float()",
        ["tests/test_stored_pixels.py::test_as_float_scales_uint8_and_widens_floats"],
    ),
    Mutant(
        "served uint8 pixels divided by 256, not 255",
        "src/denselab/serving/preprocessing.py",
        "return tensor.to(torch.float32).div_(255.0)",
        "return tensor.to(torch.float32).div_(256.0)",
        ["tests/test_predict.py::test_arrays_are_scaled_as_training_scales_a_split"],
    ),
    Mutant(
        "confusion counts with rows predicted and columns true",
        "src/denselab/reporting/analysis.py",
        "minlength=num_classes * num_classes).reshape(num_classes, num_classes)",
        "minlength=num_classes * num_classes).reshape(num_classes, num_classes).T",
        ["tests/test_analysis.py::test_confusion_counts_equal_a_direct_count"],
    ),
    Mutant(
        "most confused pairs read 'predicted taken for true'",
        "src/denselab/reporting/analysis.py",
        'f"{class_names[true]} taken for {class_names[predicted]}"',
        'f"{class_names[predicted]} taken for {class_names[true]}"',
        [
            "tests/test_analysis.py::test_most_confused_reads_like_the_course_and_skips_pairs_that_never_happened"
        ],
    ),
    Mutant(
        "first-layer weights coloured purple positive, green negative",
        "src/denselab/reporting/figures.py",
        'WEIGHT_CMAP = "PRGn"',
        'WEIGHT_CMAP = "PRGn_r"',
        [
            "tests/test_figures.py::test_weight_colours_are_green_positive_purple_negative_white_at_zero"
        ],
    ),
    Mutant(
        "every rank takes rank 0's share of the permutation",
        "src/denselab/data/base.py",
        "order = order[self.rank :: self.world_size]",
        "order = order[:: self.world_size]",
        ["tests/test_devices.py::test_ranks_share_one_permutation_and_as_many_batches"],
    ),
    Mutant(
        "hidden-label rows of an image table are scored",
        "src/denselab/data/image_table.py",
        "np.flatnonzero(~hidden & (split == s))",
        "np.flatnonzero(split == s)",
        ["tests/test_image_table.py::test_splits_classes_and_hidden_rows"],
    ),
    Mutant(
        "typical examples: each image's most likely class, not each class's surest image",
        "src/denselab/reporting/analysis.py",
        "return np.asarray(probs).argmax(axis=0)",
        "return np.asarray(probs).argmax(axis=1)",
        ["tests/test_analysis.py::test_typical_examples_are_the_argmax_indices"],
    ),
    Mutant(
        "predict reads each file into the next file's row",
        "src/denselab/serving/inputs.py",
        "out[i] = preprocessing.read_file(files[i])",
        "out[i] = preprocessing.read_file(files[i - 1])",
        [
            "tests/test_predict.py::test_png_files_read_back_exactly_the_pixels_they_were_written_from"
        ],
    ),
    Mutant(
        "a run's artifacts land under the current folder, not beside its store",
        "src/denselab/tracking/store.py",
        "    return (db.resolve().parent / folder).as_uri()\n",
        "    return None\n",
        ["tests/test_train.py::test_short_training_beats_chance_and_logs_everything"],
    ),
    # -- the caller's process is left as it was ------------------------------------------
    Mutant(
        "fit() leaves MLFLOW_TRACKING_URI set in the caller's environment",
        "src/denselab/api.py",
        "        os.environ.clear()\n        os.environ.update(saved_env)\n",
        "",
        ["tests/test_api.py::test_fit_and_load_leave_the_callers_process_as_they_found_it"],
    ),
    # -- the house: what a user has still works, and a typo answers at once ---------------
    Mutant(
        "a run logged before the subpackages names a class that no longer resolves",
        "src/denselab/tracking/resume.py",
        '    "denselab.model.": "denselab.training.module.",\n',
        "",
        [
            "tests/test_old_layout.py::"
            "test_the_stopped_runs_logged_targets_resolve_to_classes_of_today"
        ],
    ),
    Mutant(
        "a model logged before the subpackages is refused",
        "src/denselab/serving/classifier.py",
        'LOADER_MODULES = ("denselab.serving.mlflow_model", "denselab.serving")',
        'LOADER_MODULES = ("denselab.serving.mlflow_model",)',
        ["tests/test_old_layout.py::test_the_finished_runs_model_loads_and_predicts_as_it_did"],
    ),
    Mutant(
        "a config error waits for Lightning and MLflow to import",
        "src/denselab/train.py",
        "    with _failures_recorded(cfg, overrides):\n",
        "    from denselab.plan import plan_run  # noqa: F401\n\n"
        "    with _failures_recorded(cfg, overrides):\n",
        ["tests/test_config.py::test_a_config_error_answers_before_anything_heavy_is_imported"],
    ),
    Mutant(
        "a key added with + that no schema has reaches the run",
        "src/denselab/config.py",
        "    _check_keys(cfg)\n",
        "",
        ["tests/test_config.py::test_a_key_no_schema_has_is_refused_with_the_one_meant"],
    ),
    Mutant(
        "a key set without + that no schema has gets Hydra's hint to add it",
        "src/denselab/config.py",
        "        if known and name not in known:\n",
        "        if False:\n",
        ["tests/test_config.py::test_a_key_set_without_plus_is_named_before_hydra_composes"],
    ),
    Mutant(
        "a sweep parent takes jobs on other data for jobs on the same",
        "src/denselab/sweeps/summary.py",
        "        if len(groups) == 1:\n",
        "        if True:\n",
        ["tests/test_datasets.py::test_a_sweep_says_whether_its_jobs_saw_the_same_data"],
    ),
    Mutant(
        "a sweep over seeds is judged by its luckiest seed",
        "src/denselab/sweeps/seeds.py",
        'frame = frame.sort_values(f"{OBJECTIVE} mean", ascending=False, kind="stable")',
        'frame = frame.sort_values(f"{OBJECTIVE} std", ascending=False, kind="stable")',
        [
            "tests/test_sweep_report.py::"
            "test_seeds_are_repetitions_the_best_setting_has_the_best_mean_not_the_luckiest_seed"
        ],
    ),
    Mutant(
        "a rerun keeps its original's seed only by chance",
        "src/denselab/tracking/rerun.py",
        "    run_cfg.rerun = run.info.run_id\n",
        "    run_cfg.rerun = run.info.run_id\n    run_cfg.seed = run_cfg.seed + 1\n",
        ["tests/test_rerun.py::test_a_rerun_is_a_new_run_that_reproduces_the_original_on_the_cpu"],
    ),
    Mutant(
        "a run from a checkout with local edits does not say so",
        "src/denselab/tracking/code_state.py",
        "    if not patch and not untracked:\n",
        "    if True:\n",
        ["tests/test_rerun.py::test_uncommitted_changes_are_a_patch_that_git_applies"],
    ),
    Mutant(
        "a run on another host cannot be told dead by its heartbeat",
        "src/denselab/tracking/holder.py",
        "        return None if stale is None else not stale\n",
        "        return None\n",
        ["tests/test_holder.py::test_another_hosts_run_is_alive_while_its_heartbeat_is_fresh"],
    ),
    Mutant(
        "a damaged last.ckpt ends the resume without trying the logged copy",
        "src/denselab/tracking/resume.py",
        "            damaged.append(f\"{own_dir / LAST} ({_why(err)})\")\n",
        "            raise\n",
        [
            "tests/test_faults.py::"
            "test_a_half_written_last_checkpoint_resumes_from_the_logged_copy"
        ],
    ),
    Mutant(
        "a resumed run's system metrics start again at step 0",
        "src/denselab/plan.py",
        "resumed=self.resume is not None)",
        "resumed=False)",
        [
            "tests/test_system_metrics.py::"
            "test_a_run_records_cpu_and_memory_and_a_resumed_run_continues_the_series"
        ],
    ),
]


def copy_checkout(scratch: Path) -> None:
    """src/, conf/ (where the installed package has it: denselab/conf) and tests/."""
    shutil.copytree(ROOT / "src", scratch / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copytree(ROOT / "conf", scratch / "src" / "denselab" / "conf")
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    # Bytecode checked by the source's hash, made once: each mutant's processes (pytest and
    # the console scripts its tests start) then compile only the one file it changed.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
         str(scratch / "src"), str(scratch / "tests")],
        check=True, capture_output=True,
    )


def in_copy(path: str) -> str:
    """Where a checkout's file lies in the scratch copy (conf/ is inside the package)."""
    return f"src/denselab/{path}" if path.startswith("conf/") else path


def pytest_command(tests: list[str]) -> list[str]:
    # -x: the first failure kills the mutant; addopts cleared so the output is the summary.
    return [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-o", "addopts=",
            "-p", "no:cacheprovider", *tests]


def environment(scratch: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(scratch / "src"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def check_copy_is_imported(scratch: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import denselab, denselab.conf; print(denselab.__file__); "
         "print(list(denselab.conf.__path__)[0])"],
        env=environment(scratch), capture_output=True, text=True, check=True,
    ).stdout.split()
    if not all(Path(p).is_relative_to(scratch) for p in found):
        sys.exit(f"mutants: the scratch copy is not what Python imports ({found}); stopping.")


def killer(output: str) -> str:
    # pytest's summary lines ("FAILED tests/x.py::name - ..."), not captured log records
    # that start with a level name ("ERROR    hydra.utils:...").
    for line in output.splitlines():
        found = re.match(r"(?:FAILED|ERROR) (tests/\S+)", line)
        if found:
            return found.group(1)
    return "(no test named; see its output)"


def run_mutant(mutant: Mutant, scratch: Path) -> tuple[str, str, float]:
    """(verdict, what killed it, seconds): verdict is killed, SURVIVED or an error."""
    target = scratch / in_copy(mutant.path)
    original = target.read_text()
    if original.count(mutant.old) != 1:
        return f"STALE (its text occurs {original.count(mutant.old)} times)", "", 0.0
    target.write_text(original.replace(mutant.old, mutant.new))
    started = time.monotonic()
    try:
        result = subprocess.run(
            pytest_command(mutant.tests), cwd=scratch, env=environment(scratch),
            capture_output=True, text=True, timeout=MUTANT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return "killed", f"(hung past {MUTANT_TIMEOUT_S} s)", time.monotonic() - started
    finally:
        target.write_text(original)
    seconds = time.monotonic() - started
    if result.returncode == 0:
        return "SURVIVED", "", seconds
    if result.returncode in (1, 3):  # tests failed, or an error inside a test's run
        return "killed", killer(result.stdout), seconds
    tail = (result.stdout + result.stderr)[-800:]
    return f"ERROR (pytest exit {result.returncode})", tail, seconds


def main(mutants: list[Mutant] = MUTANTS) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants run side by side")
    parser.add_argument("--only", default="", help="run the mutants whose name has these words")
    parser.add_argument(
        "--guards-passed",
        action="store_true",
        help="skip the guards' unmutated run: they just passed (CI runs this after make test)",
    )
    args = parser.parse_args()
    chosen = [m for m in mutants if args.only.lower() in m.name.lower()]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="denselab-mutants-") as tmp:
        scratches = [Path(tmp) / f"w{i}" for i in range(max(1, args.jobs))]
        for scratch in scratches:
            copy_checkout(scratch)
        check_copy_is_imported(scratches[0])

        # The guards must pass unmutated, or a "kill" would mean nothing.
        guards = sorted({t for m in chosen for t in m.tests})
        baseline = None if args.guards_passed else subprocess.run(
            pytest_command(["-n", str(len(scratches)), *guards]), cwd=scratches[0],
            env=environment(scratches[0]), capture_output=True, text=True,
        )
        if baseline is not None and baseline.returncode != 0:
            print(baseline.stdout[-4000:] + baseline.stderr[-2000:])
            print("mutants: the guarding tests fail without any mutant; fix them first.")
            return 1
        if baseline is not None:
            print(f"{len(guards)} guarding tests pass unmutated "
                  f"({time.monotonic() - started:.0f} s)", flush=True)

        free = list(scratches)

        def one(mutant: Mutant):
            scratch = free.pop()
            try:
                return mutant, *run_mutant(mutant, scratch)
            finally:
                free.append(scratch)

        survivors = 0
        with ThreadPoolExecutor(len(scratches)) as pool:
            for mutant, verdict, by, seconds in pool.map(one, chosen):
                print(f"{verdict:<8} {seconds:5.1f} s  {mutant.name}  [{mutant.path}]"
                      + (f"\n{'':17}killed by {by}" if verdict == "killed" else
                         f"\n{by}" if by else ""), flush=True)
                survivors += verdict != "killed"
    print(f"{len(chosen) - survivors} of {len(chosen)} mutants killed, {survivors} not, in "
          f"{time.monotonic() - started:.0f} s")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
