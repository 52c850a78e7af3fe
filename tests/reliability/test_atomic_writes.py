"""Atomic writes (issue 14): a save killed with SIGKILL while $TMPDIR is another file system
(/dev/shm) leaves the previous whole last.ckpt and no stray temporary in $TMPDIR; the temporary
beside the checkpoint is removed when the next run starts; written files follow the umask."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from functools import partial
from pathlib import Path

import pytest
import torch

from core.data import ensure_generated
from core.io import TMP_MARK, atomic_path, atomic_write_json, remove_stale_temporaries
from core.resolvers import PROJECT_ROOT

BUFFER_FLOATS = 48 * 1024 * 1024  # a 192 MB checkpoint: a save takes long enough to be killed in

SAVER = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    sys.path.insert(0, {str(PROJECT_ROOT)!r})
    import torch, pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset
    from tests.conftest import compose_config
    from core.training import build_trainer

    class Big(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.register_buffer("big", torch.arange({BUFFER_FLOATS}, dtype=torch.float32))
        def training_step(self, batch, i):
            return (self.w - 1).pow(2).sum()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)

    run = Path(sys.argv[1])
    cfg = compose_config("train", ["logger=none", "callbacks=model_checkpoint", "~callbacks.model_checkpoint",
                                   "trainer.max_epochs=100000", "+trainer.enable_progress_bar=false",
                                   "+trainer.enable_model_summary=false", *sys.argv[2:]], run)
    trainer = build_trainer(cfg)
    trainer.fit(Big())
    """
)


def test_save_killed_with_tmpdir_on_another_file_system(tmp_path):
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test folder")
    tmpdir = Path("/dev/shm") / f"reliability-{uuid.uuid4().hex[:8]}"
    tmpdir.mkdir()
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    try:
        for _attempt in range(4):
            proc = subprocess.Popen(
                [sys.executable, str(script), str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            killed_mid_save = False
            deadline = time.monotonic() + 240
            try:
                while time.monotonic() < deadline and proc.poll() is None:
                    temporaries = list(last.parent.glob(f".last.ckpt{TMP_MARK}*"))
                    if last.exists() and temporaries and temporaries[0].stat().st_size > 1 << 20:
                        proc.send_signal(signal.SIGKILL)  # a second save is under way
                        killed_mid_save = True
                        break
                    time.sleep(0.002)
            finally:
                if proc.poll() is None:
                    proc.kill()
                stderr = proc.communicate()[1].decode()
            assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
            if killed_mid_save and list(last.parent.glob(f".last.ckpt{TMP_MARK}*")):
                break
        else:
            pytest.fail("could not kill the process while it was writing a checkpoint")

        # the previous checkpoint is whole (not 0 bytes, not truncated) and loads
        assert last.stat().st_size > BUFFER_FLOATS * 4
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        assert checkpoint["state_dict"]["big"].numel() == BUFFER_FLOATS
        assert checkpoint["task_class"].endswith("Big")
        # no checkpoint-sized file was written to $TMPDIR (torch may make an empty cache folder there)
        assert [p for p in tmpdir.rglob("*") if p.is_file()] == []
        # the killed writer's temporary sits beside the checkpoint until the next start cleans it
        stale = list(last.parent.glob(f".last.ckpt{TMP_MARK}*"))
        assert len(stale) == 1
        assert remove_stale_temporaries(run, recursive=True) == stale
        assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    finally:
        shutil.rmtree(tmpdir)


def test_a_live_writers_temporary_is_kept(tmp_path):
    target = tmp_path / "out" / "result.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        assert remove_stale_temporaries(target.parent) == []  # its writer (this process) runs
        assert tmp.exists()
    assert target.read_text() == "{}" and not list(target.parent.glob(f".*{TMP_MARK}*"))


def test_written_files_and_generated_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o002)  # a group-shared project
    try:
        written = atomic_write_json(tmp_path / "new" / "metrics.json", {"a": 1})
        with atomic_path(tmp_path / "features" / "video.npy") as tmp:
            tmp.write_bytes(b"x")
        from datamodules.synthetic.image_folder import write_image_folder

        data = ensure_generated(
            tmp_path / "shared_data",
            partial(
                write_image_folder, num_classes=2, train_per_class=1, val_per_class=1, test_per_class=1, image_size=8
            ),
        )
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "features" / "video.npy").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o775
    assert stat.S_IMODE(data.stat().st_mode) == 0o775
