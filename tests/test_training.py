"""helpers.engine.training: devices, seeding, optimizers, schedules, the fit loop, checkpoints and resuming."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import helpers.engine.speed as speed
import helpers.engine.training as ht
from helpers.data.augment import Augment
from helpers.data.fashion import ImageSet
from helpers.engine.checkpoints import load_checkpoint
from helpers.engine.optim import l1_penalty, make_optimizer, make_scheduler
from helpers.engine.training import (
    FitSettings,
    History,
    fit,
    loss_and_accuracy,
    predict,
    resolve_device,
    seed_everything,
)
from helpers.models.networks import build_cnn, build_mlp

pytestmark = pytest.mark.usefixtures("torch_single_thread")

HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
CKPT_KEYS = {"model", "optimizer", "scheduler", "epoch", "history", "best_val_loss", "rng_data", "rng_torch",
             "rng_aug", "rng_cuda", "stop_reason"}


@pytest.fixture(scope="module")
def sets(fake_sets):
    return {"train": fake_sets["train"], "val": fake_sets["test"]}


@pytest.fixture(scope="module")
def wrong_val(fake_sets) -> ImageSet:
    """The test images with every label moved to the next class: learning the task makes its loss grow."""
    test = fake_sets["test"]
    return ImageSet(test.X, (test.y + 1) % 10, list(test.class_names))


def mlp(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    kw.setdefault("hidden_sizes", (32,))
    kw.setdefault("activation", "relu")
    return build_mlp(**kw)


def run(model, sets, **kw) -> History:
    kw.setdefault("num_epochs", 3)
    kw.setdefault("batch_size", 32)
    return fit(model, sets["train"], sets.get("val"), progress=False, device="cpu", **kw)


def rows(history) -> list[dict]:
    """History rows without the wall-clock time (the only field that may differ between equal runs)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float()) for k in sa)


def assert_same_histories(h1, h2):
    r1, r2 = rows(h1), rows(h2)
    assert [r["epoch"] for r in r1] == [r["epoch"] for r in r2]
    for a, b in zip(r1, r2, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (k, a, b)


# --- devices and seeding ------------------------------------------------------------------------------


def test_resolve_device_auto_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="an accelerator is here")
def test_resolve_device_auto_here():
    assert resolve_device("auto").type == "cpu"


def test_resolve_device_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_resolve_device_explicit():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    dev = torch.device("cpu")
    assert resolve_device(dev) is dev


@pytest.mark.parametrize("bad", ["tpu", "gpu", "CPU", "xla:0", ""])
def test_resolve_device_bad(bad):
    with pytest.raises(ValueError, match=re.escape(f"device={bad!r}: unknown; allowed: auto, cpu, cuda, mps")):
        resolve_device(bad)


def test_seed_everything():
    import random

    import numpy as np

    seed_everything(11)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# --- optimizers and schedules ---------------------------------------------------------------------------


def test_make_optimizer_kinds_and_settings():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer("SGD", params, lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-4)
    assert type(sgd) is torch.optim.SGD
    assert sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"] is True
    assert sgd.defaults["weight_decay"] == 1e-4 and sgd.defaults["lr"] == 0.1
    assert make_optimizer("sgd", params, lr=0.1, momentum=0.0, nesterov=True).defaults["nesterov"] is False
    assert type(make_optimizer("adam", params, lr=1e-3)) is torch.optim.Adam
    assert type(make_optimizer("adamw", params, lr=1e-3, weight_decay=0.01)) is torch.optim.AdamW
    assert type(make_optimizer("rmsprop", params, lr=1e-3)) is torch.optim.RMSprop


