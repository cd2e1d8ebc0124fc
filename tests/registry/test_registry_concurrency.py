"""Several processes writing one SQLite registry at once."""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.synchronize import Barrier
from pathlib import Path

from fanbu.registry import Registry


def _writer(home: str, worker: int, count: int, start: Barrier) -> None:
    with Registry.open(home) as registry:
        base = registry.latest("shared-base")
        start.wait(timeout=60)  # both processes begin writing at the same moment
        for i in range(count):
            registry.register_model(
                name=f"worker{worker}",
                path=f"/m/{worker}/{i}",
                kind="module",
                parents=[base.id],
                relation="finetune",
                metadata={"i": i},
            )
            registry.register_model(name="shared", path=f"/s/{worker}/{i}", kind="module")
            registry.register_dataset(name="common", fingerprint="c" * 64, n_rows=1)


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Registry.open(home) as registry:
        base = registry.register_model(name="shared-base", path="/b", kind="module")
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(home), w, 20, start)) for w in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Registry.open(home) as registry:
        assert len(registry.list_models(name="worker0")) == 20
        assert len(registry.list_models(name="worker1")) == 20
        assert len(registry.children(base.id)) == 40
        # auto-numbered versions of one name taken by both writers: 40 distinct, no gaps
        assert sorted(m.version for m in registry.list_models(name="shared")) == list(range(40))
        assert len(registry.list_datasets()) == 1
