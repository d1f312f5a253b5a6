"""WARP: weight-space linear recurrent networks.

The hidden state ``theta_t (D,)`` is the flat weight vector of a root network. It evolves by a
linear recurrence driven by input differences,

    theta_t = A theta_{t-1} + B (x_t - x_{t-1}),     theta_0 = phi(x_0),

with A (D, D) starting at the identity and B (D, d) at zero, and the root evaluated with
``theta_t`` predicts the next state. States are normalised inside the model (statistics fitted on
training data and saved with it): users pass and receive physical units.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from warpphys import fused, progress
from warpphys.interface import Model, Normalizer, Output  # noqa: F401  (Normalizer re-exported)
from warpphys.roots import Root, build_root


def rotation_matrix(angles: torch.Tensor, radii: torch.Tensor, size: int) -> torch.Tensor:
    """(size, size): the identity with its leading 2n x 2n block replaced by the block-diagonal
    damped rotations ``radius * [[cos, -sin], [sin, cos]]`` of ``angles`` and ``radii`` (n,)."""
    c, s = radii * torch.cos(angles), radii * torch.sin(angles)
    blocks = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    A = torch.eye(size, dtype=angles.dtype, device=angles.device)
    n = 2 * angles.shape[0]
    A[:n, :n] = torch.block_diag(*blocks)
    return A


def spectral_init(size: int) -> torch.Tensor:
    """A block-diagonal A of damped 2x2 rotations: angles per step from 0.01 to 3 rad (log-spaced)
    and radii from 0.999 to 0.8, so that theta starts as a bank of damped Fourier transforms of
    the input differences (a linear filter bank that can tell frequencies and decay rates apart;
    with A = I the sum of differences telescopes to x_t - x_0 and forgets the history)."""
    n = size // 2
    ang = torch.logspace(math.log10(0.01), math.log10(3.0), n)
    rad = 1.0 - torch.logspace(-3.0, math.log10(0.2), n)
    return rotation_matrix(ang, rad, size)


#: what the recurrence is driven by the differences of (see :meth:`WARP.lifted`)
LIFTS = ("none", "quadratic", "log")


#: the radii of the spectral bank's groups (memory lengths of 1000, 100, 33 and 10 steps)
BANK_RADII = (0.999, 0.99, 0.97, 0.9)


def filter_bank(n: int, angle_range: tuple[float, float] = (0.01, 3.0),
                radii: tuple[float, ...] = BANK_RADII) -> tuple:
    """Angles (rad per step) and radii of ``n`` damped rotations: every radius paired with
    angles log-spaced over ``angle_range``, so that each frequency is watched over several
    memory lengths (1 / (1 - radius) steps)."""
    lo, hi = angle_range
    n_ang = max(1, -(-n // len(radii)))
    ang = torch.logspace(math.log10(lo), math.log10(hi), n_ang)
    angles = ang.repeat(len(radii))[:n]
    rad = torch.tensor(radii).repeat_interleave(n_ang)[:n]
    return angles, rad


def data_angle_range(xn: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """The range of frequencies (rad per sample step) that the states ``xn (N, T, d)`` move at,
    widened 3x on either side: the dominant frequency of each trajectory (periodogram of every
    state, summed) between its 2% and 98% quantiles over trajectories; the lowest resolvable
    frequency (one cycle per sequence) at least."""
    T = xn.shape[1]
    xc = xn - xn.mean(1, keepdim=True)
    power = torch.fft.rfft(xc.double(), dim=1).abs().pow(2).sum(-1)  # (N, F)
    power[:, 0] = 0
    omega = 2 * math.pi * power.argmax(1).double() / T
    floor = 2 * math.pi / T
    lo = max(float(torch.quantile(omega, 0.02)) / 3, floor / 3)
    hi = min(max(float(torch.quantile(omega, 0.98)), floor) * 3, 3.0)
    return lo, max(hi, 2 * lo)


class Transition(nn.Module):
    """The state matrix A: dense (default), diagonal, identity plus low rank, or a fixed bank of
    damped rotations ("spectral": not trained; O(D) per step, its frequencies set from the
    training data by :meth:`tune_to`).

    Every trained form starts at the identity (so theta does not move until B has learned),
    except a dense A with ``init="spectral"`` (see :func:`spectral_init`).
    """

    def __init__(self, size: int, kind: str = "dense", rank: int = 8, init: str = "identity",
                 bank: int | None = None):
        super().__init__()
        self.kind, self.size, self.rank, self.init = kind, size, rank, init
        # spectral: the leading ``bank`` weights are rotated, the rest held (identity)
        self.bank = size if bank is None else min(bank, size)
        if init not in ("identity", "spectral"):
            raise ValueError(f"unknown init {init!r} of A; use identity or spectral")
        if init == "spectral" and kind not in ("dense", "spectral"):
            raise ValueError("the spectral init of A needs a dense transition")
        if kind == "spectral":
            angles, radii = filter_bank(self.bank // 2)
            self.register_buffer("angles", angles)
            self.register_buffer("radii", radii)
        elif kind == "dense":
            self.A = nn.Parameter(torch.eye(size) if init == "identity" else spectral_init(size))
        elif kind == "diagonal":
            self.a = nn.Parameter(torch.ones(size))
        elif kind == "lowrank":
            self.U = nn.Parameter(torch.zeros(size, rank))
            self.V = nn.Parameter(torch.randn(size, rank) / size**0.5)
        else:
            raise ValueError(
                f"unknown transition {kind!r}; use dense, diagonal, lowrank or spectral")

    @torch.no_grad()
    def tune_to(self, xn: torch.Tensor, t: torch.Tensor) -> None:
        """Spectral bank only: frequencies over the range the training states move at."""
        if self.kind == "spectral":
            angles, radii = filter_bank(self.bank // 2, data_angle_range(xn, t))
            self.angles.copy_(angles)
            self.radii.copy_(radii)

    def step(self, theta: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        """A theta + drive, for theta (B, D) and drive (B, D)."""
        if self.kind == "spectral":  # the block-diagonal product of rotation_matrix, O(D)
            n = self.angles.shape[0]
            pairs = theta[:, : 2 * n].view(-1, n, 2)
            c = self.radii * torch.cos(self.angles)
            s = self.radii * torch.sin(self.angles)
            a, b = pairs[..., 0], pairs[..., 1]
            rotated = torch.stack([c * a - s * b, s * a + c * b], -1).view(-1, 2 * n)
            return drive + torch.cat([rotated, theta[:, 2 * n:]], -1)
        if self.kind == "dense":
            return torch.addmm(drive, theta, self.A.t())
        if self.kind == "diagonal":
            return torch.addcmul(drive, theta, self.a)
        return drive + theta + (theta @ self.V) @ self.U.t()

    def stepper(self, B: torch.Tensor, steps: int, *, fast: bool = True):
        """The step ``(theta (b, D), dx (b, d)) -> A theta + B dx`` for one run of at most
        ``steps`` steps. For a dense A under autograd (and ``fast``), the fused recurrence of
        :class:`_DenseRecurrence`: same numbers, the gradients of A and B as one GEMM each."""
        A = getattr(self, "A", None)
        if (fast and self.kind == "dense" and steps > 0 and torch.is_grad_enabled()
                and (A.requires_grad or B.requires_grad)
                and not torch.is_autocast_enabled(A.device.type)):
            return _DenseRecurrence(A, B, steps)
        return lambda theta, dx: self.step(theta, dx @ B.t())

    def unrolled(self, theta0: torch.Tensor, dx: torch.Tensor, B: torch.Tensor,
                 steps: torch.Tensor) -> torch.Tensor:
        """theta_s = A^s theta0 + sum_{k < s} A^(s-1-k) B dx_k at the steps ``steps (S,)``, for
        theta0 (B, D), inputs dx (B, K, d) (K >= max(steps) - 1) and B (D, d): (B, S, D).

        The fixed spectral bank in closed form: each damped rotation is a complex number
        lambda = r e^(i phi), so theta_s is a sum of the inputs weighted by lambda's powers:
        one GEMM over the steps for all filters (no loop over time; its cost grows with S x K,
        so it is meant for a few steps of a short run, such as the parameter loss's steps).
        Same values as the recurrence up to rounding."""
        if self.kind != "spectral":
            raise ValueError(f"a {self.kind} transition has no closed form; run the recurrence")
        n, (nb, K, d), S = self.angles.shape[0], dx.shape, steps.shape[0]
        # lambda^m for m = s - 1 - k (input k's weight in theta_s; zero for k >= s) and, in
        # the last row, for m = s (theta0's); in float64: the angles m phi reach hundreds of rad
        st = steps.to(torch.float64)
        m = torch.cat([st - 1 - torch.arange(K, dtype=torch.float64, device=steps.device)[:, None],
                       st[None]], 0)[..., None]  # (K + 1, S, 1)
        pw = torch.exp(m.clamp_min(0) * self.radii.double().log()) * (m >= 0)
        ang = m.clamp_min(0) * self.angles.double()
        re, im = (pw * torch.cos(ang)).to(dx.dtype), (pw * torch.sin(ang)).to(dx.dtype)
        # B folded into the powers: input (k, i) -> pair (s, j) of theta_s, real and imaginary
        # parts; then one GEMM (nb, K d) @ (K d, 2 S n) filters every input by every rotation
        # (d, 1, n), contiguous: broadcasting a strided view is 20x slower
        b_a, b_b = (B[i:2 * n:2].t().contiguous()[:, None] for i in (0, 1))
        re_k, im_k = re[:K, None], im[:K, None]  # (K, 1, S, n)
        kern = torch.stack([b_a * re_k - b_b * im_k, b_a * im_k + b_b * re_k], 2)
        out = (dx.reshape(nb, K * d) @ kern.reshape(K * d, 2 * S * n)).view(nb, 2, S, n)
        a0, b0 = theta0[:, None, 0:2 * n:2], theta0[:, None, 1:2 * n:2]
        re0, im0 = re[K], im[K]  # (S, n)
        real = out[:, 0] + re0 * a0 - im0 * b0
        imag = out[:, 1] + im0 * a0 + re0 * b0
        rotated = torch.stack([real, imag], -1).flatten(-2)
        if 2 * n == theta0.shape[1]:
            return rotated
        # weights beyond the bank are held: theta0 plus B times the inputs summed so far
        csum = torch.cat([torch.zeros_like(dx[:, :1]), dx.cumsum(1)], 1)[:, steps]
        return torch.cat([rotated, theta0[:, None, 2 * n:] + csum @ B[2 * n:].t()], -1)

    def matrix(self) -> torch.Tensor:
        if self.kind == "spectral":
            return rotation_matrix(self.angles, self.radii, self.size)
        if self.kind == "dense":
            return self.A
        if self.kind == "diagonal":
            return torch.diag(self.a)
        return torch.eye(self.size, device=self.U.device) + self.U @ self.V.t()


class _DenseRecurrence:
    """``theta_{s+1} = [theta_s, dx_s] [A, B]^T`` for one run, with a hand-written backward.

    Autograd through plain ``addmm`` steps forms the gradient of A as one small outer product
    per step (inner dimension: the batch) and adds them up one by one. Here every step's inputs
    ``z_s = [theta_s, dx_s]`` go to a tape and every step's output gradient ``g_s`` comes back to
    it; the gradient of ``W = [A, B]`` is then one GEMM over all steps and trajectories,
    ``G^T Z`` (inner dimension batch x steps), formed after the last step's backward. Each step
    is linked to that final product through a scalar token (see :class:`_TapeEntry`), so
    autograd runs it only once every step's gradient has arrived.
    """

    def __init__(self, A: torch.Tensor, B: torch.Tensor, steps: int):
        self.D, self.steps = A.shape[0], steps
        self.W = torch.cat([A.detach(), B.detach()], 1)  # (D, D + d)
        self.Wt = fused.padded_transpose(A, B)
        self.width = self.Wt.shape[0]
        self.inputs = self.grads = None
        self.used = 0
        self.filled = set()  # steps whose output gradient has arrived
        self.token = _TapeEntry.apply(A, B, self)

    def __call__(self, theta: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        if self.inputs is None:  # (uninitialised: every step writes its row; 5% of a step
            # went to zero-filling it) only the padding is zeroed (0 * garbage may be NaN)
            self.inputs = theta.new_empty(self.steps, theta.shape[0], self.width)
            self.inputs[..., self.W.shape[1]:] = 0
        if self.used >= self.steps:
            raise RuntimeError("more recurrence steps than this run was built for")
        s, self.used = self.used, self.used + 1
        return _TapeStep.apply(theta, dx, self.token, self, s)


class _TapeEntry(torch.autograd.Function):
    """A and B enter the fused recurrence here; the backward forms their gradients at once."""

    @staticmethod
    def forward(ctx, A, B, tape):
        ctx.tape = tape
        return A.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, _):
        tape = ctx.tape
        if tape.grads is None:
            return None, None, None
        n, D, K = tape.used, tape.D, tape.W.shape[1]
        for s in range(n):  # steps that the loss never reached: zero gradient
            if s not in tape.filled:
                tape.grads[s].zero_()
        G = tape.grads[:n].reshape(-1, D)
        Z = tape.inputs[:n].reshape(-1, tape.width)
        grad_A = G.t() @ Z[:, :D] if ctx.needs_input_grad[0] else None
        grad_B = G.t() @ Z[:, D:K] if ctx.needs_input_grad[1] else None
        return grad_A, grad_B, None


class _TapeStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, dx, token, tape, s):
        ctx.tape, ctx.s = tape, s
        z = tape.inputs[s]
        z[:, : tape.D].copy_(theta)
        z[:, tape.D:tape.W.shape[1]].copy_(dx)
        return z @ tape.Wt

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        tape = ctx.tape
        if tape.grads is None:  # (rows of steps never reached are zeroed at the end)
            tape.grads = g.new_empty(tape.inputs.shape[:2] + (tape.D,))
        tape.grads[ctx.s].copy_(g)
        tape.filled.add(ctx.s)
        gz = g @ tape.W
        return gz[:, : tape.D], gz[:, tape.D:], g.new_zeros(()), None, None


class WARP(Model):
    """A weight-space linear RNN.

    Args:
        dim: state size d.
        root: the root network (see :mod:`warpphys.roots` and :mod:`warpphys.physics`).
        hypernet: theta_0 = phi(x_0) with an MLP phi (else a learned vector).
        hyper_width: width of phi's two hidden layers.
        transition: "dense", "diagonal" or "lowrank" A.
        diff: what drives the recurrence. "input": x_t - x_{t-1} of the inputs fed (the
            ordinary difference); "prediction": x_t - xhat_{t-1}, against the model's estimate of
            the previous state (the paper's filter-like variant); "innovation": x_t - xhat_t,
            the one-step prediction error alone, so that theta integrates its own errors like
            an adaptive observer and stays put (up to A) during rollout. "input" and
            "prediction" agree during rollout.
        a_init: "identity" (the paper's) or "spectral" (a damped-rotation filter bank).
        freeze_params: physics roots only: past the context, keep the physical parameters read
            at the last context step (the model's own predictions carry no new information
            about them) instead of re-reading them from weights driven by those predictions.
    """

    #: train a dense A through the fused recurrence (:class:`_DenseRecurrence`), and a black
    #: box's autoregressive run as one autograd node (:mod:`warpphys.fused`); False: plain
    #: autograd through every step (same numbers up to rounding; for tests and comparisons)
    fast_recurrence: bool = True

    def __init__(self, dim: int, root: Root, *, hypernet: bool = True, hyper_width: int = 64,
                 transition: str = "dense", rank: int = 8, diff: str = "input",
                 a_init: str = "identity", freeze_params: bool = False, lift: str = "none",
                 log_floor: float = 1e-4):
        super().__init__(dim)
        if diff not in ("input", "prediction", "innovation"):
            raise ValueError(f"diff must be 'input', 'prediction' or 'innovation', got {diff!r}")
        self.dim, self.root, self.diff = dim, root, diff
        if freeze_params and not root.has_params:
            raise ValueError("freeze_params needs a physics root (one with parameters)")
        self.freeze_params = bool(freeze_params)
        self.hyper_width, self.use_hypernet = hyper_width, hypernet
        D = root.num_weights
        self.transition = Transition(D, transition, rank, a_init, bank=root.bank_weights)
        if lift not in LIFTS:
            raise ValueError(f"unknown lift {lift!r}; use one of {LIFTS}")
        if lift == "log" and getattr(getattr(root, "system", None), "state_low", None) is None:
            raise ValueError("lift 'log' needs a physics root of a system with positive states "
                             "(a state_low, e.g. lotka_volterra)")
        if not (isinstance(log_floor, (int, float)) and 0 < log_floor < math.inf):
            raise ValueError(f"log_floor must be a positive number of training stds, got "
                             f"{log_floor!r}")
        self.lift, self.log_floor = lift, float(log_floor)
        n_in = dim + {"none": 0, "quadratic": dim * (dim + 1) // 2, "log": dim}[lift]
        # B starts at zero (theta still until B has learned), except before a fixed filter bank,
        # which then sees the inputs from the start
        B0 = torch.zeros(D, n_in)
        if transition == "spectral":
            B0[: self.transition.bank] = 0.1 * torch.randn(self.transition.bank, n_in)
        self.B = nn.Parameter(B0)
        theta_init = root.initial_weights()
        if hypernet:
            self.hypernet = nn.Sequential(
                nn.Linear(dim, hyper_width), nn.GELU(),
                nn.Linear(hyper_width, hyper_width), nn.GELU(),
                nn.Linear(hyper_width, D),
            )
            with torch.no_grad():
                last = self.hypernet[-1]
                last.weight.mul_(0.01)
                last.bias.copy_(theta_init)
        else:
            self.theta_init = nn.Parameter(theta_init.clone())

    # -- configuration ----------------------------------------------------------------------
    @property
    def num_weights(self) -> int:
        return self.root.num_weights

    def step_gemm_flops(self, batch: int) -> float:
        """The dense recurrence's theta A^T (2 batch D^2); the other transitions are O(D)."""
        return 2.0 * batch * self.num_weights ** 2 if self.transition.kind == "dense" else 0.0

    def config(self) -> dict:
        return {"dim": self.dim, "root": self.root.config(), "hypernet": self.use_hypernet,
                "hyper_width": self.hyper_width, "transition": self.transition.kind,
                "rank": self.transition.rank, "diff": self.diff, "a_init": self.transition.init,
                "freeze_params": self.freeze_params, "lift": self.lift,
                "log_floor": self.log_floor}

    @classmethod
    def from_config(cls, config: dict) -> WARP:
        config = dict(config)
        root = build_root(config.pop("root"))
        return cls(root=root, **config)

    # -- pieces -----------------------------------------------------------------------------
    def theta0(self, x0n: torch.Tensor) -> torch.Tensor:
        """Initial root weights (B, D) from the first (normalised) state (B, d)."""
        if self.use_hypernet:
            return self.hypernet(x0n)
        return self.theta_init.expand(x0n.shape[0], -1)

    def _root(self, theta, tau, x_prev, dt, **kw):
        return self.root(theta, tau, x_prev, dt, self.normalizer, **kw)

    # -- the three ways to run ---------------------------------------------------------------
    def run(self, xn: torch.Tensor, t: torch.Tensor, *, context: int, p_forcing: float = 0.0,
            generator: torch.Generator | None = None, keep_theta: bool = False) -> Output:
        """Autoregressive run in normalised units (training and inference).

        Args:
            xn: (B, T_x, d) normalised states; the first ``context`` are always fed.
            t: (T,) times of the whole run, T >= context; T may exceed T_x (pure rollout there).
            context: number of true steps fed before rolling out (>= 1).
            p_forcing: beyond the context, probability of feeding the true state instead of the
                prediction (scheduled sampling; needs T_x == T when > 0).
            keep_theta: also return the weights used at every step (``"last"``: only those of
                the last prediction, as ``theta (B, 1, D)``; saves memory on long runs).
        Returns:
            Output with ``mean (B, T-1, d)``: predictions of steps 1..T-1.
        """
        T = t.shape[0]
        self._check_run(xn, t, context, p_forcing)
        tau, dt = self.tau(t), t[1:] - t[:-1]
        B = xn.shape[0]
        theta = self.theta0(xn[:, 0])
        xs = xn.unbind(1)  # (unbind, not indexing in the loop: cheap backward)
        x_in = xs[0]
        prev_est = x_in
        means, stds, thetas = [], [], []
        force = (self.forcing_mask(B, T, p_forcing, generator, xn.device) if p_forcing > 0
                 else None)
        if self.fast_recurrence and fused.applies(self, xn, keep_theta):
            return Output(fused.rollout(self, xn, tau, context, force))
        frozen = None
        step = self.transition.stepper(self.B, T - 2, fast=self.fast_recurrence)
        for s in range(T - 1):
            progress.tick()  # (a long rollout's bar, when one is open)
            kw = {}
            if self.freeze_params and s >= context - 1:  # predicting past the context
                if frozen is None:
                    frozen = self.root.params(theta, tau[s + 1].expand(B), x_in)
                kw = {"params": frozen}
            mean, log_std = self._root(theta, tau[s + 1].expand(B), x_in, dt[s].expand(B), **kw)
            means.append(mean)
            if log_std is not None:
                stds.append(log_std)
            if keep_theta is True or (keep_theta == "last" and s == T - 2):
                thetas.append(theta)
            if s == T - 2:
                break
            if s + 1 < context:
                nxt = xs[s + 1]
            elif p_forcing > 0:
                nxt = torch.where(force[:, s + 1, None], xs[s + 1], mean)
            else:
                nxt = mean
            base = {"input": x_in, "prediction": prev_est, "innovation": mean}[self.diff]
            theta = step(theta, self.lifted(nxt) - self.lifted(base))
            x_in, prev_est = nxt, mean
        return Output(
            torch.stack(means, 1),
            torch.stack(stds, 1) if stds else None,
            torch.stack(thetas, 1) if keep_theta else None,
        )

    def run_parallel(self, xn: torch.Tensor, t: torch.Tensor, keep_theta: bool = False) -> Output:
        """Teacher-forced run: every theta_t from the linear recurrence on the true differences,
        then the root evaluated for all steps at once (no root inside the time loop).

        Equals ``run(xn, t, context=T)``; only for ``diff == "input"``.
        """
        if self.diff != "input":
            raise ValueError(
                f"the parallel mode needs diff='input' (this model uses {self.diff!r})"
            )
        B, T, d = xn.shape
        th = self.teacher_forced_weights(xn)
        tau = self.tau(t)[1:].expand(B, -1)
        dt = (t[1:] - t[:-1]).expand(B, -1)
        mean, log_std = self._root(
            th.reshape(-1, th.shape[-1]), tau.reshape(-1), xn[:, :-1].reshape(-1, d),
            dt.reshape(-1),
        )
        mean = mean.view(B, T - 1, d)
        log_std = None if log_std is None else log_std.view(B, T - 1, d)
        return Output(mean, log_std, th if keep_theta else None)

    def teacher_forced_weights(self, xn: torch.Tensor) -> torch.Tensor:
        """theta_0 .. theta_{T-2} (B, T-1, D) driven by the true differences of ``xn (B, T, d)``:
        theta_s is what predicts step s + 1 after the steps 0..s were fed."""
        T = xn.shape[1]
        lx = self.lifted(xn)
        dx = (lx[:, 1:] - lx[:, :-1]).unbind(1)  # T-1 x (B, d or lifted size)
        theta = self.theta0(xn[:, 0])
        thetas = [theta]
        step = self.transition.stepper(self.B, T - 2, fast=self.fast_recurrence)
        for s in range(T - 2):
            theta = step(theta, dx[s])
            thetas.append(theta)
        return torch.stack(thetas, 1)

    def weights_at(self, xn: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``teacher_forced_weights(xn)[:, steps]`` (B, S, D); for a fixed spectral bank
        computed for those steps only, in closed form (a few times faster to train)."""
        if self.transition.kind != "spectral":
            return self.teacher_forced_weights(xn)[:, steps]
        lx = self.lifted(xn)
        return self.transition.unrolled(self.theta0(xn[:, 0]), lx[:, 1:] - lx[:, :-1], self.B,
                                        steps)

    def lifted(self, xn: torch.Tensor) -> torch.Tensor:
        """What the recurrence sees of a (normalised) state ``(..., d)``: the state itself, and
        with ``lift="quadratic"`` also its quadratic monomials x_i x_j (i <= j), so that theta
        also filters quadratic quantities such as energies; with ``lift="log"`` (systems with
        positive states, e.g. populations) also the logarithms of their heights above the
        system's ``state_low``, floored at ``log_floor`` training stds, so that theta sees the
        per-step growth rates (d log x / dt = a - b y on Lotka-Volterra), which the states
        themselves hide once a population has fallen close to zero."""
        if self.lift == "none":
            return xn
        if self.lift == "log":
            std = self.normalizer.std
            height = self.normalizer.decode(xn) - self.root.state_low_as(std)
            return torch.cat([xn, torch.log(torch.maximum(height, self.log_floor * std))], -1)
        i, j = torch.triu_indices(self.dim, self.dim, device=xn.device)
        return torch.cat([xn, xn[..., i] * xn[..., j]], -1)

    # -- physics roots ----------------------------------------------------------------------------
    @property
    def has_params(self) -> bool:
        """Whether the root reads out physical parameters (physics roots)."""
        return self.root.has_params

    def fit_data_scales(self, train, system) -> None:
        """Let a physics root take its parameter scales from the training data, and a fixed
        filter bank its frequencies (after the normaliser has been fitted)."""
        self.root.fit_scales(train, float(self.window))
        x = torch.as_tensor(train.x, dtype=torch.float32)
        self.transition.tune_to(self.normalizer.encode(x.to(self.normalizer.mean)),
                                torch.as_tensor(train.t))

    @torch.no_grad()
    def recover_params(self, x: torch.Tensor, t: torch.Tensor, context: int,
                       return_theta: bool = False):
        """Physical parameters (B, p) read from the weights after feeding ``context`` steps of
        ``x (B, >=K, d)`` (physical units): one forward pass, no gradient step. With
        ``return_theta``, also the weights (B, D) they were read from."""
        if not self.has_params:
            raise TypeError("this root has no physical parameters (use a physics root)")
        K = context
        if K < 2:
            raise ValueError("parameter recovery needs a context of at least 2 steps")
        xn = self.normalizer.encode(x[:, :K])
        t_ext = torch.cat([t[:K], t[K - 1:K] + (t[K - 1] - t[K - 2])])
        out = self.run(xn, t_ext, context=K, keep_theta="last")
        B = x.shape[0]
        theta = out.theta[:, -1]
        est = self.root.params(theta, self.tau(t_ext)[K].expand(B), xn[:, K - 1])
        return (est, theta) if return_theta else est

    # -- training -------------------------------------------------------------------------------
    def training_loss(self, xn, t, *, context, p_forcing=1.0, generator=None, params=None,
                      mode="autoregressive", param_weight=1.0) -> dict:
        """Loss on one batch of normalised trajectories ``xn (B, T, d)``.

        Mean squared error of the next-step predictions (Gaussian negative log-likelihood when the
        root predicts a std), plus, for physics roots given true ``params``, the root's parameter
        loss weighted by ``param_weight``. A root with a parameter read-out head, trained in
        parallel on known parameters, learns from the parameter loss alone: with the physics
        known, the next-step predictions follow from the parameters (and, without parameters,
        the next-step errors train it).
        """
        if (mode == "parallel" and self.root.param_head and params is not None
                and param_weight > 0):
            # the weights of the scored steps only (closed form for a fixed spectral bank)
            steps = self.root.loss_steps_of(xn.shape[1] - 1, context, xn.device)
            ploss = self.root.param_loss(self.weights_at(xn, steps), xn, t, params,
                                         self.normalizer, self, context=context, steps=steps)
            return {"loss": param_weight * ploss, "param_loss": ploss.detach()}
        if mode == "parallel":
            out = self.run_parallel(xn, t, keep_theta=self.root.wants_theta)
        elif mode == "autoregressive":
            out = self.run(xn, t, context=context, p_forcing=p_forcing, generator=generator,
                           keep_theta=self.root.wants_theta)
        else:
            raise ValueError(f"unknown training mode {mode!r}: autoregressive or parallel")
        target = xn[:, 1:]
        if out.log_std is not None:
            log_std = out.log_std.clamp_min(math.log(1e-4))
            loss = (0.5 * ((target - out.mean) / log_std.exp()) ** 2 + log_std).mean()
        else:
            loss = ((target - out.mean) ** 2).mean()
        logs = {"mse": ((target - out.mean) ** 2).mean().detach()}
        if params is not None and param_weight > 0 and self.root.wants_theta:
            ploss = self.root.param_loss(out.theta, xn, t, params, self.normalizer, self,
                                         context=context)
            if ploss is not None:
                logs["param_loss"] = ploss.detach()
                loss = loss + param_weight * ploss
        logs["loss"] = loss
        return logs
