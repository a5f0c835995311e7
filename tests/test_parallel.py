"""helpers.engine.parallel: which runs train side by side in worker processes, and that they give the numbers of runs in
turn."""

from __future__ import annotations

import pytest
import torch

from helpers.engine import parallel
from helpers.sections import make_config, mlp
from tests.test_config import MLP

CFG = make_config("mlp", **{**MLP, "device": "cpu"})


def settings(**changes) -> dict:
    return {**CFG, "hidden_sizes": [32, 16], "activation": "relu", "epochs": 2, "batch_size": 32,
            "output_dir": None, **changes}


@pytest.fixture(autouse=True)
def any_amount_of_training(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_IMAGES", 0)  # the fake data set is tiny


def test_small_cpu_runs_are_planned_side_by_side(monkeypatch, fake_sets):
    monkeypatch.setenv(parallel.ENV, "2")
    runs = [settings(optimizer="adam"), settings(optimizer="rmsprop"), settings(optimizer="sgd")]
    assert parallel.plan_workers(mlp.train_one, runs, train=fake_sets["train"]) == 2
    assert parallel.plan_workers(mlp.train_one, runs[:1], train=fake_sets["train"]) == 1  # one run: in turn
    monkeypatch.setattr(parallel, "MIN_IMAGES", 10 ** 9)
    assert parallel.plan_workers(mlp.train_one, runs, train=fake_sets["train"]) == 1  # too little to pay for workers


def test_what_stays_in_turn(monkeypatch, fake_sets):
    monkeypatch.setenv(parallel.ENV, "2")
    runs = [settings(), settings(optimizer="sgd")]
    train = fake_sets["train"]

    def closure(s, **kw):  # cannot be sent to another process
        return mlp.train_one(s, **kw)

    closure.build_model = mlp.build_model
    assert parallel.plan_workers(closure, runs, train=train) == 1
    assert parallel.plan_workers(lambda s, **kw: None, runs, train=train) == 1  # nothing to size the runs by
    monkeypatch.setenv(parallel.ENV, "1")
    assert parallel.plan_workers(mlp.train_one, runs, train=train) == 1
    monkeypatch.setenv(parallel.ENV, "2")
    monkeypatch.setattr(parallel, "SMALL_STEP_FLOPS", 1.0)  # every step "large": all threads, in turn
    assert parallel.plan_workers(mlp.train_one, runs, train=train) == 1


def test_worker_limit(monkeypatch):
    monkeypatch.delenv(parallel.ENV, raising=False)
    assert 1 <= parallel.worker_limit() <= max(1, torch.get_num_threads())
    monkeypatch.setenv(parallel.ENV, "many")
    with pytest.raises(ValueError, match="HELPERS_WORKERS='many': allowed: a whole number >= 1"):
        parallel.worker_limit()


def test_runs_in_workers_give_the_numbers_of_runs_in_turn(fake_sets):
    train, val = fake_sets["train"], fake_sets["test"]
    jobs = [{"train_one": mlp.train_one, "settings": settings(optimizer=o, regularizer=r), "train": train,
             "val": val, "seed": 3, "desc": o, "index": i + 1, "total": 3, "name": o}
            for i, (o, r) in enumerate([("adam", "dropout"), ("rmsprop", "batch_norm"), ("sgd", "none")])]
    side_by_side = parallel.train_runs(jobs, workers=2)
    in_turn = parallel.train_runs(jobs, workers=1)
    for a, b in zip(side_by_side, in_turn):
        assert list(a["history"]) == [{**row, "seconds": a_row["seconds"]} for row, a_row in zip(b["history"], a["history"])]
        assert a["history"].stop_reason == b["history"].stop_reason == "completed"
        assert all(torch.equal(x, y) for x, y in zip(a["model"].state_dict().values(), b["model"].state_dict().values()))
