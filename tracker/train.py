"""Supervised training of Dual Grid Net on synthetic data rendered on the fly.

    python -m tracker.train --out runs/cpu --recipe cpu               # this machine
    torchrun --nproc-per-node 8 -m tracker.train --out runs/gpu --recipe gpu

Loss (paper eq. 4, plus terms on the vertices and keypoints):

    L = w_coords * |I_m - I_m*|^2 (hand pixels)  + w_mask * BCE(I_s, hand mask)
      + w_initial * |P_s - V*| + w_refined * |P_r - V*| + w_joints * |J_r - J*|

with distances in centimetres (crop-normalised units times half the cube). Runs unchanged
under ``torchrun``: DistributedDataParallel over gloo (CPU) or NCCL (GPU), each rank with
its own slice of the sample stream. Rank 0 writes ``config.json`` (the resolved config),
``metrics.csv``, checkpoints (``last.pt``, resumed automatically) and, at the end, the
exported weights (``export/``: dgn.pt, dgn.onnx, dgn.json). Ctrl-C or SIGTERM ends the run
after the step in progress with a checkpoint and an export (exit status 128 + the signal);
the same command resumes it. A step whose gradients are not finite is skipped, not taken.

Where the renderer cannot keep up with the optimiser (the ``gpu`` recipe), batches are
drawn from a replay memory of recent examples (``tracker.replay``); ``samples_seen`` then
counts the rendered examples and ``examples_trained`` the ones drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import fcntl
import json
import math
import multiprocessing.connection
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from tracker.crop import CropFrame, OutOfImage
from tracker.hand_model import HandModel
from tracker.machine import machine_info
from tracker.narrowing import WIDTHS, block_width, check_narrowing, narrow_into
from tracker.network import DualGridNet, DualGridNetConfig, count_parameters
from tracker.refit import Refit
from tracker.replay import BackgroundBatches, ReplayMemory
from tracker.signals import SignalHandlers
from tracker.synth.dataset import config_to_dict
from tracker.training_data import ExampleConfig, StreamLanes, SyntheticStream
from tracker.weights import ONNX, STATE_DICT, WeightsError, crop_frame_of, export_weights, load_manifest, load_network, out_of_image_of, verified_path

TRAIN_STREAM_SEED = 1  # held-out evaluation uses another stream (tracker.evaluate)


class DataStalled(RuntimeError):
    """No batch came from the data-loader workers within ``TrainConfig.data_timeout_s``."""


def _loader_timed_out(error: BaseException | None) -> bool:
    """Whether ``error`` (or what it was raised from) is the DataLoader's timeout."""
    while error is not None:
        if isinstance(error, RuntimeError) and "DataLoader timed out" in str(error):
            return True
        error = error.__cause__
    return False


class CheckpointError(OSError):
    """A checkpoint could not be written (a full disk, a folder gone). Not a RuntimeError, so
    the training loop never takes it for its data workers having stopped."""


class ResumeError(ValueError):
    """The run's checkpoint cannot be resumed with these settings."""


@dataclass(frozen=True)
class LossWeights:
    coords: float = 0.05
    mask: float = 0.5
    initial: float = 1.0
    refined: float = 1.0
    joints: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32  # per process
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    #: The refit's SVD gradients are wild while P_s is still noise; its terms start later.
    refit_start_step: int = 300
    workers: int = 2  # data-loader processes per rank
    #: Examples kept on the training device and drawn from when rendering cannot keep up
    #: with the optimiser (``tracker.replay``); 0: every batch is freshly rendered.
    replay_examples: int = 0
    #: With a replay memory, the most times each rendered example is drawn, on average.
    replay_max_uses: float = 4.0
    #: Seconds the loop waits for a batch from the data-loader workers before it gives up
    #: on them: a worker stuck in native code would otherwise hang the run for good. The
    #: first batch includes the workers' start-up and numba compilation (about a minute on
    #: two cores), so this is generous.
    data_timeout_s: float = 600.0
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 250
    device: str = "auto"
    network: DualGridNetConfig = field(default_factory=DualGridNetConfig)
    data: ExampleConfig = field(default_factory=ExampleConfig)
    loss: LossWeights = field(default_factory=LossWeights)


RECIPES = {
    # Two CPU cores: one renders, one trains. Small batches, as many steps as time allows.
    "cpu": TrainConfig(steps=3000, batch_size=16, workers=1, warmup_steps=100, refit_start_step=200),
    # One H100-class GPU with 16 CPU cores for rendering; <= 10 minutes (RECIPE_MINUTES:
    # its 15,000 steps would take about 18 at the 14 steps/s an H200 ran). 14 workers
    # rendered about 600 examples/s there, a fraction of what the GPU trains on, so batches
    # are drawn from the last 64k examples (6 GB on the GPU), each drawn 4 times on average
    # at most.
    "gpu": TrainConfig(
        steps=15000, batch_size=128, workers=14, learning_rate=3e-3, warmup_steps=300, refit_start_step=500,
        log_every=50, checkpoint_every=1000, replay_examples=65536, replay_max_uses=4.0,
    ),
    # A few steps, for tests and smoke runs.
    "smoke": TrainConfig(steps=4, batch_size=2, workers=0, warmup_steps=1, refit_start_step=2, log_every=1, checkpoint_every=2),
}


#: The time budget a recipe is made for (minutes), where it has one: a fresh run takes it
#: unless ``--max-minutes`` says otherwise, so that the schedule ends with it. Nine of the
#: gpu recipe's ten: the data workers' start-up is in it, the export (~20 s) is not.
RECIPE_MINUTES = {"gpu": 9.0}


@dataclasses.dataclass(frozen=True)
class ScheduleAnchor:
    """Where a resumed run's cosine went on from after its --steps changed: at ``step`` it
    had reached ``progress`` (0..1) of its decay, and it covers the rest by the new last
    step, so the learning rate goes on from where it was instead of jumping."""

    step: int
    progress: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved) -> "ScheduleAnchor | None":
        try:
            return cls(int(saved["step"]), min(max(float(saved["progress"]), 0.0), 1.0))
        except (KeyError, TypeError, ValueError):
            return None  # none recorded (an older checkpoint) or unreadable: the plain schedule


def _decay_progress(steps: int, warmup_steps: int, step: int, anchor: ScheduleAnchor | None) -> float:
    """How far along its cosine a schedule of ``steps`` steps is at ``step``."""
    if anchor is not None and step >= anchor.step:
        return anchor.progress + (1.0 - anchor.progress) * (step - anchor.step) / max(steps - anchor.step, 1)
    return (step - warmup_steps) / max(steps - warmup_steps, 1)


def learning_rate(config: TrainConfig, step: int, time_fraction: float = 0.0, anchor: ScheduleAnchor | None = None) -> float:
    """Linear warm-up, then a cosine to zero by the last step, or by the end of the time
    budget when that comes first (``time_fraction``: share of it used), so a run cut short
    by ``--max-minutes`` still ends its schedule instead of stopping at a high rate.
    ``anchor``: where a resume with other --steps took the cosine up (see ScheduleAnchor)."""
    def cosine(progress: float) -> float:
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    if step < config.warmup_steps:
        # A budget that ends during the warm-up still ends at a low rate.
        return min(config.learning_rate * (step + 1) / config.warmup_steps, cosine(time_fraction))
    return cosine(max(_decay_progress(config.steps, config.warmup_steps, step, anchor), time_fraction))


