"""Training: minibatch optimisation with validation, early stopping, a divergence guard,
a plateau learning-rate schedule, atomic checkpoints and resume.

Any model with ``training_loss(xn, t, *, context, p_forcing, generator, params)`` returning a
dict with a scalar ``"loss"``, and ``run(xn, t, context=...)`` returning ``Output``, trains here
(WARP, physics-informed WARP and the baselines).

Optimiser choice: Adam at lr 2e-3 with global-norm gradient clipping and reduce-on-plateau.
The authors' AdaBelief at lr 1e-5 with element-wise clipping needs thousands of GPU epochs; on a
2-core CPU budget of minutes Adam with a 200x larger rate converges, and norm clipping keeps the
direction of the gradient (element-wise clipping distorts it), which matters for the dense A.

Under ``torchrun`` (see :mod:`warpphys.distributed`) every rank takes its slice of each batch
and the gradients are averaged across ranks after ``backward``; ``batch_size`` is the global
batch. Scheduled-sampling masks come from a generator seeded per step from the trainer's own,
skipping the rows of lower ranks, so one process and N processes draw the same masks.
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from warpphys import checkpoint, distributed

PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass
class TrainConfig:
    """Training options. Their defaults are the package's (``warpphys fit`` reads them through
    :data:`warpphys.registry.BASE_OPTIONS`), sized for a 2-core CPU.

    Attributes:
        epochs: passes over the training set.
        batch_size: trajectories per step.
        lr: Adam learning rate; ``lr_transition`` scales it for A (dense A amplifies its errors
            over every step, so it learns more slowly).
        clip: max global gradient norm.
        context: true steps fed before the rollout, as at evaluation.
        p_forcing_start, p_forcing_end: scheduled sampling beyond the context: probability of
            feeding the true state, decayed linearly over ``forcing_epochs`` (fraction of epochs).
        mode: "autoregressive" (scheduled sampling) or "parallel" (teacher-forced, fast).
        parallel_warmup: fraction of the epochs trained first in the parallel mode (a
            curriculum: cheap teacher-forced steps, e.g. to learn parameter identification,
            before full rollouts); needs a model with input-difference recurrence.
        val_every: epochs between validations; ``patience``: validations without improvement
            before early stopping (0: never stop early); ``plateau_patience``: validations
            before the lr is halved.
        schedule: "plateau" (halve the lr when validation stalls) or "cosine" (decay it to
            zero over the epochs; for fresh data every epoch, where more steps always help).
        max_seconds: stop (keeping the best weights) after this much training time.
        keep: the weights a run ends with: "best" (those of the best validation) or "last"
            (the latest validated ones: for fresh data every epoch under a cosine schedule,
            where nothing can overfit and the schedule ends at its smallest steps, while a
            "best" picked among noisy validations can be a checkpoint from mid-training).
        seed: seeds model initialisation, batching and scheduled sampling.
        precision: arithmetic of the training steps (validation and evaluation stay fp32):
            "fp32"; "tf32" (CUDA only: float32 matmuls on TF32 tensor cores, 10-bit mantissa;
            no effect on a CPU); "bf16" (autocast of the forward pass to bfloat16).
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    lr_transition: float = 0.01
    clip: float = 1.0
    context: int = 16
    p_forcing_start: float = 1.0
    p_forcing_end: float = 0.0
    forcing_epochs: float = 0.6
    mode: str = "autoregressive"
    parallel_warmup: float = 0.0
    val_every: int = 2
    patience: int = 8
    plateau_patience: int = 3
    schedule: str = "plateau"
    keep: str = "best"
    max_seconds: float | None = None
    seed: int = 0
    param_weight: float = 1.0
    precision: str = "fp32"

    def p_forcing(self, epoch: int) -> float:
        start = self.parallel_warmup * self.epochs  # the decay starts after the warm-up
        span = max(1.0, self.forcing_epochs * (self.epochs - start))
        frac = min(1.0, max(0.0, epoch - start) / span)
        return self.p_forcing_start + (self.p_forcing_end - self.p_forcing_start) * frac