def test_unknown_optimizer_lists_allowed_values(sets):
    message = "optimizer='lbfgs': unknown; allowed: sgd, adam, adamw, rmsprop"
    with pytest.raises(ValueError, match=re.escape(message)):
        make_optimizer("lbfgs", [nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=re.escape(message)):
        run(mlp(), sets, optimizer="lbfgs")


@pytest.mark.parametrize("lr", [0, -0.1])
def test_bad_lr(lr):
    with pytest.raises(ValueError, match=re.escape(f"lr={lr!r}: must be > 0")):
        make_optimizer("adam", [nn.Parameter(torch.zeros(1))], lr=lr)


def test_unknown_schedule_lists_allowed_values(sets):
    message = "schedule='linear': unknown; allowed: none, step, cosine, onecycle"
    with pytest.raises(ValueError, match=re.escape(message)):
        run(mlp(), sets, schedule="linear")


def test_make_scheduler_step():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler("step", opt, total_steps=100, steps_per_epoch=5, lr=1.0, step_epochs=2, gamma=0.5)
    lrs = []
    for _ in range(20):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[8] == 1.0 and lrs[9] == 0.5 and lrs[19] == 0.25  # every 2 epochs of 5 steps
    assert make_scheduler("none", opt, total_steps=1, steps_per_epoch=1, lr=1.0) is None


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 1e-3), ("adamw", 1e-3), ("rmsprop", 1e-3)])
def test_optimizers_train(sets, optimizer, lr):
    history = run(mlp(), sets, optimizer=optimizer, lr=lr, weight_decay=1e-4)
    assert history.stop_reason == "completed"
    losses = history.column("train_loss")
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("schedule", ["none", "step", "cosine", "onecycle"])
def test_schedules_run_and_shape_the_lr(sets, schedule):
    lr = 0.01
    history = run(mlp(), sets, schedule=schedule, lr=lr, num_epochs=4)
    assert len(history) == 4 and history.stop_reason == "completed"
    lrs = history.column("lr")
    if schedule in ("none", "step"):  # step decays every 10 epochs
        assert lrs == [lr] * 4
    elif schedule == "cosine":
        assert lrs == sorted(lrs, reverse=True) and lrs[0] < lr
        assert lrs[-1] == pytest.approx(0.0, abs=1e-9)  # annealed to zero at the last step
    else:  # one cycle: warm up to lr in the first quarter, then anneal far below the start
        assert lrs[0] > lr / 25 and max(lrs) <= lr
        assert lrs[-1] < lr / 100
    assert history[-1]["train_loss"] < history[0]["train_loss"]


# --- the fit loop -----------------------------------------------------------------------------------------