def resumed_schedule_anchor(saved_config: dict, saved_anchor: ScheduleAnchor | None, config: TrainConfig, step: int) -> ScheduleAnchor | None:
    """The anchor a run resumed at ``step`` goes on with: a new one where its --steps
    changed past the warm-up (taken at the progress the checkpoint's schedule had
    reached), else the checkpoint's own. A checkpoint whose cosine had already ended (its
    rate at zero) gets none: training it further at zero would change nothing, so the new
    schedule's rate at ``step`` applies, a warm restart."""
    try:
        saved_steps, saved_warmup = int(saved_config["steps"]), int(saved_config["warmup_steps"])
    except (KeyError, TypeError, ValueError):
        return saved_anchor
    if saved_steps == config.steps or step < max(saved_warmup, config.warmup_steps) or step >= config.steps:
        return saved_anchor
    progress = _decay_progress(saved_steps, saved_warmup, step, saved_anchor)
    return ScheduleAnchor(step, progress) if progress < 1.0 else None


def compute_losses(outputs: dict, batch: dict, refit: Refit, weights: LossWeights, use_refit: bool) -> dict[str, torch.Tensor]:
    """Loss terms (scalars); distances in cm, see the module docstring."""
    to_cm = (batch["cube_size_m"] * 50.0)[:, None]  # crop units -> centimetres
    valid = batch["coords_valid"]
    coord_error = ((outputs["mesh_coords"] - batch["mesh_coords"]) ** 2).sum(1, keepdim=True)
    terms = {
        "coords": (coord_error * valid).sum() / valid.sum().clamp_min(1.0),
        "mask": F.binary_cross_entropy_with_logits(outputs["hand_logit"], batch["hand_mask"]),
        "initial": (torch.linalg.norm(outputs["vertices"] - batch["vertices"], dim=-1) * to_cm).mean(),
    }
    if use_refit:
        refined, joints, _ = refit.fit_torch(outputs["vertices"])
        terms["refined"] = (torch.linalg.norm(refined - batch["vertices"], dim=-1) * to_cm).mean()
        terms["joints"] = (torch.linalg.norm(joints - batch["joints"], dim=-1) * to_cm).mean()
    terms["total"] = sum(getattr(weights, k) * v for k, v in terms.items())
    return terms


def check_replay(config: TrainConfig) -> None:
    """Raise ValueError for replay settings under which no batch could ever be drawn."""
    if config.replay_examples < 0:
        raise ValueError(f"replay_examples must be >= 0, got {config.replay_examples}")
    if config.replay_examples and config.replay_examples < config.batch_size:
        raise ValueError(f"the replay memory ({config.replay_examples} examples) must hold at least a batch ({config.batch_size})")
    if config.replay_examples and not config.replay_max_uses >= 1:  # NaN fails too
        raise ValueError(f"replay_max_uses must be >= 1, got {config.replay_max_uses}")


def training_batches(loader, config: TrainConfig, device: torch.device, rank: int = 0):
    """Yields (batch on ``device``, the stream indices of the examples newly taken from the
    data stream for it: (n,) int64 on the CPU).

    Without a replay memory every batch is the loader's next one. With one, each batch is
    drawn from the memory after it has taken in whatever the loader finished meanwhile;
    the loop waits for the loader only while the memory holds less than a batch or one more
    batch would draw the examples taken in more than ``replay_max_uses`` times on average.
    The allowance is kept for what the memory holds: examples overwritten before they were
    drawn take theirs with them, so a stalled stream cannot be made up for by drawing the
    last few examples over and over.
    """
    check_replay(config)
    if config.replay_examples == 0:
        for batch in loader:
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}, batch["index"]
        return
    memory = ReplayMemory(config.replay_examples, device)
    background = BackgroundBatches(loader)
    generator = torch.Generator().manual_seed(config.seed + 7919 * rank)
    allowance = 0.0  # draws the examples in the memory may still give

    def take_in(batch, taken: list) -> None:
        nonlocal allowance
        kept = min(memory.add(batch), memory.capacity)
        taken.append(batch["index"])
        allowance = min(allowance + config.replay_max_uses * kept, config.replay_max_uses * len(memory))

    try:
        while True:
            taken: list = []
            while (batch := background.get(block=False)) is not None:
                take_in(batch, taken)
            while len(memory) < config.batch_size or allowance < config.batch_size:
                if background.ended:  # a finite loader ran out (an endless stream never does)
                    return
                if (batch := background.get(block=True)) is not None:
                    take_in(batch, taken)
            indices = torch.cat(taken) if taken else torch.zeros(0, dtype=torch.int64)
            allowance -= config.batch_size
            yield memory.sample(config.batch_size, generator), indices
    finally:
        background.close()


def _setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_name)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def _merge_lanes(lanes: StreamLanes, world_size: int, device: torch.device) -> None:
    """Under DDP each rank saw only its own lanes' indices: take every lane's furthest."""
    if world_size > 1:
        merged = torch.as_tensor(lanes.next, device=device)
        dist.all_reduce(merged, op=dist.ReduceOp.MAX)
        lanes.next = merged.cpu().numpy().astype(np.int64)


