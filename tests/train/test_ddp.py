import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fanbu.train import latest_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_loop_runs_under_torchrun_ddp(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = load_file(str(tmp_path / "result.safetensors"))
    assert int(result["world"]) == 2
    assert int(result["agree"]) == 1  # every rank ends with the same weights
    assert int(result["steps"]) == 6 * 7  # 14 batches per epoch, sharded over 2 ranks
    assert latest_checkpoint(tmp_path / "ckpt") is not None