@dataclass
class History:
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_epoch: list = field(default_factory=list)
    val_mse: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: float = 0.0
    status: str = "running"
    message: str = ""


class Diverged(RuntimeError):
    pass


@torch.no_grad()
def squared_errors(model, xn: torch.Tensor, t: torch.Tensor, context: int,
                   batch_size: int = 512) -> tuple[float, int]:
    """Sum and count of the rollout's squared errors (normalised units) after the context."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, xn.shape[0], batch_size):
        xb = xn[i:i + batch_size]
        out = model.run(xb, t, context=context)
        err = (out.mean[:, context - 1:] - xb[:, context:]) ** 2
        total += float(err.sum())
        count += err.numel()
    return total, count


def validation_mse(model, xn: torch.Tensor, t: torch.Tensor, context: int,
                   batch_size: int = 512) -> float:
    """Rollout MSE in normalised units on the steps after the context."""
    total, count = squared_errors(model, xn, t, context, batch_size)
    return total / max(count, 1)


@contextmanager
def matmul_precision(precision: str, device_type: str):
    """TF32 matmuls inside the block (forward and backward) for ``"tf32"`` on CUDA."""
    if precision != "tf32" or device_type != "cuda":
        yield
        return
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def autocast(precision: str, device_type: str):
    """bfloat16 autocast of a forward pass for ``"bf16"`` (else nothing)."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


def _adam(groups):
    """Adam, fused into one kernel per step where this torch has it for these parameters'
    device (CPU since torch 2.4: 4 ms -> 1 ms a step for WARP-Phys's read-out head), else the
    default implementation."""
    try:
        return torch.optim.Adam(groups, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(groups)


def _param_groups(model, cfg: TrainConfig):
    """Adam's groups: A at ``lr * lr_transition``, the rest at ``lr``; with ``lr_transition``
    0, A is frozen at its initial value (e.g. a spectral filter bank)."""
    slow, rest = [], []
    for name, p in model.named_parameters():
        (slow if name.startswith("transition.") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr}]
    if slow and cfg.lr_transition > 0:
        groups.append({"params": slow, "lr": cfg.lr * cfg.lr_transition})
    elif slow:
        for p in slow:
            p.requires_grad_(False)
    return groups


def checkpoint_count(ckpt: dict, key: str) -> int:
    """A count stored in a training checkpoint (epochs trained, validations without
    improvement): a whole number >= 0, else ValueError."""
    value = ckpt[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} {value!r} is not a whole number >= 0")
    return value


