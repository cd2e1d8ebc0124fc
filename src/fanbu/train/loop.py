"""THE training loop. Everything in fanbu trains through :class:`Trainer`; methods add loss terms.

Terms may own trainable modules (a projection for hidden-state distillation): ``modules()``
returns them; the loop optimises their parameters with the model's, all-reduces their gradients under
DDP, and checkpoints them through the term's ``state_dict``.

Per optimiser step, in this order: build the batch from the plan; ``forward`` the model; ask each
term, in the order given, for its named loss terms and add them all; backward (accumulating over
``grad_accum`` batches); clip; step the optimiser and the LR schedule. Then, when due: evaluate (and
early-stop), run the terms' ``on_step_end`` hooks, checkpoint. At the end of an epoch the
terms' ``on_epoch_end`` hooks run; their returned values are logged in the history.

It runs in one process here and under ``torchrun`` / ``accelerate launch`` (DDP) unchanged: the
`accelerate` ``Accelerator`` wraps the model, and each rank takes every ``world_size``-th batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from fanbu.errors import CheckpointError, ConfigError
from fanbu.train.batching import BatchPlan
from fanbu.train.checkpoint import CheckpointData, latest_checkpoint, load_checkpoint, save_checkpoint
from fanbu.train.config import TrainConfig
from fanbu.train.seed import deterministic
from fanbu.train.terms import ForwardFn, LoopState, LossTerm, classifier_forward, hook_values

Evaluate = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class TrainResult:
    """How a run ended."""

    state: LoopState
    last_metrics: dict[str, float]
    resumed_from: int | None
    environment: dict[str, Any] = field(default_factory=dict)  # threads, torch version, deterministic


FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or "norm." in name


def lr_factor(name: str, multipliers: Mapping[str, float]) -> float:
    """The factor of the longest prefix of ``name`` in ``multipliers`` (1.0 when none matches)."""
    matches = [prefix for prefix in multipliers if name.startswith(prefix)]
    return float(multipliers[max(matches, key=len)]) if matches else 1.0


def _param_groups(named: Sequence[tuple[str, nn.Parameter]], config: TrainConfig) -> list[dict[str, Any]]:
    """Decay and no-decay groups; with ``lr_multipliers``, one pair per factor (in order of first use),
    each with its own ``lr`` (``lr_factor`` records the factor in checkpoints)."""
    if config.lr_multipliers is None:
        return [
            {"params": [p for n, p in named if not _no_decay(n)], "weight_decay": config.weight_decay},
            {"params": [p for n, p in named if _no_decay(n)], "weight_decay": 0.0},
        ]
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, param in named:
        factor, decay = lr_factor(name, config.lr_multipliers), not _no_decay(name)
        group = groups.setdefault(
            (factor, decay),
            {
                "params": [],
                "weight_decay": config.weight_decay if decay else 0.0,
                "lr": config.lr * factor,
                "lr_factor": factor,
            },
        )
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(
    model: nn.Module, config: TrainConfig, extra: Sequence[nn.Module] = ()
) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay, none on biases and norms; ``extra`` modules train too.

    ``config.lr_multipliers`` scales the learning rate of the parameters under each name prefix (the
    ``extra`` modules are named ``extra0.``, ``extra1.``, ...); a prefix that names no parameter is an
    error, since it is most likely a typo.
    """
    modules = [("", model)] + [(f"extra{i}.", m) for i, m in enumerate(extra)]
    every = [(prefix + n, p) for prefix, m in modules for n, p in m.named_parameters()]
    named = [(n, p) for n, p in every if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters; unfreeze some before training")
    unused = sorted(k for k in config.lr_multipliers or {} if not any(n.startswith(k) for n, _ in every))
    if unused:
        raise ConfigError(
            f"lr_multipliers: {unused} match no parameter name (they start e.g. with "
            f"{every[0][0]!r}); give prefixes of the model's parameter names"
        )
    groups = _param_groups(named, config)
    params = [p for _, p in named]
    # one fused kernel per step instead of a Python loop over tensors: the same update, several times
    # faster on CPU (a sixth of a small encoder's training step there)
    fused = len({p.device.type for p in params}) == 1 and params[0].device.type in FUSED_DEVICES
    fused &= all(p.dtype in FUSED_DTYPES for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, fused=fused or None)


DROPOUT_LAYERS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@contextmanager
def dropout_override(model: nn.Module, p: float | None) -> Iterator[None]:
    """Set every dropout layer of ``model`` to probability ``p`` inside the block (``None``: unchanged).

    Covers the layers of ``DROPOUT_LAYERS`` (attention-probability dropout in transformers reads its
    module's ``p``) and the float ``attention_dropout`` some attention modules keep; restores them after.
    """
    if p is None:
        yield
        return
    saved: list[tuple[nn.Module, str, float]] = []
    for module in model.modules():
        if isinstance(module, DROPOUT_LAYERS):
            saved.append((module, "p", module.p))
        elif isinstance(getattr(module, "attention_dropout", None), float):
            saved.append((module, "attention_dropout", module.attention_dropout))
    try:
        for module, attribute, _ in saved:
            setattr(module, attribute, p)
        yield
    finally:
        for module, attribute, value in saved:
            setattr(module, attribute, value)


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Linear warm-up, then linear decay to zero (or constant)."""
    warmup = int(config.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Trains ``model`` on a batch plan with the loss terms of ``terms``.

    Args:
        model: The module to train (its trainable parameters are optimised).
        plan: Deterministic training batches.
        config: Optimisation, evaluation and checkpoint settings.
        terms: Loss-term contributors, summed in this order.
        forward: Maps (model, batch) to named outputs.
        evaluate: Returns metrics of the (unwrapped) model; ``config.metric`` drives early stopping.
        checkpoint_dir: Where checkpoints go; ``None`` disables checkpointing and resume.
    """

    def __init__(
        self,
        model: nn.Module,
        plan: BatchPlan,
        config: TrainConfig,
        terms: Sequence[LossTerm],
        forward: ForwardFn = classifier_forward,
        evaluate: Evaluate | None = None,
        checkpoint_dir: str | Path | None = None,
        description: str = "train",
    ) -> None:
        if not terms:
            raise ValueError("give at least one term (e.g. TaskLoss()) so the loop has a loss")
        names = [s.name for s in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"term names must be unique, got {names}")
        self.model = model
        self.plan = plan
        self.config = config
        self.terms = list(terms)
        self.forward = forward
        self.evaluate = evaluate
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.description = description
        # cpu=True where no GPU is present, so that torchrun on CPUs gives DDP over gloo.
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )

    # ------------------------------------------------------------------ set-up
    def _steps_per_epoch(self, batches: int) -> int:
        return math.ceil(batches / self.config.grad_accum)

    def _shard(self, items: list) -> list:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if world == 1:
            return items
        usable = len(items) - len(items) % world
        return items[rank:usable:world]

    def fit(self, resume: bool = True) -> TrainResult:
        """Train to the end (or early stop), resuming from the latest checkpoint when there is one."""
        cfg = self.config
        environment = deterministic(cfg.seed, cfg.threads)
        per_epoch = len(self._shard(self.plan.schedule(0)))
        if per_epoch == 0:
            raise ValueError("the batch plan is empty for this process; add data or use fewer processes")
        total = self._steps_per_epoch(per_epoch) * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        extra = [
            m.to(self.accelerator.device) for s in self.terms for m in getattr(s, "modules", list)()
        ]
        optimizer = build_optimizer(self.model, cfg, extra)
        scheduler = build_schedule(optimizer, cfg, total)
        model, optimizer = self.accelerator.prepare(self.model, optimizer)
        state, best_weights, resumed = LoopState(), None, None
        if resume and self.checkpoint_dir is not None:
            path = latest_checkpoint(self.checkpoint_dir)
            if path is not None:
                state, best_weights = self._restore(path, optimizer, scheduler)
                resumed = state.global_step
        last: dict[str, float] = state.history[-1] if state.history else {}
        with self._progress() as progress, dropout_override(self.model, cfg.dropout):
            task = progress.add_task(self.description, total=total, completed=state.global_step)
            while state.epoch < cfg.epochs and not self._done(state):
                items = self._shard(self.plan.schedule(state.epoch))
                for index in range(state.step_in_epoch, len(items)):
                    batch = self.plan.make(items[index]).to(self.accelerator.device)
                    model.train()
                    outputs = self.forward(model, batch)
                    terms = self._loss_terms(outputs, batch, model)
                    loss = sum(terms.values()) / cfg.grad_accum
                    self.accelerator.backward(loss)
                    state.step_in_epoch = index + 1
                    boundary = state.step_in_epoch % cfg.grad_accum == 0 or state.step_in_epoch == len(items)
                    if not boundary:
                        continue
                    self._sync_extra(extra)
                    if cfg.max_grad_norm is not None:
                        params = [p for m in (model, *extra) for p in m.parameters()]
                        self.accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.global_step += 1
                    progress.update(
                        task,
                        advance=1,
                        description=f"{self.description} loss {loss.item() * cfg.grad_accum:.3f}",
                    )
                    hooks = self._hooks("on_step_end", state)
                    if cfg.eval_every and state.global_step % cfg.eval_every == 0:
                        last, best_weights = self._evaluate(state, hooks, best_weights)
                    if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                        self._checkpoint(state, optimizer, scheduler, best_weights)
                    if self._done(state):
                        break
                if self._done(state) and state.step_in_epoch < len(items):
                    break
                state.epoch += 1
                state.step_in_epoch = 0
                hooks = self._hooks("on_epoch_end", state)
                if cfg.eval_every is None:
                    last, best_weights = self._evaluate(state, hooks, best_weights)
                if cfg.checkpoint_every is None:
                    self._checkpoint(state, optimizer, scheduler, best_weights)
        if cfg.restore_best and best_weights is not None:
            self.accelerator.unwrap_model(model).load_state_dict(best_weights)
        self.accelerator.wait_for_everyone()
        return TrainResult(state, last, resumed, environment)

    # ------------------------------------------------------------------ pieces
    def _sync_extra(self, extra: Sequence[nn.Module]) -> None:
        """Average the gradients of term-owned modules across ranks (DDP covers only the model)."""
        world = self.accelerator.num_processes
        if world == 1:
            return
        for module in extra:
            for param in module.parameters():
                if param.grad is not None:
                    torch.distributed.all_reduce(param.grad)
                    param.grad /= world

    def _done(self, state: LoopState) -> bool:
        return state.stopped_early or (
            self.config.max_steps is not None and state.global_step >= self.config.max_steps
        )

    def _loss_terms(self, outputs: Mapping[str, Tensor], batch, model: nn.Module) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for term in self.terms:
            for key, value in term.losses(outputs, batch, model).items():
                name = key if key == term.name else f"{term.name}.{key}"
                terms[name] = value
        if not terms:
            raise ValueError(
                f"no term returned a loss for task {batch.task!r}; check that batches carry the "
                "targets the terms need (e.g. labels for TaskLoss)"
            )
        return terms

    def _hooks(self, hook: str, state: LoopState) -> dict[str, float]:
        values: dict[str, float] = {}
        for term in self.terms:
            for key, value in hook_values(term, hook, state).items():
                values[f"{term.name}.{key}"] = float(value)
        return values

    def _evaluate(self, state: LoopState, hooks: dict[str, float], best_weights):
        cfg = self.config
        metrics: dict[str, float] = {"step": float(state.global_step), "epoch": float(state.epoch), **hooks}
        if self.evaluate is None:
            state.history.append(metrics)
            return metrics, best_weights
        unwrapped = self.accelerator.unwrap_model(self.model)
        metrics.update({k: float(v) for k, v in self.evaluate(unwrapped).items()})
        state.history.append(metrics)
        if cfg.metric not in metrics:
            raise KeyError(f"evaluation returned {sorted(metrics)} but config.metric is {cfg.metric!r}")
        value = metrics[cfg.metric]
        better = state.best is None or (value > state.best if cfg.mode == "max" else value < state.best)
        if better:
            state.best, state.best_step, state.bad_evals = value, state.global_step, 0
            if cfg.restore_best:
                best_weights = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
        else:
            state.bad_evals += 1
            if cfg.patience is not None and state.bad_evals >= cfg.patience:
                state.stopped_early = True
        return metrics, best_weights

    def _checkpoint(self, state: LoopState, optimizer, scheduler, best_weights) -> None:
        if self.checkpoint_dir is None:
            return
        if self.accelerator.is_main_process:
            unwrapped = self.accelerator.unwrap_model(self.model)
            data = CheckpointData(
                model=unwrapped.state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                loop=copy.deepcopy(state.as_dict()),
                rng=torch.get_rng_state(),
                strategies={
                    s.name: dict(s.state_dict()) for s in self.terms if hasattr(s, "state_dict")
                },
                best_model=best_weights,
            )
            save_checkpoint(self.checkpoint_dir, data, keep=self.config.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _restore(self, path: Path, optimizer, scheduler):
        data = load_checkpoint(path)
        self.accelerator.unwrap_model(self.model).load_state_dict(data.model)
        try:
            optimizer.load_state_dict(data.optimizer)
        except ValueError as exc:  # other parameter groups: trainable parameters or lr_multipliers changed
            raise CheckpointError(
                f"{path}: the optimiser state does not fit this run ({exc}); resume with the run's own "
                f"settings (frozen layers, lr_multipliers), or delete {path.parent} to start afresh"
            ) from exc
        scheduler.load_state_dict(data.scheduler)
        torch.set_rng_state(data.rng)
        for term in self.terms:
            if term.name in data.strategies and hasattr(term, "load_state_dict"):
                term.load_state_dict(data.strategies[term.name])
        return LoopState.from_dict(data.loop), data.best_model

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not (self.config.progress and self.accelerator.is_main_process),
            transient=False,
        )