def test_history_keys_length_and_helpers(sets, tmp_path):
    model = mlp()
    history = run(model, sets, num_epochs=3, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert isinstance(history, History) and isinstance(history, list)
    assert len(history) == 3
    assert all(set(r) == HISTORY_KEYS for r in history)
    assert history.column("epoch") == [1, 2, 3]
    assert history.stop_reason == "completed"
    # each epoch's validation numbers are those of the model as it was at the end of that epoch, and its training
    # accuracy is right answers over training images (batches of 32: the last of the 200 images is a smaller one)
    for r in history:
        model.load_state_dict(load_checkpoint(tmp_path / f"epoch_{r['epoch']:03d}.pt")["model"])
        assert [r["val_loss"], r["val_acc"]] == pytest.approx(list(loss_and_accuracy(model, sets["val"], device="cpu")))
        assert r["train_acc"] * len(sets["train"]) == pytest.approx(round(r["train_acc"] * len(sets["train"])))
    assert history.seconds == pytest.approx(sum(r["seconds"] for r in history))
    val = history.column("val_loss")
    assert history.best_epoch == 1 + val.index(min(val))


def test_history_without_validation(sets):
    history = fit(mlp(), sets["train"], None, num_epochs=2, progress=False, device="cpu")
    assert history.column("val_loss") == [None, None] and history.column("val_acc") == [None, None]
    assert history.best_epoch is None


def test_loss_decreases_and_model_learns(sets):
    model = mlp()
    history = run(model, sets, num_epochs=6)
    losses = history.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert history.column("val_loss")[-1] < history.column("val_loss")[0]
    assert history[-1]["val_acc"] >= 0.8  # the fake classes are easy
    # the history's last validation numbers are those of the returned model
    loss, acc = loss_and_accuracy(model, sets["val"], device="cpu")
    assert loss == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    assert acc == pytest.approx(history[-1]["val_acc"])


def test_cnn_trains(sets):
    torch.manual_seed(0)
    model = build_cnn(blocks=[{"channels": 4}], hidden_sizes=(16,), dropout=0.1)
    history = run(model, sets, num_epochs=2, augment=Augment(hflip=True, crop_padding=2))
    assert len(history) == 2 and history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("kwargs", [{"num_epochs": 0}, {"num_epochs": 2, "batch_size": 0}])
def test_fit_bad_sizes(sets, kwargs):
    with pytest.raises(ValueError, match="both must be >= 1"):
        run(mlp(), sets, **kwargs)


def test_fit_settings_object_trains_as_keywords_do(sets):
    """One FitSettings object, with a keyword overriding one field, trains exactly as the same keywords."""
    settings = FitSettings(num_epochs=2, batch_size=32, optimizer="sgd", lr=0.05, seed=5, progress=False)
    a, b = mlp(), mlp()
    by_object = fit(a, sets["train"], sets["val"], settings, lr=0.02, device="cpu")
    by_keywords = run(b, sets, num_epochs=2, optimizer="sgd", lr=0.02, seed=5)
    assert rows(by_object) == rows(by_keywords) and same_weights(a, b)
    assert settings.lr == 0.05  # frozen: the override made a new object
    with pytest.raises(TypeError, match="epochs"):
        fit(mlp(), sets["train"], None, epochs=2)  # the one name is num_epochs


def test_seed_determinism(sets):
    kw = {"num_epochs": 2, "augment": Augment(noise_std=0.05, erasing=0.3)}
    a, b, c = mlp(dropout=0.2), mlp(dropout=0.2), mlp(dropout=0.2)
    ha, hb, hc = run(a, sets, seed=3, **kw), run(b, sets, seed=3, **kw), run(c, sets, seed=4, **kw)
    assert rows(ha) == rows(hb)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert rows(ha) != rows(hc)
    assert not same_weights(a, c)


def test_l1_penalty_value():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -0.5]]))
        lin.bias.fill_(100.0)  # biases are not penalised
    model = nn.Sequential(lin, nn.BatchNorm1d(2))  # nor are norm layers (1-d parameters)
    assert l1_penalty(model).item() == pytest.approx(7.0)


def test_l1_changes_training(sets):
    plain, sparse = mlp(), mlp()
    h_plain = run(plain, sets, num_epochs=3)
    h_l1 = run(sparse, sets, num_epochs=3, l1=1e-3)
    assert not same_weights(plain, sparse)
    assert l1_penalty(sparse).item() < l1_penalty(plain).item()
    # the reported training loss includes the penalty
    assert h_l1[0]["train_loss"] > h_plain[0]["train_loss"]


def test_label_smoothing_changes_loss(sets):
    h0 = run(mlp(), sets, num_epochs=1)
    h1 = run(mlp(), sets, num_epochs=1, label_smoothing=0.2)
    assert h0[0]["train_loss"] != h1[0]["train_loss"]


def test_early_stopping(sets, wrong_val):
    history = run(mlp(), {"train": sets["train"], "val": wrong_val}, num_epochs=30, patience=2)
    assert len(history) < 30
    assert len(history) == history.best_epoch + 2
    assert history.stop_reason == (f"early stopping at epoch {len(history)}: "
                                   "no lower validation loss for 2 epochs")


def test_restore_best(sets, wrong_val):
    model = mlp()
    history = run(model, {"train": sets["train"], "val": wrong_val}, num_epochs=4, restore_best=True)
    assert history.best_epoch < 4
    loss, _ = loss_and_accuracy(model, wrong_val, device="cpu")
    assert loss == pytest.approx(min(history.column("val_loss")), rel=1e-5)
    assert loss < history[-1]["val_loss"]


