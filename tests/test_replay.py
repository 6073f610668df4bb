import csv
import dataclasses
import threading
import time

import pytest
import torch

from tracker.replay import BackgroundBatches, ReplayMemory
from tracker.train import RECIPES, train, training_batches

SMOKE = RECIPES["smoke"]


def _batch(first: int, count: int) -> dict[str, torch.Tensor]:
    values = torch.arange(first, first + count)
    return {"index": values, "image": values.float()[:, None, None].expand(count, 2, 3).clone()}


def test_replay_memory_keeps_the_newest_examples():
    memory = ReplayMemory(5, torch.device("cpu"))
    assert memory.add(_batch(0, 3)) == 3 and len(memory) == 3
    memory.add(_batch(3, 4))  # wraps around: 0 and 1 make room
    assert len(memory) == 5
    drawn = memory.sample(200, torch.Generator().manual_seed(0))
    assert set(drawn["index"].tolist()) == {2, 3, 4, 5, 6}  # 200 draws from 5 miss one with p < 1e-19
    assert torch.equal(drawn["image"][:, 1, 2], drawn["index"].float())  # fields stay together
    memory.add(_batch(10, 8))  # larger than the memory: only its newest 5 fit
    assert set(memory.sample(200, torch.Generator().manual_seed(1))["index"].tolist()) == {13, 14, 15, 16, 17}
    partly = ReplayMemory(5, torch.device("cpu"))
    partly.add(_batch(7, 2))  # only the filled slots are drawn from
    assert set(partly.sample(200, torch.Generator().manual_seed(2))["index"].tolist()) == {7, 8}
    with pytest.raises(ValueError, match="empty"):
        ReplayMemory(3, torch.device("cpu")).sample(1, torch.Generator())
    with pytest.raises(ValueError, match=">= 1"):
        ReplayMemory(0, torch.device("cpu"))


def test_background_batches_keep_order_end_and_report_failures():
    background = BackgroundBatches(_batch(i, 1) for i in range(6))
    assert [int(background.get(block=True)["index"]) for _ in range(6)] == list(range(6))
    assert background.get(block=True) is None and background.ended
    assert background.get(block=True) is None  # and stays ended, without waiting
    background.close()

    def failing():
        yield _batch(0, 1)
        raise OSError("worker died")

    background = BackgroundBatches(failing())
    assert int(background.get(block=True)["index"]) == 0
    with pytest.raises(RuntimeError, match="stream failed") as error:
        background.get(block=True)
    assert isinstance(error.value.__cause__, OSError)
    background.close()

    slow = BackgroundBatches(time.sleep(0.5) or _batch(0, 1) for _ in range(1))
    assert slow.get(block=False) is None  # nothing ready yet: no waiting
    slow.close()


def test_batches_without_replay_are_the_loaders_own():
    config = dataclasses.replace(SMOKE, batch_size=2)
    loader = [_batch(0, 2), _batch(2, 2)]
    got = list(training_batches(loader, config, torch.device("cpu")))
    # Each batch with the stream indices it took in: its own.
    assert [(b["index"].tolist(), taken.tolist()) for b, taken in got] == [([0, 1], [0, 1]), ([2, 3], [2, 3])]


def test_replay_draws_each_rendered_example_at_most_max_uses_times_on_average():
    config = dataclasses.replace(SMOKE, batch_size=2, replay_examples=4, replay_max_uses=2.5)
    loader = [_batch(2 * i, 2) for i in range(5)]  # 10 examples in all, then the stream ends
    got = list(training_batches(loader, config, torch.device("cpu")))
    rendered = sum(len(taken) for _, taken in got)
    # 10 rendered, 2.5 uses each -> 25 draws at most -> 12 batches of 2 (fewer when the
    # loader runs ahead and overwrites examples before they are drawn).
    assert rendered == 10 and 2 <= len(got) <= 12
    seen_so_far = 0
    for count, (batch, taken) in enumerate(got, start=1):
        seen_so_far += len(taken)
        assert 2 * count <= 2.5 * seen_so_far  # the cap holds at every step, not just at the end
        assert batch["index"].max() < seen_so_far  # nothing drawn before it was rendered
        assert batch["index"].min() >= seen_so_far - 4  # nor after it left the memory


def test_a_stream_that_runs_ahead_then_stops_does_not_let_the_last_examples_be_drawn_over_and_over():
    # The loader renders 160 examples while the first steps are slow, then ends: only the
    # last 8 are still in the memory, and they may give 2 uses each, 4 batches of 4, not the
    # 2 x 160 draws that every example ever rendered would allow.
    config = dataclasses.replace(SMOKE, batch_size=4, replay_examples=8, replay_max_uses=2.0)
    got = []
    for step, (batch, taken) in enumerate(training_batches((_batch(4 * i, 4) for i in range(40)), config, torch.device("cpu"))):
        got.append(len(taken))
        if step < 10:
            time.sleep(0.05)
    last_intake = max(i for i, count in enumerate(got) if count)
    assert sum(got) == 160 and len(got) - 1 - last_intake <= 4, got


def test_training_with_replay_counts_rendered_and_drawn_examples(tmp_path, monkeypatch):
    yielded = []

    def recorded(*args, **kwargs):
        for batch, taken in training_batches(*args, **kwargs):
            yielded.append(len(taken))
            yield batch, taken

    monkeypatch.setattr("tracker.train.training_batches", recorded)
    config = dataclasses.replace(SMOKE, steps=6, batch_size=2, replay_examples=4, replay_max_uses=3.0, checkpoint_every=100)
    summary = train(config, tmp_path, progress=False)
    assert summary["examples_trained"] == 12
    # What the six trained batches took in from the stream (a seventh may have been drawn
    # when the loop stopped, untrained and uncounted).
    assert summary["samples_seen"] == sum(yielded[:6]) >= 4  # 12 draws / 3 uses at least
    assert not any(t.name == "training-batches" and t.is_alive() for t in threading.enumerate())
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["examples_trained"]) for r in rows] == [2 * s for s in range(1, 7)]
    assert int(rows[-1]["samples_seen"]) == summary["samples_seen"]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (state["samples_seen"], state["examples_trained"]) == (summary["samples_seen"], 12)


def test_impossible_replay_settings_are_refused(tmp_path):
    for bad in ({"replay_examples": 1}, {"replay_examples": 8, "replay_max_uses": 0.5}, {"replay_examples": 8, "replay_max_uses": float("nan")}, {"replay_examples": -1}):
        with pytest.raises(ValueError, match="replay"):
            train(dataclasses.replace(SMOKE, **bad), tmp_path, progress=False)


def test_resuming_a_run_keeps_its_metrics_columns(tmp_path):
    train(SMOKE, tmp_path, progress=False)
    # A run written before the replay columns existed.
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.reader(f))
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows(row[:10] for row in rows)
    train(dataclasses.replace(SMOKE, steps=SMOKE.steps + 2), tmp_path, progress=False)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, SMOKE.steps + 3))
    assert all(None not in r and len(r) == 10 for r in rows)
