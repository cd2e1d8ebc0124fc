"""Run by torchrun in test_ddp.py: trains the tiny classifier under DDP and checks the ranks agree."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fanbu.train import TaskData, TaskLoss, TextPlan, TrainConfig, Trainer
from tests.train.conftest import TinyClassifier, tokenize, toy_task


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = TinyClassifier({"a": 2, "b": 3})
    tasks = [TaskData("a", *toy_task(64, 1, ("alpha", "beta"))), TaskData("b", *toy_task(48, 2, ("gamma", "delta", "eps")))]
    plan = TextPlan(tasks, tokenize, batch_size=8, seed=0)
    cfg = TrainConfig(epochs=6, lr=0.05, warmup_ratio=0.0, progress=False)
    trainer = Trainer(model, plan, cfg, [TaskLoss()], checkpoint_dir=out / "ckpt")
    result = trainer.fit()
    world = trainer.accelerator.num_processes
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if trainer.accelerator.is_main_process:
        agree = all(torch.equal(gathered[0], g) for g in gathered)
        save_file({"params": flat, "agree": torch.tensor(int(agree)), "world": torch.tensor(world),
                   "steps": torch.tensor(result.state.global_step)}, str(out / "result.safetensors"))
    dist.barrier()
    dist.destroy_process_group()  # shut gloo down before exit: a live process group can abort at teardown


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # Leave without running C++ static destructors: gloo's background threads can still be
    # winding down after destroy_process_group, and a destructor racing them calls
    # std::terminate ("terminate called without an active exception", SIGABRT) now and then.
    # Everything the test reads was saved and the ranks met at the barrier above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