class Trainer:
    """Trains ``model`` on normalised tensors; checkpoints to ``run_dir/last.pt``.

    Args:
        model: the model (already normalised on the training data).
        cfg: TrainConfig.
        run_dir: where ``last.pt`` (resumable state) is written atomically after each validation.
        extra: plain data stored in every checkpoint (model config, data scales, ...).
    """

    def __init__(self, model, cfg: TrainConfig, run_dir: str | Path | None = None,
                 extra: dict | None = None, device: str = "cpu", progress: bool = True):
        if cfg.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {cfg.precision!r}; use one of {PRECISIONS}")
        self.model, self.cfg, self.device = model, cfg, device
        self.progress = progress and distributed.is_main()  # one progress bar, rank 0's
        distributed.broadcast_state(model)  # every rank starts from rank 0's weights
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.extra = extra or {}
        self.opt = _adam(_param_groups(model, cfg))
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, factor=0.5, patience=cfg.plateau_patience
        )
        if cfg.schedule not in ("plateau", "cosine"):
            raise ValueError(f"unknown schedule {cfg.schedule!r}; use plateau or cosine")
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.history = History()
        self.start_epoch = 0
        self.best_val = math.inf
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.stale = 0

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "kind": "training",
            "model_state": self.model.state_dict(),
            "best_state": self.best_state,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": self.start_epoch,
            "best_val": self.best_val,
            "stale": self.stale,
            "generator": self.gen.get_state(),
            "history": asdict(self.history),
            "train_config": asdict(self.cfg),
            **self.extra,
        }

    def restore(self, ckpt: dict) -> None:
        """Continue from a training checkpoint (see :meth:`state`); one that was damaged or
        edited raises :class:`checkpoint.CheckpointError`, not whatever broke first."""
        try:
            epoch, stale = checkpoint_count(ckpt, "epoch"), checkpoint_count(ckpt, "stale")
            self.best_state = dict(ckpt["best_state"])
            self.model.load_state_dict(self.best_state)  # (checked; the current weights next)
            self.model.load_state_dict(ckpt["model_state"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.best_val = float(ckpt["best_val"])
            self.gen.set_state(ckpt["generator"])
            self.history = History(**ckpt["history"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            where = f" {str(self.run_dir / 'last.pt')!r}" if self.run_dir is not None else ""
            raise checkpoint.CheckpointError(
                f"the training checkpoint{where} was damaged or edited ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}); it cannot be "
                f"resumed: start a new run"
            ) from None
        self.start_epoch, self.stale = epoch, stale
        self.history.status = "running"

    def _save(self) -> None:
        if self.run_dir is not None and distributed.is_main():
            checkpoint.save(self.state(), self.run_dir / "last.pt")

    # -- one step -------------------------------------------------------------------------------
    def _sampling_generator(self, skip_rows: int, n_times: int) -> torch.Generator:
        """This step's scheduled-sampling generator: seeded from the trainer's generator (the
        same on every rank), advanced past the ``skip_rows`` mask rows of lower ranks (a mask is
        drawn as ``rand(rows, n_times)``; CPU draws are sequential)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        gen = torch.Generator().manual_seed(seed)
        if skip_rows:
            torch.rand(skip_rows * n_times, generator=gen)
        return gen

    def _step(self, xn_train, t_train, params_train, idx, pf, mode, epoch) -> float:
        """One optimiser step on the batch ``idx`` (this rank's slice of it); returns the
        whole batch's mean loss."""
        cfg, model = self.cfg, self.model
        lo, hi = distributed.shard(len(idx))
        gen = self._sampling_generator(lo, t_train.shape[0])
        local = idx[lo:hi].to(xn_train.device)
        dev_type = torch.device(self.device).type
        self.opt.zero_grad(set_to_none=True)
        with matmul_precision(cfg.precision, dev_type):
            if len(local):
                xb = xn_train[local]
                pb = None if params_train is None else params_train[local]
                with autocast(cfg.precision, dev_type):
                    logs = model.training_loss(
                        xb, t_train, context=cfg.context, p_forcing=pf, generator=gen,
                        params=pb, mode=mode, param_weight=cfg.param_weight,
                    )
                loss = logs["loss"].float()
            else:  # an empty slice of a short last batch: zero gradients, zero weight
                loss = torch.zeros((), device=xn_train.device)
            if distributed.world_size() == 1:
                value = loss.item()
                if not math.isfinite(value) or value > 1e8:
                    raise Diverged(f"training loss became {value:.3g} at epoch {epoch}")
                loss.backward()
            else:
                if loss.requires_grad:
                    loss.backward()
                params = [p for p in model.parameters() if p.requires_grad]
                value = distributed.reduce_gradients(params, (hi - lo) / len(idx), loss)
                if not math.isfinite(value) or value > 1e8:
                    raise Diverged(f"training loss became {value:.3g} at epoch {epoch}")
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        if not torch.isfinite(gnorm):
            raise Diverged(f"gradient became {float(gnorm)} at epoch {epoch}")
        self.opt.step()
        return value

    def _validate(self, xn_val, t_val) -> float:
        """Validation MSE; under torchrun each rank rolls out its slice and the sums are
        all-reduced, so every rank gets the same number."""
        lo, hi = distributed.shard(xn_val.shape[0])
        total, count = squared_errors(self.model, xn_val[lo:hi], t_val, self.cfg.context)
        total, count = distributed.sum_floats(total, count)
        return total / max(count, 1)

    # -- loop -------------------------------------------------------------------------------
    def fit(self, xn_train, t_train, xn_val, t_val, params_train=None,
            resample=None) -> History:
        """Train; on return the model holds the best validated weights.

        ``resample(epoch) -> (xn_train, params_train)``: fresh training data for each epoch
        (e.g. newly simulated trajectories of a known system, so that the parameter read-out
        never sees the same parameters twice); deterministic in ``epoch``, so that a resumed
        run sees the same data."""
        cfg, model = self.cfg, self.model
        t0 = time.perf_counter() - self.history.seconds
        bar = tqdm(range(self.start_epoch, cfg.epochs), desc="fit", unit="epoch",
                   disable=not self.progress or sys.stderr is None,  # (stderr closed: 2>&-)
                   initial=self.start_epoch, total=cfg.epochs,
                   dynamic_ncols=True)
        good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # fresh data for the next epoch are made on a second thread while this one trains
        # (torch releases the GIL in its kernels); deterministic in the epoch all the same
        prefetch = ThreadPoolExecutor(1) if resample is not None else None
        coming = None  # the next epoch's data, being made
        try:
            for epoch in bar:
                if cfg.schedule == "cosine":
                    scale = 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
                    for group, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
                        group["lr"] = base * scale
                if resample is not None and epoch > 0:  # (a resumed run's first: made here)
                    xn_train, params_train = (coming.result() if coming is not None
                                              else resample(epoch))
                if prefetch is not None and epoch + 1 < cfg.epochs:
                    coming = prefetch.submit(resample, epoch + 1)
                model.train()
                n = xn_train.shape[0]  # (fresh data may come in another size)
                steps = math.ceil(n / cfg.batch_size)
                pf = cfg.p_forcing(epoch)
                mode = "parallel" if epoch < cfg.parallel_warmup * cfg.epochs else cfg.mode
                perm = torch.randperm(n, generator=self.gen)
                total = 0.0
                for i in range(steps):
                    idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                    total += self._step(xn_train, t_train, params_train, idx, pf, mode, epoch)
                self.history.epoch.append(epoch)
                self.history.train_loss.append(total / steps)
                self.history.lr.append(self.opt.param_groups[0]["lr"])
                self.start_epoch = epoch + 1
                good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                last = epoch + 1 == cfg.epochs
                elapsed = time.perf_counter() - t0
                out_of_time = distributed.any_rank(
                    cfg.max_seconds is not None and elapsed > cfg.max_seconds)
                if (epoch + 1) % cfg.val_every == 0 or last or out_of_time:
                    val = self._validate(xn_val, t_val)
                    if not math.isfinite(val):
                        raise Diverged(f"validation error became {val} at epoch {epoch}")
                    self.history.val_epoch.append(epoch)
                    self.history.val_mse.append(val)
                    if cfg.schedule == "plateau":
                        self.sched.step(val)
                    if val < self.best_val or cfg.keep == "last":
                        self.best_val, self.stale = val, 0
                        self.best_state = {k: v.detach().clone()
                                           for k, v in model.state_dict().items()}
                    elif mode == cfg.mode:  # no early stop during a warm-up in another mode
                        self.stale += 1
                    self.history.seconds = time.perf_counter() - t0
                    self._save()
                    bar.set_postfix(loss=f"{total / steps:.3g}", val=f"{val:.3g}",
                                    best=f"{self.best_val:.3g}", pf=f"{pf:.2f}",
                                    lr=f"{self.opt.param_groups[0]['lr']:.1e}")
                    if cfg.patience and self.stale >= cfg.patience:
                        self.history.status = "early-stopped"
                        self.history.message = f"no validation improvement in {cfg.patience} checks"
                        break
                    if out_of_time:
                        self.history.status = "time-budget"
                        self.history.message = f"stopped after max_seconds={cfg.max_seconds}"
                        break
                else:
                    bar.set_postfix(loss=f"{total / steps:.3g}", pf=f"{pf:.2f}")
            else:
                self.history.status = "completed"
        except Diverged as e:
            model.load_state_dict(good_state)
            self.history.status = "diverged"
            self.history.message = (
                f"{e}; kept the last good weights. Try a smaller --lr, a smaller clip, "
                f"or more context steps"
            )
        finally:
            bar.close()
            if prefetch is not None:
                prefetch.shutdown(wait=True, cancel_futures=True)
        self.history.seconds = time.perf_counter() - t0
        model.load_state_dict(self.best_state)
        self._save()
        return self.history