class NaNModel(nn.Module):
    """Logits become NaN from the ``after``-th forward call in training mode on."""

    def __init__(self, after: int = 0):
        super().__init__()
        self.lin = nn.Linear(784, 10)
        self.after, self.calls = after, 0

    def forward(self, x):
        out = self.lin(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                return out * float("nan")
        return out


def test_nan_from_the_start_stops_without_raising(sets, tmp_path):
    history = run(NaNModel(), sets, num_epochs=3, checkpoint_dir=tmp_path)
    assert len(history) == 0
    assert history.stop_reason == "non-finite loss (nan) at epoch 1, batch 1"
    assert not (tmp_path / "last.pt").exists()


def test_nan_later_keeps_finished_epochs(sets, tmp_path):
    history = run(NaNModel(after=7 + 2), sets, num_epochs=3, checkpoint_dir=tmp_path)  # 7 batches per epoch
    assert len(history) == 1
    assert history.stop_reason == "non-finite loss (nan) at epoch 2, batch 3"
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_huge_lr_diverges_without_raising(sets):
    history = run(mlp(), sets, optimizer="sgd", lr=1e10, num_epochs=3)
    assert history.stop_reason.startswith("non-finite loss")
    assert len(history) < 3


# --- checkpoints and resuming ------------------------------------------------------------------------------


def test_checkpoint_files(sets, tmp_path):
    history = run(mlp(), sets, num_epochs=4, checkpoint_dir=tmp_path, checkpoint_every=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pt", "epoch_002.pt", "epoch_004.pt", "last.pt"]
    for name in names:  # plain tensors and data only: loadable without unpickling code
        torch.load(tmp_path / name, map_location="cpu", weights_only=True)
    last = load_checkpoint(tmp_path / "last.pt")
    assert set(last) == CKPT_KEYS
    assert last["epoch"] == 4 and rows(last["history"]) == rows(history)
    assert last["best_val_loss"] == pytest.approx(min(history.column("val_loss")))
    assert last["rng_aug"] is None and last["rng_cuda"] is None  # CPU: one generator for all
    assert load_checkpoint(tmp_path / "epoch_002.pt")["epoch"] == 2
    assert len(load_checkpoint(tmp_path / "epoch_002.pt")["history"]) == 2
    best = load_checkpoint(tmp_path / "best.pt")
    assert set(best) == {"model", "epoch", "val_loss"}
    assert best["epoch"] == history.best_epoch
    fresh = mlp(seed=5)
    fresh.load_state_dict(best["model"])
    loss, _ = loss_and_accuracy(fresh, sets["val"], device="cpu")
    assert loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert not list(tmp_path.glob("*.tmp"))


def test_best_checkpoint_is_the_best_epoch(sets, wrong_val, tmp_path):
    history = run(mlp(), {"train": sets["train"], "val": wrong_val}, num_epochs=4, checkpoint_dir=tmp_path)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == history.best_epoch < 4
    assert best["val_loss"] == pytest.approx(min(history.column("val_loss")))


AUGMENT = Augment(hflip=True, noise_std=0.05, crop_padding=2, erasing=0.3)
RESUME_SETTINGS = {
    "adam": {"optimizer": "adam"},
    "sgd_l1_augment": {"optimizer": "sgd", "lr": 0.05, "nesterov": True, "l1": 1e-5, "augment": AUGMENT},
}
# a schedule's length is fixed by num_epochs, so these resume only a run interrupted before its num_epochs
RESUME_SCHEDULED = {
    "rmsprop_cosine": {"optimizer": "rmsprop", "schedule": "cosine", "augment": AUGMENT},
    "sgd_onecycle_augment": {"optimizer": "sgd", "lr": 0.05, "schedule": "onecycle", "augment": AUGMENT},
}


@pytest.mark.parametrize("setting", list(RESUME_SETTINGS))
def test_resume_from_last_equals_uninterrupted(sets, tmp_path, setting):
    """2 epochs, then resumed from last.pt up to 4, ends where 4 epochs in one go end."""
    kw = RESUME_SETTINGS[setting]
    whole = mlp(dropout=0.2, batch_norm=True)
    h_whole = run(whole, sets, num_epochs=4, **kw)
    first = mlp(dropout=0.2, batch_norm=True)
    run(first, sets, num_epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed = mlp(seed=123, dropout=0.2, batch_norm=True)  # other initial weights: all come from the checkpoint
    h_resumed = run(resumed, sets, num_epochs=4, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt", **kw)
    assert len(h_resumed) == 4 and h_resumed.column("epoch") == [1, 2, 3, 4]
    assert_same_histories(h_whole, h_resumed)
    assert same_weights(whole, resumed)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4


@pytest.mark.parametrize("setting", list(RESUME_SETTINGS) + list(RESUME_SCHEDULED))
def test_resume_from_epoch_checkpoint(sets, tmp_path, setting):
    """An interrupted run (same num_epochs) continued from epoch_002.pt ends where the whole run ends."""
    kw = {**RESUME_SETTINGS, **RESUME_SCHEDULED}[setting]
    whole = mlp(dropout=0.2, batch_norm=True)
    h_whole = run(whole, sets, num_epochs=4, checkpoint_dir=tmp_path / "a", checkpoint_every=1, **kw)
    resumed = mlp(seed=123, dropout=0.2, batch_norm=True)
    h_resumed = run(resumed, sets, num_epochs=4, checkpoint_dir=tmp_path / "b",
                    resume_from=tmp_path / "a" / "epoch_002.pt", **kw)
    assert h_resumed.column("epoch") == [1, 2, 3, 4]
    assert_same_histories(h_whole, h_resumed)
    assert same_weights(whole, resumed)
    # the continued run writes the same final checkpoint
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert torch.equal(a["rng_data"], b["rng_data"]) and torch.equal(a["rng_torch"], b["rng_torch"])


def test_resume_from_checkpoint_without_extra_rng_states(sets, tmp_path):
    """Checkpoints written before rng_aug/rng_cuda existed still resume."""
    whole = mlp()
    run(whole, sets, num_epochs=3, checkpoint_dir=tmp_path, checkpoint_every=1)
    old = load_checkpoint(tmp_path / "epoch_002.pt")
    del old["rng_aug"], old["rng_cuda"]
    torch.save(old, tmp_path / "old.pt")
    resumed = mlp(seed=1)
    run(resumed, sets, num_epochs=3, resume_from=tmp_path / "old.pt")
    assert same_weights(whole, resumed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda_with_augmentation_and_dropout(sets, tmp_path):
    kw = {"num_epochs": 4, "augment": AUGMENT, "device": "cuda", "progress": False, "batch_size": 32}
    whole = mlp(dropout=0.3)
    h_whole = fit(whole, sets["train"], sets["val"], checkpoint_dir=tmp_path, checkpoint_every=1, **kw)
    resumed = mlp(seed=1, dropout=0.3)
    h_resumed = fit(resumed, sets["train"], sets["val"], resume_from=tmp_path / "epoch_002.pt", **kw)
    assert_same_histories(h_whole, h_resumed)
    assert same_weights(whole.cpu(), resumed.cpu())


def test_resume_when_already_finished(sets, tmp_path):
    model = mlp()
    history = run(model, sets, num_epochs=2, checkpoint_dir=tmp_path)
    again = mlp(seed=9)
    h_again = run(again, sets, num_epochs=2, resume_from=tmp_path / "last.pt")
    assert rows(h_again) == rows(history)
    assert same_weights(model, again)


# --- prediction helpers --------------------------------------------------------------------------------------


def test_predict_batches_and_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5))
    model.train()
    X = torch.rand(10, 1, 2, 2)
    logits = predict(model, X, batch_size=3, device="cpu")
    assert logits.shape == (10, 3)
    assert model.training  # mode restored
    model.eval()
    assert torch.allclose(logits, model(X))
    assert predict(model, X[:0], device="cpu").numel() == 0


def test_progress_env(monkeypatch):
    monkeypatch.setenv("HELPERS_PROGRESS", "0")
    assert ht.progress_enabled() is False
    monkeypatch.setenv("HELPERS_PROGRESS", "1")
    assert ht.progress_enabled() is True


# --- speed settings: threads, fused optimizers, mixed precision, test-time flips --------------------------------


def test_small_steps_train_on_one_thread_and_threads_come_back(sets):
    torch.set_num_threads(2)  # the module's fixture gives one; fit must choose, then restore
    try:
        small = run(mlp(), sets, num_epochs=1)
        assert small.threads == 1 and torch.get_num_threads() == 2
        flops = ht.step_flops(mlp(), sets["train"].X[:1], 32)
        assert 0 < flops < ht.SMALL_STEP_FLOPS
        assert ht.training_threads(ht.SMALL_STEP_FLOPS * 10, device=torch.device("cpu")) == 2
        assert ht.training_threads(None, device=torch.device("cpu")) == 2  # uncountable: torch's setting
    finally:
        torch.set_num_threads(1)


def test_step_flops_counts_a_batch_without_changing_the_mode():
    model = build_cnn(blocks=[{"channels": 4}, {"channels": 8}], hidden_sizes=(16,))
    model.train()
    one = ht.step_flops(model, torch.rand(1, 1, 28, 28), 1)
    assert ht.step_flops(model, torch.rand(1, 1, 28, 28), 64) == pytest.approx(64 * one)
    assert model.training


def test_fused_optimizers_where_torch_has_them():
    params = list(mlp().parameters())
    for name in ("sgd", "adam", "adamw"):
        assert make_optimizer(name, params, lr=0.01).defaults.get("fused") is True
    assert make_optimizer("rmsprop", params, lr=0.01).defaults.get("foreach") is True


def test_autocast_dtype_rules(monkeypatch):
    cpu = torch.device("cpu")
    big, small = ht.SMALL_STEP_FLOPS * 10, ht.SMALL_STEP_FLOPS / 10
    assert ht.autocast_dtype("fp32", cpu, big) is None
    assert ht.autocast_dtype("bf16", cpu, small) is torch.bfloat16
    monkeypatch.setattr(speed, "native_bf16", lambda device: True)
    assert ht.autocast_dtype("auto", cpu, big) is torch.bfloat16
    assert ht.autocast_dtype("auto", cpu, small) is None  # an MLP gains nothing from it
    monkeypatch.setattr(speed, "native_bf16", lambda device: False)
    assert ht.autocast_dtype("auto", cpu, big) is None
    with pytest.raises(ValueError, match="precision='fp16': unknown; allowed: auto, fp32, bf16"):
        ht.autocast_dtype("fp16", cpu, big)


def test_bf16_training_keeps_float32_weights_and_says_so(sets):
    torch.manual_seed(0)
    model = build_cnn(blocks=[{"channels": 4}, {"channels": 8}], hidden_sizes=(16,))
    history = run(model, sets, num_epochs=2, precision="bf16")
    assert history.precision == "bf16 mixed" and run(mlp(), sets, num_epochs=1).precision == "fp32"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert math.isfinite(history[-1]["train_loss"]) and history[-1]["val_acc"] is not None


def test_bf16_runs_repeat_exactly(sets):
    def once():
        torch.manual_seed(0)
        model = build_cnn(blocks=[{"channels": 4}, {"channels": 8}], hidden_sizes=(16,))
        return run(model, sets, num_epochs=2, precision="bf16"), model

    (h1, m1), (h2, m2) = once(), once()
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_test_flip_averages_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = build_cnn(blocks=[{"channels": 4}, {"channels": 8}], hidden_sizes=(16,)).eval()
    X = torch.rand(5, 1, 28, 28)
    plain = predict(model, X, device="cpu")
    ht.set_test_flip(model)
    flipped = predict(model, X, device="cpu")
    with torch.no_grad():
        expected = (model(X).softmax(1) + model(X.flip(-1)).softmax(1)) / 2
    assert torch.allclose(flipped.softmax(1), expected, atol=1e-6)
    assert not torch.allclose(plain, flipped)
    assert torch.allclose(flipped.exp().sum(1), torch.ones(5), atol=1e-5)  # log-probabilities, usable as logits
    ht.set_test_flip(model, False)
    assert torch.equal(predict(model, X, device="cpu"), plain)


def test_latency_counts_the_mirror_image():
    from helpers.engine.metrics import inference_latency, latency_frame

    model = ht.set_test_flip(build_cnn(blocks=[{"channels": 4}, {"channels": 8}], hidden_sizes=(16,)))
    latency = inference_latency(model, torch.rand(8, 1, 28, 28), large_batch=8, rounds=2, device="cpu")
    assert latency["test_flip"] is True
    assert "mirror" in latency_frame(latency).loc["latency, batch of 1", "value"]
