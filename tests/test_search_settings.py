"""The Optuna search's parts without a launcher: its settings and their refusals, the search
space read from Hydra's grammar, the study in real sqlite storage (continued, refused when it
belongs to another search), telling trials, and the story's figures and labels."""

from __future__ import annotations

import math

import optuna
import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from denselab.config import register_schemas
from denselab.errors import SearchError
from denselab.sweeps import parent
from denselab.sweeps.search import plan_search, tell
from denselab.sweeps.search_report import history_figure, network_label, pareto_figure
from denselab.sweeps.space import search_space
from denselab.sweeps.study import check_study, open_study, search_settings
from denselab.sweeps.trial import PRUNED_ATTR, VALUES_ATTR


def search_config(overrides=(), hydra_overrides=(), tmp_path=None):
    """The config the search's callbacks and sweeper get (see test_sweep_report.sweep_config),
    its study in ``tmp_path`` when given."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    extra = [f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db"] if tmp_path else []
    register_schemas()
    with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/sweeper=optuna", *extra, *hydra_overrides, *fixed],
            return_hydra_config=True,
        )
    cfg.hydra.overrides.task = ["data=digits", *overrides]
    return cfg


def settings_of(*hydra_overrides, overrides=()):
    cfg = search_config(overrides, hydra_overrides)
    return search_settings(cfg, parent.sweep_key(cfg))


# -- the direction follows the objective ------------------------------------------------------


def test_the_bare_sweeper_maximises_what_the_jobs_return():
    settings = settings_of()
    assert settings.objectives == ["val/acc_best"] and settings.directions == ["maximize"]
    assert settings.sampler == "tpe" and settings.seed == 42  # the run's seed
    assert settings_of("hydra.sweeper.direction=maximize").directions == ["maximize"]
    two = settings_of("hydra.sweeper.objectives=[val/acc_best,params_total]")
    assert two.directions == ["maximize", "minimize"] and two.multi


@pytest.mark.parametrize(
    "hydra_overrides, says",
    [
        (["hydra.sweeper.direction=minimize"], "would search for the worst val/acc_best"),
        (["hydra.sweeper.objectives=[test/acc]"], "tuning on the test set"),
        (["hydra.sweeper.objectives=[val/f1]"], "which runs do not log"),
        (["hydra.sweeper.objectives=[val/acc_best,params_total]",
          "hydra.sweeper.direction=[maximize]"], "gives 1 directions for 2 objectives"),
        (["hydra.sweeper.sampler=bayes"], "sampler=bayes is not a sampler denselab knows"),
        (["hydra.sweeper.pruner=patient"], "pruner=patient is not a pruner denselab knows"),
        (["hydra.sweeper.n_trials=0"], "n_trials=0"),
        (["hydra.sweeper.objectives=[val/acc_best,params_total]", "hydra.sweeper.sampler=cmaes"],
         "cmaes searches one objective"),
        (["hydra.sweeper.objectives=[val/acc_best,params_total]", "hydra.sweeper.pruner=median"],
         "cannot prune a search of two objectives"),
    ],
    ids=["minimize-accuracy", "test-set", "unknown-objective", "directions-count", "sampler",
         "pruner", "n_trials", "cmaes-two", "prune-two"],
)
def test_settings_that_cannot_search_are_refused_in_one_sentence(hydra_overrides, says):
    with pytest.raises(SearchError, match=says):
        settings_of(*hydra_overrides)


# -- the space --------------------------------------------------------------------------------


def test_the_presets_space_and_the_command_lines_sweeps_become_distributions():
    cfg = search_config(["hparams_search=mlp", "optimizer.lr=interval(0.01,0.3)", "seed=1,2",
                         "data.batch_size=range(32,129,32)", "trainer.max_epochs=3"])
    space = search_space(cfg.hydra.sweeper.params, list(cfg.hydra.overrides.task))
    d = space.distributions
    assert d["optimizer.lr"] == FloatDistribution(0.01, 0.3)  # the command line wins
    assert d["model.hidden_sizes"] == CategoricalDistribution(["[64]", "[128]", "[256]",
                                                               "[256,128]"])
    assert d["model.dropout"] == FloatDistribution(0.0, 0.5)
    assert d["seed"] == CategoricalDistribution([1, 2])
    assert d["data.batch_size"] == IntDistribution(32, 128, step=32)
    assert space.fixed == ["data=digits", "hparams_search=mlp", "trainer.max_epochs=3"]
    log = search_space(None, ["optimizer.lr=tag(log,interval(0.001,0.5))",
                              "trainer.max_epochs=tag(int,interval(2,9))"]).distributions
    assert log["optimizer.lr"] == FloatDistribution(0.001, 0.5, log=True)
    assert log["trainer.max_epochs"] == IntDistribution(2, 9)


def test_a_trials_values_become_overrides_that_compose_to_them(compose_cfg):
    space = search_space({"trainer.max_epochs": 3},
                         ["model.hidden_sizes=choice([],[128])", "model.dropout=interval(0,0.5)",
                          "data=digits"])
    assert space.distributions["model.hidden_sizes"] == CategoricalDistribution(["[]", "[128]"])
    overrides = space.overrides({"model.hidden_sizes": "[128]", "model.dropout": 0.25})
    cfg = compose_cfg(overrides)
    assert list(cfg.model.hidden_sizes) == [128] and cfg.model.dropout == 0.25
    assert cfg.trainer.max_epochs == 3 and cfg.data.name == "digits"


@pytest.mark.parametrize(
    "arguments, says",
    [
        (["data=digits"], "The search space is empty"),
        (["model.dropout=interval(0.5,0.1)"], r"interval\(0.5, 0.1\) is empty"),
        (["optimizer.lr=tag(log,interval(0,0.1))"], "a log interval must start above 0"),
        (["optimizer.lr=interval(0.1"], "does not parse"),
    ],
    ids=["empty", "reversed", "log-at-zero", "unparsable"],
)
def test_a_space_that_cannot_be_searched_is_refused(arguments, says):
    with pytest.raises(SearchError, match=says):
        search_space(None, arguments)


def test_the_grid_sampler_needs_values_not_intervals(tmp_path):
    cfg = search_config(["optimizer.lr=interval(0.01,0.3)"], ["hydra.sweeper.sampler=grid"],
                        tmp_path)
    with pytest.raises(SearchError, match="optimizer.lr is an interval"):
        plan_search(cfg)
    grid = search_config(["optimizer.lr=choice(0.1,0.2)", "seed=range(1,3)"],
                         ["hydra.sweeper.sampler=grid"], tmp_path)
    plan_search(grid)


# -- the study --------------------------------------------------------------------------------


def test_the_same_command_is_the_same_study_whatever_its_trials_and_a_continued_one_asks_anew(
    tmp_path,
):
    args = ["optimizer.lr=interval(0.01,0.3)"]
    cfg = search_config(args, ["hydra.sweeper.n_trials=2"], tmp_path)
    more = search_config(args, ["hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2"], tmp_path)
    other = search_config(args, ["hydra.sweeper.pruner=median"], tmp_path)
    assert parent.sweep_key(cfg) == parent.sweep_key(more) != parent.sweep_key(other)
    settings, space = plan_search(cfg)
    study = open_study(settings, space)
    first = [study.ask(space.distributions) for _ in range(2)]
    for trial in first:
        study.tell(trial.number, 0.5)
    settings, space = plan_search(more)
    again = open_study(settings, space)
    assert again.study_name == study.study_name and len(again.trials) == 2
    third = again.ask(space.distributions)
    assert third.number == 2
    # Seeded past the trials it has: not the first trial's draw again.
    assert third.params["optimizer.lr"] not in {t.params["optimizer.lr"] for t in first}


def test_a_study_of_another_search_under_the_name_is_refused_before_anything(tmp_path):
    named = ["hydra.sweeper.study_name=mine"]
    settings, space = plan_search(search_config(["optimizer.lr=interval(0.01,0.3)"], named,
                                                tmp_path))
    open_study(settings, space)
    other_space = search_config(["optimizer.lr=interval(0.01,0.5)"], named, tmp_path)
    with pytest.raises(SearchError, match="searched another space"):
        plan_search(other_space)
    other_goal = search_config(["optimizer.lr=interval(0.01,0.3)"],
                               [*named, "hydra.sweeper.objectives=[val/loss]"], tmp_path)
    with pytest.raises(SearchError, match=r"searches \['val/acc_best'\] \(maximize\)"):
        plan_search(other_goal)


@pytest.mark.parametrize(
    "storage, says",
    [
        ("postgresql+psycopg://denselab:s3cret@127.0.0.1:9/optuna", "does not answer"),
        ("redis://127.0.0.1:6379", "neither a database URL"),
        ("/no/such/folder/study.log", "its folder does not exist"),
    ],
    ids=["no-server", "not-a-storage", "journal-folder"],
)
def test_a_storage_that_cannot_hold_the_study_is_refused_without_its_password(storage, says):
    cfg = search_config(["optimizer.lr=interval(0.01,0.3)"], [f"hydra.sweeper.storage={storage}"])
    with pytest.raises(SearchError, match=says) as refused:
        check_study(search_settings(cfg, "k"), search_space(None, ["optimizer.lr=choice(1,2)"]))
    assert "s3cret" not in str(refused.value)


def test_a_journal_file_holds_a_study_too(tmp_path):
    cfg = search_config(["optimizer.lr=interval(0.01,0.3)"],
                        [f"hydra.sweeper.storage={tmp_path}/study.log"])
    settings, space = plan_search(cfg)
    study = open_study(settings, space)
    study.tell(study.ask(space.distributions).number, 0.9)
    assert open_study(settings, space).best_value == 0.9


def test_trials_are_told_what_their_jobs_left(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    space = {"x": FloatDistribution(0, 1)}
    done, pruned, failed, empty = (study.ask(space) for _ in range(4))
    done.set_user_attr(VALUES_ATTR, [0.75])
    pruned.set_user_attr(VALUES_ATTR, [0.25])
    pruned.set_user_attr(PRUNED_ATTR, 1)
    ok = JobReturn(status=JobStatus.COMPLETED, _return_value=0.75)
    bad = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("lr must be > 0"))
    nan = JobReturn(status=JobStatus.COMPLETED, _return_value=math.nan)
    assert tell(study, done.number, ok).name == "COMPLETE"
    assert tell(study, pruned.number, ok).name == "PRUNED"
    assert tell(study, failed.number, bad).name == "FAIL"
    assert tell(study, empty.number, nan).name == "FAIL"
    assert study.best_value == 0.75
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]


# -- the story --------------------------------------------------------------------------------


def test_the_course_networks_are_named_on_the_front():
    mnist = {"input_shape": "1x28x28"}
    assert network_label({"model.hidden_sizes": "[128]", "params_total": "101770"}, mnist) == (
        "784-128-10 (course)", True)
    assert network_label({"model.hidden_sizes": "[]", "params_total": "7850"}, mnist) == (
        "784-10 (course, multinomial)", True)
    assert network_label({"model.hidden_sizes": "[256, 128]", "params_total": "235146"},
                         mnist) == ("784-256-128-10", False)
    assert network_label({"model.hidden_sizes": "[128]", "params_total": "9610"},
                         {"input_shape": "8x8"}) == ("64-128-10", False)


def test_the_history_draws_the_best_so_far_of_complete_trials():
    rows = [
        {"trial": 0, "state": "COMPLETE", "v": 0.5},
        {"trial": 1, "state": "PRUNED", "v": 0.9},  # from fewer epochs: not the best
        {"trial": 2, "state": "COMPLETE", "v": 0.7},
        {"trial": 3, "state": "FAIL", "v": None},
    ]
    fig = history_figure(rows, "v", "maximize")
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "best so far"]
    assert list(line.get_ydata()) == [0.5, 0.5, 0.7, 0.7]
    points = [
        {"v": 0.9, "p": 100, "front": True, "label": "a"},
        {"v": 0.8, "p": 50, "front": True, "label": "784-10 (course, multinomial)",
         "course": True},
        {"v": 0.7, "p": 200, "front": False, "label": "c"},
    ]
    fig = pareto_figure(points, ["v", "p"])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {"a", "784-10 (course, multinomial)"}


def test_a_sweep_job_reuses_only_whole_finished_runs_and_tags_them(
    store_uri, compose_cfg, monkeypatch
):
    """The finish-don't-redo rules on a real store, in a second: a FAILED or pruned run is
    no finished job, a reused run names the sweep that reused it, and
    tracking.skip_finished=false reuses nothing."""
    from mlflow import MlflowClient

    from denselab.sweeps import SWEEP_ENV
    from denselab.sweeps.job import ALSO_TAG, SweepJob, sweep_job
    from denselab.tracking.store import Store

    client = MlflowClient(store_uri)
    experiment = client.create_experiment("digits")

    def ended(status: str, **tags) -> str:
        run = client.create_run(experiment, tags={"config_hash": "abc", **tags})
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    whole = ended("FINISHED")
    ended("FINISHED", **{"optuna.state": "PRUNED"})  # newer, but it stopped early
    ended("FAILED")  # newer still: a failed try is run anew, not reused
    parent = client.create_run(experiment, tags={"swept": "seed"}).info.run_id
    monkeypatch.setenv(SWEEP_ENV, parent)
    cfg = compose_cfg(["data=digits", f"tracking.uri={store_uri}"])
    job = sweep_job(cfg, ["seed=1"], Store(store_uri))
    assert job.values == {"seed": "1"}
    found = job.finished_run("abc")
    assert found.info.run_id == whole
    job.reuse(found)
    assert client.get_run(whole).data.tags[ALSO_TAG] == parent
    fresh = compose_cfg(["data=digits", f"tracking.uri={store_uri}",
                         "tracking.skip_finished=false"])
    assert sweep_job(fresh, ["seed=1"], Store(store_uri)).finished_run("abc") is None
    assert isinstance(job, SweepJob)