def _agreed_elapsed(began: float, world_size: int, device: torch.device) -> float:
    """Seconds since ``began``; the slowest rank's under DDP, so that every rank takes the
    same learning rate and stops at the same step (one stopping early would hang the rest
    in the gradient all-reduce)."""
    elapsed = time.perf_counter() - began
    if world_size > 1:
        value = torch.tensor([elapsed], dtype=torch.float64, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        elapsed = float(value)
    return elapsed


def _agreed_flag(flag: bool, world_size: int, device: torch.device) -> bool:
    """True when ``flag`` is set on any rank, so that all of them leave at the same step."""
    if world_size > 1:
        value = torch.tensor([float(flag)], dtype=torch.float64, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        flag = bool(value)
    return flag


def terminal_gone(fds: tuple[int, ...] = (1, 2)) -> None:
    """Point those of ``fds`` that are a terminal at /dev/null: after a hang-up every write to
    the terminal fails, and the progress bar's next one would end the run before its
    checkpoint. Output going to a file or a pipe is left where it goes."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        for fd in fds:
            try:
                if stat.S_ISCHR(os.fstat(fd).st_mode):
                    os.dup2(devnull, fd)
            except OSError:
                pass
    finally:
        os.close(devnull)


class StopRequest:
    """SIGINT / SIGTERM / SIGHUP end the run after the step in progress, with a checkpoint and
    an export, instead of losing everything since the last checkpoint; a second signal aborts.

    Schedulers (torchrun, SLURM) stop jobs with SIGTERM, terminals with SIGINT, and a closed
    terminal or ssh session hangs up (SIGHUP). Handlers can only be installed from the main
    thread; elsewhere the run keeps the default behaviour.
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, announce: bool) -> None:
        self.signal_name: str | None = None
        self.signal_number = 0
        self.announce = announce
        self.handlers = SignalHandlers(self.SIGNALS, self._handle)

    def _handle(self, number: int, frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_number, self.signal_name = number, signal.Signals(number).name
        if self.signal_name == "SIGHUP":
            terminal_gone()
        if self.announce:
            try:
                print(f"\n{self.signal_name}: stopping after this step with a checkpoint and an export (send it again to abort)", file=sys.stderr, flush=True)
            except OSError:
                pass  # a hang-up: the terminal is gone, and the stop must not fail on it

    def __enter__(self) -> "StopRequest":
        self.handlers.install()
        return self

    def __exit__(self, *exc_info) -> None:
        self.handlers.restore()

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def _ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C, SIGTERM and a hang-up to the training process, which
    stops cleanly; they end with it (they watch it). A stop sent to the whole process group
    (torchrun, a job scheduler, ``kill -- -PGID``, a closed terminal) would otherwise end
    them first, and under DDP the loader's failure would end the run with no checkpoint."""
    for name in StopRequest.SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def _end_data_workers(loader: DataLoader) -> None:
    """Ends the loader's persistent workers now, however the run ended.

    Left to garbage collection they outlive a run that raised for as long as its traceback
    is kept (a caller that logs it, a test), and at interpreter exit multiprocessing's
    terminate() cannot end them, as they ignore SIGTERM: the exit would wait on them for
    ever. A worker that is stuck, and so still alive after the orderly shutdown, is killed.
    """
    iterator = loader._iterator
    if iterator is None:
        return
    workers = list(getattr(iterator, "_workers", ()))
    failure = None
    try:
        iterator._shutdown_workers()
    except RuntimeError as error:
        # torch's SIGCHLD handler raises when a worker dies while it stops them (one died by
        # SIGABRT on the way out at the end of a GPU run, which then lost its export). By now
        # every step has been taken and nothing more is read from the workers, so that death
        # costs nothing: it is reported below, and the run goes on to its checkpoint.
        failure = error
    killed = []
    for worker in workers:
        if not _worker_ended(worker):
            worker.kill()
            worker.join(timeout=5.0)
            killed.append(worker)
    ended_badly = [worker.exitcode for worker in workers if worker not in killed and worker.exitcode not in (0, None)]
    if ended_badly:
        how = ", ".join(sorted({_exit_described(code) for code in ended_badly}))
        print(f"note: {len(ended_badly)} data-loader worker(s) ended abnormally while stopping ({how}); the trained network is not affected", file=sys.stderr)
    elif failure is not None:
        print(f"note: stopping the data-loader workers: {failure}; the trained network is not affected", file=sys.stderr)
    loader._iterator = None


def _worker_ended(worker) -> bool:
    """Whether a worker process has ended, also when something else reaped it: its
    ``is_alive()`` then stays true for ever (waitpid's ECHILD reads as "not started"), and
    a kill would go to whatever process has its pid now. Its sentinel, the pipe it held
    open, closes when it ends, however it is reaped."""
    return not worker.is_alive() or bool(multiprocessing.connection.wait([worker.sentinel], timeout=0))


def _exit_described(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def _mean_over_ranks(terms: dict[str, float], world_size: int, device: torch.device) -> dict[str, float]:
    """The logged losses as the mean over every rank's share of the batch, not rank 0's alone."""
    if world_size == 1 or not terms:
        return terms
    keys = sorted(terms)
    values = torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return {k: float(v) / world_size for k, v in zip(keys, values.tolist())}


def _all_finite(network) -> bool:
    """Parameters and floating-point buffers (BatchNorm's running statistics, exported too)."""
    return all(bool(torch.isfinite(v).all()) for v in network.state_dict().values() if v.is_floating_point())


#: Consecutive steps with non-finite gradients after which a run stops: the data or the
#: weights are broken, not one unlucky batch.
MAX_NONFINITE_STEPS = 20


def _trained_with_learned_sampling(weights_dir: str | Path) -> bool:
    try:
        return bool(load_manifest(weights_dir)["network"].get("learned_sampling", False))
    except WeightsError:
        return False


def _trained_widths(weights_dir: str | Path) -> dict:
    """The widths of exported weights' network, as their manifest gives them ({} if unreadable:
    loading them reports that)."""
    try:
        network = load_manifest(weights_dir)["network"]
        return {name: network[name] for name in WIDTHS if name in network}
    except (WeightsError, KeyError, TypeError):
        return {}


def _resumed_fine_tune(out_dir: Path) -> bool:
    """Whether the run in ``out_dir`` that a resume would continue was started from trained
    weights (``--init-from``), from its saved config (False where there is no record)."""
    if not (out_dir / "last.pt").is_file():
        return False
    try:
        return json.loads((out_dir / "config.json").read_text()).get("initialised_from") is not None
    except (OSError, ValueError, AttributeError):
        return False


def _resumed_network(out_dir: Path) -> dict:
    """The network config of the run in ``out_dir`` that a resume would continue, from its
    saved config ({} when there is no checkpoint or no readable record)."""
    if not (out_dir / "last.pt").is_file():
        return {}
    try:
        network = json.loads((out_dir / "config.json").read_text())["train"]["network"]
        return network if isinstance(network, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _width(config: DualGridNetConfig, name: str) -> int:
    """A width of the network, the channels inside its blocks counted as they are when unset."""
    return block_width(config, name.split("_")[0]) if name.endswith("_block_channels") else getattr(config, name)


def initial_weights(network: DualGridNet, weights_dir: str | Path) -> dict:
    """Load exported weights (checksums verified) into ``network`` to fine-tune them; returns
    what they had been trained with, for the run's record."""
    exported, manifest = load_network(weights_dir)
    # Bilinear sampling can be fine-tuned into learned sampling (which starts from it), not
    # back; a network may be narrower than the weights (the channels that matter most kept).
    try:
        check_narrowing(exported.config, network.config)
    except ValueError as error:
        raise WeightsError(f"{weights_dir}: {error} (their network: {exported.config.to_dict()}; this run's: {network.config.to_dict()})") from error
    narrowed_from = None
    if any(_width(exported.config, name) != _width(network.config, name) for name in WIDTHS):
        narrow_into(exported, network)
        narrowed_from = {name: _width(exported.config, name) for name in WIDTHS}
    else:
        network.load_bilinear_state_dict(exported.state_dict())
    earlier = manifest.get("training", {})
    stream_end = {"stream_end": int(earlier["stream_end"])} if "stream_end" in earlier else {}
    return {
        "path": str(Path(weights_dir).absolute()),
        "samples_seen": int(earlier.get("samples_seen_total", earlier.get("samples_seen", 0))),
        **stream_end,
        "seconds": float(earlier.get("seconds_total", earlier.get("seconds", 0.0))),
        "device": earlier.get("device", "unknown"),
        "crop_frame": crop_frame_of(manifest).value,
        "out_of_image": out_of_image_of(manifest).value,
        **({"narrowed_from": narrowed_from} if narrowed_from else {}),
    }


def _save_checkpoint(
    path: Path,
    network,
    optimizer,
    step: int,
    samples_seen: int,
    examples_trained: int,
    config: TrainConfig,
    seconds: float,
    initialised_from: dict | None,
    max_seconds: float | None,
    lanes: StreamLanes,
    skipped_steps: int = 0,
    hand_model_sha256: str | None = None,
    schedule_anchor: ScheduleAnchor | None = None,
    world_size: int = 1,
) -> None:
    if not _all_finite(network):
        raise FloatingPointError(f"the network's weights are not finite at step {step}; they were not saved over {path}")
    tmp = path.with_name(path.name + ".partial")
    try:
        torch.save(
            {
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "samples_seen": samples_seen,
                "examples_trained": examples_trained,
                "train_seconds": seconds,
                "config": config_to_dict(config),
                "initialised_from": initialised_from,
                "max_seconds": max_seconds,  # the schedule's time budget, which a resume keeps
                "stream_lanes": lanes.to_dict(),  # where each lane of the sample stream goes on from
                "skipped_steps": skipped_steps,
                "hand_model_sha256": hand_model_sha256,  # the mesh the network samples, which a resume must keep
                "world_size": world_size,  # processes, each taking a batch a step
                "schedule_anchor": None if schedule_anchor is None else schedule_anchor.to_dict(),
            },
            tmp,
        )
    except (OSError, RuntimeError) as error:  # a full disk: torch reports it as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write the checkpoint {path} at step {step} ({error}); {path} is left as it was") from error
    os.replace(tmp, path)  # never leave a half-written checkpoint


def _resumed_budget(saved: float | None, given: float | None, rank: int) -> float | None:
    """The time budget of a resumed run: the one it was started with unless another is given."""
    if given is None:
        if saved is not None and rank == 0:
            print(f"resuming with the run's time budget of {saved / 60:g} min")
        return saved
    if saved != given and rank == 0:
        was = "none" if saved is None else f"{saved / 60:g} min"
        print(f"warning: the time budget changes from {was} to {given / 60:g} min; the learning rate follows the new one from here")
    return given


#: Settings whose change on resume moves the learning-rate schedule or the data under it.
SCHEDULE_SETTINGS = ("steps", "learning_rate", "warmup_steps", "batch_size", "refit_start_step")


def _warn_schedule_changes(saved: dict, config: TrainConfig, rank: int) -> None:
    now = config_to_dict(config)
    changed = [f"{key} {saved[key]} -> {now[key]}" for key in SCHEDULE_SETTINGS if key in saved and saved[key] != now[key]]
    if changed and rank == 0:
        print(f"warning: resuming with other settings than the checkpoint's: {', '.join(changed)}")


def _finished_run_summary(out_dir: Path, step: int) -> dict | None:
    """The summary of a run in ``out_dir`` that finished at ``step`` and whose export is
    intact (its files those its manifest lists, from that step); None where the export
    needs writing again. What was done to the export since (an 8-bit network added by
    tracker.quantize) is then left as it is."""
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
        manifest = load_manifest(out_dir / "export")
        if int(manifest["training"]["steps"]) != step or int(summary["steps"]) != step:
            return None
        for name in (STATE_DICT, ONNX):
            verified_path(out_dir / "export", name, manifest)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, WeightsError):
        return None
    # Nothing was trained now, so nothing was stopped: how the run once ended (a signal in its
    # last step) is not this command's outcome.
    return {k: v for k, v in summary.items() if k not in ("stopped_by", "stopped_by_signal")} | {"already_finished": True}


def _kept(checkpoint: Path, checkpointed_step: int | None) -> str:
    """What a run that fails leaves to resume from."""
    if checkpointed_step is None:
        return "no checkpoint of this run had been written yet"
    return f"{checkpoint} holds step {checkpointed_step} and the same command resumes from it"


#: What a run writes into its folder; --no-resume moves an earlier run's aside.
RUN_FILES = ("last.pt", "config.json", "metrics.csv", "summary.json", "export")
#: Held by the run writing into the folder (the process id inside, for the message).
RUN_LOCK = ".run.lock"


def _set_aside(out_dir: Path, why: str) -> Path:
    """Move an earlier run's files into a subfolder, so that a fresh start loses nothing and
    cannot be mixed with them (its log with their rows, their checkpoint resumed by mistake,
    their export replaced). ``why``: what the message begins with."""
    aside = out_dir / time.strftime("earlier-%Y%m%d-%H%M%S")
    suffix = 1
    while aside.exists():
        suffix += 1
        aside = aside.with_name(f"{aside.name.split('.')[0]}.{suffix}")
    aside.mkdir()
    for name in RUN_FILES:
        if (out_dir / name).exists():
            os.replace(out_dir / name, aside / name)
    print(f"{why}: the earlier run's files are kept in {aside}")
    return aside


class RunInUse(RuntimeError):
    """Another training process is writing into the run directory."""


@contextlib.contextmanager
def _run_lock(out_dir: Path, rank: int):
    """Hold ``out_dir`` for this run (rank 0, which writes its files): a second run into the
    same folder at once would mix its log rows, configs and checkpoints with this one's."""
    if rank != 0:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / RUN_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RunInUse(f"another training run is writing into {out_dir} (process {holder}); wait for it, or give another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            # The file stays: removed, a run starting meanwhile would lock a file of its own.
            fcntl.flock(lock, fcntl.LOCK_UN)


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    max_seconds: float | None = None,
    init_from: str | Path | None = None,
    command: list[str] | None = None,
) -> dict:
    """Train, checkpoint and export; returns a summary (rank 0).

    ``init_from``: exported weights to start from instead of random ones (fine-tuning);
    not used when resuming a checkpoint, which holds the weights it has got to. Without
    ``resume``, or without a checkpoint to resume, an earlier run's files in ``out_dir`` are
    moved aside first (``init_from`` may be among them: it is read before). ``command``:
    the command line, kept in the run's ``config.json``. Raises ``RunInUse`` where another
    run is writing into ``out_dir``.
    """
    check_replay(config)
    out_dir = Path(out_dir)
    if init_from is not None and not (resume and (out_dir / "last.pt").is_file()):
        load_manifest(init_from)  # weights to start from that are not there: said before the folder is made
    rank, world_size, device = _setup_distributed(config.device)
    with _run_lock(out_dir, rank):
        return _train(config, out_dir, resume, progress, max_seconds, init_from, command, rank, world_size, device)


def _train(
    config: TrainConfig,
    out_dir: Path,
    resume: bool,
    progress: bool,
    max_seconds: float | None,
    init_from: str | Path | None,
    command: list[str] | None,
    rank: int,
    world_size: int,
    device: torch.device,
) -> dict:
    torch.manual_seed(config.seed + rank)
    hand_model = HandModel.load()
    refit = Refit(hand_model)
    network = DualGridNet(hand_model.mesh_coords, config.network).to(device)
    # Learned sampling weights are not decayed: they start at the bilinear weights, not at 0.
    sampling = [p for name, p in network.named_parameters() if name == "grid_to_vertices"]
    others = [p for name, p in network.named_parameters() if name != "grid_to_vertices"]
    optimizer = torch.optim.AdamW(
        [{"params": others}, *([{"params": sampling, "weight_decay": 0.0}] if sampling else [])], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    # samples_seen: examples taken from the rendered stream (where a resumed run picks it
    # up); examples_trained: batch size times steps, more than samples_seen with replay.
    step, samples_seen, examples_trained, earlier_seconds, earlier_skipped = 0, 0, 0, 0.0, 0
    initialised_from = saved_lanes = schedule_anchor = None
    checkpoint = out_dir / "last.pt"
    resuming = resume and checkpoint.is_file()
    if not resuming and init_from is not None:
        # Read before anything is set aside below: they may be this folder's own export.
        initialised_from = initial_weights(network, init_from)
        network.to(device)
    if world_size > 1:
        dist.barrier()  # every rank has looked at the folder, and read its weights, before it changes
    if not resuming and rank == 0 and any((out_dir / name).exists() for name in RUN_FILES):
        # A fresh start beside an earlier run's files (a finished run whose checkpoint was
        # deleted to save space, say) would write over its export and start its log afresh.
        aside = _set_aside(out_dir, "--no-resume" if checkpoint.is_file() else f"no checkpoint to resume in {out_dir}")
        if initialised_from is not None:
            # Weights started from that were among those files are on record where they went.
            started = Path(initialised_from["path"])
            for name in RUN_FILES:
                moved = out_dir.absolute() / name
                if started == moved or moved in started.parents:
                    initialised_from["path"] = str(aside.absolute() / started.relative_to(out_dir.absolute()))
    if resuming:
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=True)
        except Exception as error:  # truncated, not a checkpoint, or from an unknown version
            raise ResumeError(f"cannot read {checkpoint} ({type(error).__name__}: {error}); --no-resume starts afresh (and keeps it aside)") from error
        if not isinstance(state, dict) or not {"network", "optimizer", "step", "samples_seen"} <= state.keys():
            raise ResumeError(f"{checkpoint} is not a training checkpoint of this program; --no-resume starts afresh (and keeps it aside)")
        # Checkpoints from before the choice hold camera-frame training.
        trained_in = CropFrame(state.get("config", {}).get("data", {}).get("crop_frame", CropFrame.CAMERA.value))
        if trained_in != CropFrame(config.data.crop_frame):
            raise ResumeError(
                f"{checkpoint} was trained on {trained_in.value}-frame crops, not {CropFrame(config.data.crop_frame).value}; "
                f"resume it with --crop-frame {trained_in.value}, or start afresh with --no-resume"
            )
        filled = OutOfImage(state.get("config", {}).get("data", {}).get("out_of_image", OutOfImage.FAR.value))
        if filled != OutOfImage(config.data.out_of_image):
            raise ResumeError(
                f"{checkpoint} was trained with crops showing {filled.value} past the image's edge, not "
                f"{OutOfImage(config.data.out_of_image).value}; resume it with --out-of-image {filled.value}, or start afresh with --no-resume"
            )
        trained_on = state.get("hand_model_sha256")
        if trained_on is not None and hand_model.sha256 is not None and trained_on != hand_model.sha256:
            raise ResumeError(
                f"{checkpoint} was trained with the hand model {trained_on[:12]}..., but {hand_model.source} is now "
                f"{hand_model.sha256[:12]}...; the network samples its vertices at that model's mesh coordinates. "
                "Put that asset back to resume, or start afresh with --no-resume"
            )
        try:
            network.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            saved = state.get("config", {}).get("network", {})
            differing = ", ".join(
                f"{name} {saved[name]} there, {value} here" for name, value in config.network.to_dict().items() if name in saved and saved[name] != value
            )
            raise ResumeError(
                f"{checkpoint} does not fit this recipe's network ({differing or f'{type(error).__name__}: {str(error).splitlines()[0]}'}); "
                "resume it with the recipe and settings it was trained with, or start afresh with --no-resume"
            ) from error
        if state.get("initialised_from") is not None:
            # A fine-tune trains the refit terms from its first step (see main): resuming one
            # without --init-from keeps that.
            config = dataclasses.replace(config, refit_start_step=0)
        earlier_skipped = int(state.get("skipped_steps", 0))
        step, samples_seen = int(state["step"]), int(state["samples_seen"])
        examples_trained = int(state.get("examples_trained", samples_seen))
        earlier_seconds = float(state.get("train_seconds", 0.0))
        initialised_from = state.get("initialised_from")
        saved_lanes = state.get("stream_lanes")
        max_seconds = _resumed_budget(state.get("max_seconds"), max_seconds, rank)
        _warn_schedule_changes(state.get("config", {}), config, rank)
        saved_world = state.get("world_size")
        if saved_world is not None and int(saved_world) != world_size and rank == 0:
            print(
                f"warning: resuming a run trained by {saved_world} process(es) with {world_size}: each step now takes "
                f"{config.batch_size * world_size} examples instead of {config.batch_size * int(saved_world)}"
            )
        saved_anchor = ScheduleAnchor.from_dict(state.get("schedule_anchor"))
        schedule_anchor = resumed_schedule_anchor(state.get("config", {}), saved_anchor, config, step)
        steps_changed = state.get("config", {}).get("steps", config.steps) != config.steps
        if (schedule_anchor != saved_anchor or steps_changed) and rank == 0 and step < config.steps and step >= config.warmup_steps:
            rate = learning_rate(config, step, 0.0 if max_seconds is None else earlier_seconds / max_seconds, schedule_anchor)
            print(
                f"the learning rate goes on from {rate:.3g} and decays to zero by step {config.steps}" if schedule_anchor is not None
                else f"the checkpoint's schedule had ended; its training goes on with a new cosine from {rate:.3g} to zero by step {config.steps}"
            )
        if init_from is not None and rank == 0:
            print(f"resuming {checkpoint} at step {step}: --init-from {init_from} is not used (--no-resume starts afresh from it)")
    elif init_from is not None:
        if initialised_from["crop_frame"] != CropFrame(config.data.crop_frame).value and rank == 0:
            print(f"note: {init_from} were trained on {initialised_from['crop_frame']}-frame crops; this run trains them on {CropFrame(config.data.crop_frame).value}-frame ones")
        if initialised_from.get("narrowed_from") and rank == 0:
            widths = ", ".join(
                f"{name} {was} -> {_width(config.network, name)}"
                for name, was in initialised_from["narrowed_from"].items() if was != _width(config.network, name)
            )
            print(f"note: {init_from} narrowed ({widths}), keeping the channels their next layers weigh most")
        if initialised_from["out_of_image"] != OutOfImage(config.data.out_of_image).value and rank == 0:
            print(
                f"note: {init_from} were trained with crops showing {initialised_from['out_of_image']} past the image's edge; "
                f"this run trains them with {OutOfImage(config.data.out_of_image).value}"
            )
    model = DistributedDataParallel(network) if world_size > 1 else network
    # A fine-tune takes up the sample stream where the weights it starts from left it, so it
    # never trains on their samples again (each earlier stage drew from below their total;
    # with several lanes, some ran a little past it: their stream end, where recorded).
    stream_start = 0 if initialised_from is None else int(initialised_from.get("stream_end", initialised_from["samples_seen"]))
    lane_count = world_size * max(1, config.workers)
    lanes = StreamLanes.resumed(saved_lanes, stream_start, lane_count)
    if lanes is None:
        # A checkpoint with other lanes (other --workers or processes): every lane from one
        # past the furthest any of them drew, so nothing is drawn twice (the few indices some
        # lanes had not reached yet are skipped). One from before lanes were recorded: from
        # samples_seen on (a few examples may be drawn twice or skipped).
        first = stream_start + samples_seen
        try:
            if saved_lanes and int(saved_lanes["start"]) == stream_start:
                first = StreamLanes(stream_start, int(saved_lanes["lanes"]), saved_lanes["next"]).end
        except (KeyError, TypeError, ValueError):
            pass  # an unreadable record: as if there were none
        lanes = StreamLanes(stream_start, lane_count, [first + (lane - first + stream_start) % lane_count for lane in range(lane_count)])
    # A run that has already finished (its steps or its time budget) is not trained further:
    # starting the data workers only to stop at once would cost minutes and count them. Its
    # records and an intact export are left as they are.
    finished = step >= config.steps or (max_seconds is not None and earlier_seconds >= max_seconds)
    finished_summary = _finished_run_summary(out_dir, step) if finished else None
    if world_size > 1 and finished:  # each rank read the files itself: all return, or none
        intact = torch.tensor([float(finished_summary is not None)], dtype=torch.float64, device=device)
        dist.all_reduce(intact, op=dist.ReduceOp.MIN)
        finished_summary = finished_summary if bool(intact) else None
    if finished_summary is not None:
        if rank == 0:
            print(f"{out_dir} has already finished ({step} steps); its export in {out_dir / 'export'} is kept as it is")
        if world_size > 1:
            dist.barrier()
            dist.destroy_process_group()
        return finished_summary
    if finished and rank == 0:
        print(f"{out_dir} has already finished ({step} steps); its checkpoint is exported again")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = {
            "train": config_to_dict(config), "world_size": world_size, "device": str(device), "parameters": count_parameters(network),
            "initialised_from": initialised_from, "sample_stream": {"seed": TRAIN_STREAM_SEED, "first_index": stream_start, "lanes": lane_count},
            "max_seconds": max_seconds,
            "schedule_anchor": None if schedule_anchor is None else schedule_anchor.to_dict(),
            # What trained it: the command and the code (commit, uncommitted changes), so that
            # shipped weights copied from this run can be traced.
            "command": command,
            "machine": machine_info(),
        }
        earlier_config = out_dir / "config.json"
        if step > 0 and earlier_config.is_file():
            # A resumed run: what each earlier segment ran with stays on record (an --lr
            # changed on resuming, say).
            try:
                earlier = json.loads(earlier_config.read_text())
                resolved["earlier_segments"] = [*earlier.pop("earlier_segments", []), earlier]
            except (ValueError, AttributeError):
                pass  # an unreadable record is not carried on
            resolved["resumed_at_step"] = step
        (out_dir / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")

    # Each (rank, worker) lane goes on from where it had got to: lanes take unequal shares.
    stream = None if finished else SyntheticStream(config.data, TRAIN_STREAM_SEED, start=stream_start, rank=rank, world_size=world_size, lane_starts=lanes.next.tolist())
    loader = None if finished else DataLoader(
        stream,
        batch_size=config.batch_size,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
        prefetch_factor=4 if config.workers > 0 else None,
        multiprocessing_context="spawn" if config.workers > 0 else None,
        worker_init_fn=_ignore_interrupts if config.workers > 0 else None,
        timeout=config.data_timeout_s if config.workers > 0 else 0,
    )
    metrics_file = out_dir / "metrics.csv"
    columns = ["step", "samples_seen", "lr", "samples_per_s", "total", "coords", "mask", "initial_cm", "refined_cm", "joints_cm", "examples_trained", "rendered_per_s"]
    writer = None
    if rank == 0:
        new_file = not metrics_file.exists() or step == 0
        if not new_file:  # a resumed run keeps its file's columns, which older versions wrote fewer of
            with open(metrics_file, newline="") as existing:
                rows = list(csv.reader(existing))
            columns = rows[0] if rows else columns
            # Rows logged after the checkpoint are logged again from it: drop the old ones.
            kept = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
            partial = metrics_file.with_name(metrics_file.name + ".partial")
            with open(partial, "w", newline="") as rewritten:
                csv.writer(rewritten).writerows([columns, *kept])
            os.replace(partial, metrics_file)  # a crash here keeps the old log whole
        handle = open(metrics_file, "w" if new_file else "a", newline="")
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new_file:
            writer.writeheader()
    bar = tqdm(total=config.steps, initial=step, disable=not progress or rank != 0, unit="step", desc="training")
    network.train()
    began = time.perf_counter()
    window_start, window_samples, window_rendered = time.perf_counter(), 0, 0
    last_terms: dict[str, float] = {}
    if finished:  # exported again: with the losses the run ended with, where recorded (for this step)
        try:
            earlier_summary = json.loads((out_dir / "summary.json").read_text())
            if int(earlier_summary["steps"]) == step:
                last_terms = {k: float(v) for k, v in earlier_summary["last_losses"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    logged_step = step
    skipped_steps, nonfinite_in_a_row = earlier_skipped, 0  # skipped over every segment of the run
    # The step the checkpoint file holds; None while it holds none of this run (a fresh
    # run started with --no-resume beside an old one).
    checkpointed_step: int | None = step if step > 0 else None
    step_done = time.perf_counter()  # when the last step finished
    rate_now = learning_rate(config, step, 0.0, schedule_anchor)

    def log_row() -> None:
        nonlocal window_start, window_samples, window_rendered, logged_step
        window_seconds = max(time.perf_counter() - window_start, 1e-9)
        rate, rendered_rate = window_samples / window_seconds, window_rendered / window_seconds
        window_start, window_samples, window_rendered = time.perf_counter(), 0, 0
        # Terms not computed yet (the refit's before refit_start_step) are left blank rather
        # than written as nan, which reads as a diverged run.
        losses = {
            f"{k}_cm" if k in ("initial", "refined", "joints") else k: f"{last_terms[k]:.4f}" if k in last_terms else ""
            for k in ("total", "coords", "mask", "initial", "refined", "joints")
        }
        writer.writerow(
            {"step": step, "samples_seen": samples_seen, "lr": f"{rate_now:.3g}", "samples_per_s": f"{rate:.1f}", **losses}
            | {"examples_trained": examples_trained, "rendered_per_s": f"{rendered_rate:.1f}"}
        )
        handle.flush()
        logged_step = step
        shown = {"loss": ("total", "{:.3f}"), "init_cm": ("initial", "{:.2f}"), "joints_cm": ("joints", "{:.2f}")}
        postfix = {name: form.format(last_terms[term]) for name, (term, form) in shown.items() if term in last_terms}
        if "joints" not in last_terms and step < config.refit_start_step:
            postfix["refit_from_step"] = str(config.refit_start_step + 1)  # steps count from 1, as in the log
        postfix["sps"] = f"{rate:.0f}"
        if config.replay_examples:
            postfix["rendered_sps"] = f"{rendered_rate:.0f}"
        if max_seconds is not None:  # the bar counts towards --steps, which a time budget may never reach
            postfix["min_left"] = f"{max(0.0, max_seconds - earlier_seconds - (time.perf_counter() - began)) / 60:.0f}"
        bar.set_postfix(postfix)

    batches = iter(()) if finished else training_batches(loader, config, device, rank)
    stop = StopRequest(announce=rank == 0)
    try:
        stop.__enter__()
        for batch, taken in batches:
            # The time budget covers the whole run, resumed segments included.
            time_fraction = 0.0 if max_seconds is None else (earlier_seconds + _agreed_elapsed(began, world_size, device)) / max_seconds
            if step >= config.steps or time_fraction >= 1.0:
                break  # this batch is not trained, so its examples are not counted as drawn
            lanes.update(taken)
            rendered = len(taken)
            if world_size > 1 and config.replay_examples:  # each rank takes in what its own loader made
                count = torch.tensor([rendered], dtype=torch.int64, device=device)
                dist.all_reduce(count)
                rendered = int(count)
            else:
                rendered *= world_size
            rate_now = learning_rate(config, step, time_fraction, schedule_anchor)
            for group in optimizer.param_groups:
                group["lr"] = rate_now
            outputs = model(batch["depth"])
            terms = compute_losses(outputs, batch, refit, config.loss, use_refit=step >= config.refit_start_step)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            # Gradients are all-reduced by now, so every rank sees the same norm and skips
            # the same steps. One non-finite gradient stepped would make every weight NaN.
            norm = torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
            if bool(torch.isfinite(norm)):
                optimizer.step()
                nonfinite_in_a_row = 0
            else:
                optimizer.zero_grad(set_to_none=True)
                skipped_steps += 1
                nonfinite_in_a_row += 1
                if nonfinite_in_a_row >= MAX_NONFINITE_STEPS:
                    raise FloatingPointError(
                        f"the gradients were not finite for {nonfinite_in_a_row} steps in a row (step {step + 1}); {_kept(checkpoint, checkpointed_step)}"
                    )
            step += 1
            step_done = time.perf_counter()
            samples_seen += rendered
            examples_trained += config.batch_size * world_size
            window_samples += config.batch_size * world_size
            window_rendered += rendered
            last_terms = {k: float(v.detach()) for k, v in terms.items()}
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:  # the same steps on every rank
                last_terms = _mean_over_ranks(last_terms, world_size, device)
                if rank == 0:
                    log_row()
                logged_step = step
            if step % config.checkpoint_every == 0:
                if world_size > 1 and not _all_finite(network):
                    # Checked on every rank (DDP keeps their weights equal), so all stop here
                    # together instead of the others waiting in a collective for rank 0.
                    raise FloatingPointError(f"the network's weights are not finite at step {step}; {_kept(checkpoint, checkpointed_step)}")
                _merge_lanes(lanes, world_size, device)  # every rank: a collective
                if rank == 0:
                    _save_checkpoint(
                        checkpoint, network, optimizer, step, samples_seen, examples_trained, config,
                        earlier_seconds + time.perf_counter() - began, initialised_from, max_seconds, lanes,
                        skipped_steps, hand_model.sha256, schedule_anchor, world_size,
                    )
                checkpointed_step = step
            if _agreed_flag(stop.requested, world_size, device):
                break
    except RuntimeError as error:
        # A stop signal sent to the whole process group (torchrun, timeout, kill -- -PGID, a
        # job scheduler) ends the data-loader workers too, and the loader fails while this
        # process waits for a batch: that is the stop, not a failure, and the run ends below
        # as a stop does, with a checkpoint and an export. Under DDP the other ranks may be
        # elsewhere in the step, so no orderly end can be agreed on: the error stands.
        stopped_with_the_workers = world_size == 1 and stop.requested and not _loader_timed_out(error)
        if not stopped_with_the_workers:
            if not _loader_timed_out(error):
                raise
            if world_size == 1 and step > (checkpointed_step or 0):
                # The network and the stream position are sound (only the loader is stuck), so
                # the steps since the last checkpoint need not be lost. Under DDP saving takes a
                # collective that the other ranks, waiting in theirs, would not meet.
                # Trained time up to the last step: the wait for the stuck loader trained nothing,
                # and a resumed run's time budget and schedule go on from the step.
                _save_checkpoint(
                    checkpoint, network, optimizer, step, samples_seen, examples_trained, config,
                    earlier_seconds + step_done - began, initialised_from, max_seconds, lanes,
                    skipped_steps, hand_model.sha256, schedule_anchor, world_size,
                )
                checkpointed_step = step
            raise DataStalled(
                f"no batch came from the data-loader workers in {config.data_timeout_s:g} s, so one of them is stuck "
                f"(any message it printed is above); {_kept(checkpoint, checkpointed_step)}"
            ) from error
    finally:
        stop.__exit__(None, None, None)
        bar.close()  # an error printed after it starts on a line of its own
        if not finished:
            batches.close()  # stops the replay memory's loader thread now, not when collected
            _end_data_workers(loader)
    if logged_step != step:  # stopped by the time budget or a signal between log rows (on every rank alike)
        last_terms = _mean_over_ranks(last_terms, world_size, device)
        if rank == 0:
            log_row()
    bar.close()
    # Wall time summed over every resumed segment of the run.
    _merge_lanes(lanes, world_size, device)
    summary = {
        "steps": step, "samples_seen": samples_seen, "examples_trained": examples_trained, "seconds": earlier_seconds + time.perf_counter() - began,
        "last_losses": last_terms, "stream_end": lanes.end, "skipped_steps": skipped_steps, "max_seconds": max_seconds,
    }
    if stop.requested:
        summary["stopped_by"] = stop.signal_name
        summary["stopped_by_signal"] = stop.signal_number
    if initialised_from is not None:  # fine-tuned: count what the starting weights had seen too
        summary["initialised_from"] = initialised_from
        summary["samples_seen_total"] = samples_seen + initialised_from["samples_seen"]
        summary["seconds_total"] = summary["seconds"] + initialised_from["seconds"]
    if rank == 0:
        handle.close()
        _save_checkpoint(
            checkpoint, network, optimizer, step, samples_seen, examples_trained, config, summary["seconds"], initialised_from, max_seconds, lanes,
            skipped_steps, hand_model.sha256, schedule_anchor, world_size,
        )
        machine = machine_info()
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{machine['logical_cores']}-core CPU ({machine['cpu']})"
        training = {**summary, "world_size": world_size, "device": device_name, "recipe": config_to_dict(config)}
        export_weights(
            network.eval(), config.data.cube_size_m, out_dir / "export", training, crop_frame=config.data.crop_frame,
            out_of_image=config.data.out_of_image,
            hand_model_sha256=hand_model.sha256,  # the model it was built from, should the file change meanwhile
        )
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.train",
        description="Train Dual Grid Net on synthetic depth rendered on the fly; checkpoints and resumes "
        "from OUT/last.pt; exports weights to OUT/export. Works under torchrun (DDP).",
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument(
        "--recipe", choices=sorted(RECIPES), default="cpu",
        help=f"preset: cpu ({RECIPES['cpu'].steps} steps of {RECIPES['cpu'].batch_size}, a small run for a CPU), "
        f"gpu ({RECIPES['gpu'].steps} steps of {RECIPES['gpu'].batch_size} with {RECIPES['gpu'].workers} data workers, cut off by "
        f"a {RECIPE_MINUTES['gpu']:g}-minute time budget on one H100-class GPU), smoke ({RECIPES['smoke'].steps} steps of "
        f"{RECIPES['smoke'].batch_size}, no workers: checks that training runs at all) (default %(default)s)",
    )
    def recipes_say(field: str) -> str:
        return "; ".join(f"{name} {getattr(recipe, field):g}" for name, recipe in RECIPES.items())

    parser.add_argument("--steps", type=int, help=f"override the recipe's optimisation steps ({recipes_say('steps')})")
    parser.add_argument("--batch-size", type=int, help=f"override the per-process batch size ({recipes_say('batch_size')})")
    parser.add_argument("--workers", type=int, help=f"override data-loader workers per process ({recipes_say('workers')})")
    parser.add_argument(
        "--lr", type=float,
        help=f"override the peak learning rate ({recipes_say('learning_rate')}), reached after a linear warm-up "
        f"({recipes_say('warmup_steps')} steps) and decayed by a cosine; the refit terms join the loss after "
        f"{recipes_say('refit_start_step')} steps (from the first with --init-from)",
    )
    parser.add_argument(
        "--replay-examples",
        type=int,
        metavar="N",
        help="override the replay memory: the last N rendered examples, kept on the training device, from which batches "
        "are drawn when rendering is slower than training (0: every batch freshly rendered; the gpu recipe keeps 65536)",
    )
    parser.add_argument("--replay-max-uses", type=float, metavar="X", help="override the most times each rendered example is drawn, on average")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the device")
    parser.add_argument(
        "--crop-frame", choices=[f.value for f in CropFrame],
        help="the crops' axes (default: ray, the virtual camera looking at the hand; camera: the sensor's axes, "
        "as weights from before the choice were trained); the exported weights record it",
    )
    parser.add_argument(
        "--out-of-image", choices=[f.value for f in OutOfImage],
        help="what the crops show where the cube reaches past the image's edge (default: far, the cube's far face, "
        "as for background; marked: the near face, which measured depth all but never takes, so the network can "
        "tell a hand cut by the edge of the view from one that ends there); the exported weights record it",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="time budget of the whole run (resumed segments included): the learning rate decays to zero by then "
        "if the steps have not run out first, and training stops, checkpoints and exports "
        f"(default: none, but {', '.join(f'{m:g} for the {r} recipe' for r, m in RECIPE_MINUTES.items())})",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="WEIGHTS_DIR",
        help="start from these exported weights (dgn.json, dgn.pt; checksums verified) instead of random ones, "
        "with a fresh optimiser and schedule, the refit terms trained from the first step; when resuming OUT/last.pt the "
        "checkpoint's weights are used instead (a resumed fine-tune keeps its refit terms from the first step)",
    )
    parser.add_argument(
        "--learned-sampling", action="store_true",
        help="train each vertex's weights on its four mesh-grid nodes, starting from the bilinear ones (with --init-from, "
        "weights with bilinear sampling carry over unchanged, and weights trained with it keep it without this flag); "
        "the exported network has the same shape and speed",
    )
    widths = parser.add_argument_group(
        "network widths",
        "other than the recipe's network (64 channels everywhere): narrower for a faster forward; with --init-from, the "
        "weights can only be narrowed to them, keeping the channels the next layers weigh most, and then fine-tuned",
    )
    widths.add_argument("--image-channels", type=int, metavar="N", help="the image hourglass's width")
    widths.add_argument(
        "--image-block-channels", type=int, metavar="N",
        help="channels between the two convolutions of each of the image hourglass's residual blocks (default: its width); "
        "most of a forward on a CPU is these convolutions",
    )
    widths.add_argument("--mesh-channels", type=int, metavar="N", help="the mesh hourglass's width")
    widths.add_argument("--mesh-block-channels", type=int, metavar="N", help="the same inside the mesh hourglass's blocks")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/last.pt exists (the earlier run's files are moved into OUT/earlier-<time>/, as they are whenever there is no checkpoint to resume)")
    args = parser.parse_args(argv)
    config = RECIPES[args.recipe]
    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "learning_rate": args.lr,
        "device": args.device,
        "replay_examples": args.replay_examples,
        "replay_max_uses": args.replay_max_uses,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.crop_frame is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, crop_frame=CropFrame(args.crop_frame)))
    if args.out_of_image is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, out_of_image=OutOfImage(args.out_of_image)))
    if args.learned_sampling:
        config = dataclasses.replace(config, network=dataclasses.replace(config.network, learned_sampling=True))
    for name in WIDTHS:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    width_args = {name: getattr(args, name) for name in WIDTHS if getattr(args, name) is not None}
    # Widths not given keep those of the run being resumed, or else of the weights a
    # fine-tune starts from, so the same command resumes or fine-tunes a narrowed network again.
    resumed = _resumed_network(args.out) if not args.no_resume else {}
    kept = {name: resumed[name] for name in WIDTHS if name in resumed} if resumed else ({} if args.init_from is None else _trained_widths(args.init_from))
    width_args = {**kept, **width_args}
    if width_args:
        try:
            config = dataclasses.replace(config, network=dataclasses.replace(config.network, **width_args))
        except ValueError as error:
            parser.error(str(error))
    if resumed.get("learned_sampling") and not config.network.learned_sampling:
        config = dataclasses.replace(config, network=dataclasses.replace(config.network, learned_sampling=True))
    # As train() decides it: a checkpoint there is resumed, whatever its saved config says.
    resuming = not args.no_resume and (args.out / "last.pt").is_file()
    if resuming and _resumed_fine_tune(args.out):
        config = dataclasses.replace(config, refit_start_step=0)  # as train() keeps it from the checkpoint
    if args.init_from is not None and not resuming:
        # (A run resumed goes on with its own network and schedule: train() says --init-from
        # is not used.) Trained weights give a P_s the refit can follow from the first step: the delay that
        # spares a fresh network's noise would only leave P_r and the joints untrained a while.
        config = dataclasses.replace(config, refit_start_step=0)
        # Learned sampling cannot go back to bilinear: weights trained with it keep it, so the
        # same fine-tune command serves either kind (a missing manifest is reported below).
        if not config.network.learned_sampling and _trained_with_learned_sampling(args.init_from):
            print(f"note: {args.init_from} were trained with learned sampling; this run keeps it")
            config = dataclasses.replace(config, network=dataclasses.replace(config.network, learned_sampling=True))
    if config.steps < 1 or config.batch_size < 1 or config.workers < 0:
        parser.error("--steps and --batch-size must be >= 1, --workers >= 0")
    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        parser.error("--max-minutes must be a finite number more than 0 (leave it out for no time budget)")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):  # NaN fails too
        parser.error(f"--lr must be a positive number, got {config.learning_rate}")
    if config.steps <= config.warmup_steps:
        print(f"warning: {config.steps} steps end within the recipe's {config.warmup_steps}-step warm-up: the learning rate never decays", file=sys.stderr)
    if config.steps <= config.refit_start_step:
        print(
            f"warning: {config.steps} steps end before the refit terms start (at step {config.refit_start_step + 1}, counting from 1 as "
            "the progress bar and the log do): P_r and the joints are not trained", file=sys.stderr,
        )
    try:
        check_replay(config)
    except ValueError as error:
        parser.error(str(error))
    if args.replay_max_uses is not None and not config.replay_examples:
        parser.error(f"--replay-max-uses limits draws from a replay memory, and the {args.recipe} recipe has none here: give --replay-examples N too")
    if config.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA GPU (torch.cuda.is_available() is False); use --device cpu or auto")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a run directory")
    max_minutes = args.max_minutes
    # A resumed run keeps the budget it was started with (``_resumed_budget``).
    if max_minutes is None and args.recipe in RECIPE_MINUTES and (args.no_resume or not (args.out / "last.pt").exists()):
        max_minutes = RECIPE_MINUTES[args.recipe]
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"the {args.recipe} recipe trains for {max_minutes:g} minutes (--max-minutes to change it)")
    try:
        summary = train(
            config, args.out, resume=not args.no_resume, max_seconds=None if max_minutes is None else 60 * max_minutes, init_from=args.init_from,
            command=["python", "-m", "tracker.train", *(sys.argv[1:] if argv is None else argv)],
        )
    # --init-from weights missing or wrong; a resume in another frame or from a damaged checkpoint; a checkpoint
    # that cannot be written; a run gone non-finite; stuck data workers; another run in the same folder
    except (WeightsError, ResumeError, CheckpointError, FloatingPointError, DataStalled, RunInUse) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the run directory or its files cannot be written
        print(f"error: {exc.strerror or exc}: {exc.filename}" if exc.filename else f"error: {exc}", file=sys.stderr)
        return 2
    if summary.get("already_finished"):
        return 0  # said so; nothing was trained
    if int(os.environ.get("RANK", "0")) == 0:
        trained = summary.get("examples_trained", summary["samples_seen"])
        rendered = summary["samples_seen"]
        if config.replay_examples and trained > rendered:
            samples = f"{trained} examples ({rendered} rendered, the rest drawn again from a replay memory)"
        elif config.replay_examples and trained < rendered:
            samples = f"{trained} examples ({rendered} rendered: the replay memory is filled ahead of the training)"
        else:
            samples = f"{rendered} samples"
        print(f"trained {summary['steps']} steps on {samples} in {summary['seconds'] / 60:.1f} min; weights in {args.out / 'export'}")
        budget = summary.get("max_seconds")
        if "stopped_by" not in summary and budget is not None and summary["steps"] < config.steps and summary["seconds"] >= budget:
            print(f"the time budget ({budget / 60:g} min) ended the run before step {config.steps}; the learning rate had reached zero by then")
        if summary.get("skipped_steps"):
            print(f"warning: {summary['skipped_steps']} steps had non-finite gradients and were skipped")
        if "stopped_by" in summary:
            print(f"stopped by {summary['stopped_by']}; run the same command again to resume from {args.out / 'last.pt'}")
    if "stopped_by" in summary:
        return 128 + summary["stopped_by_signal"]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
