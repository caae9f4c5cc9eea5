"""Run ``tools/train.py`` with faults injected, for the reliability tests.

Usage: ``python train_with_faults.py CONFIG [train.py arguments]``.
The faults are chosen by environment variables, read here only (the
package has no test switches):

- ``FAULT_ITER_SLEEP=SECONDS``: sleep after every training iteration, so
  that a test can kill the process while it trains;
- ``FAULT_KILL_IN_SAVE=NAME``: SIGKILL the process halfway through writing
  the checkpoint file ``NAME`` (e.g. ``iter_16.pth``), after the first half
  has reached the disk.
"""
import os
import os.path as osp
import runpy
import signal
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from auglocal_det.engine.hooks import atomic_checkpoint_hook  # noqa: E402
from auglocal_det.engine.runner import ResumableEpochBasedTrainLoop  # noqa

sleep = float(os.environ.get('FAULT_ITER_SLEEP', '0'))
if sleep > 0:
    run_iter = ResumableEpochBasedTrainLoop.run_iter

    def slow_run_iter(self, idx, data_batch):
        run_iter(self, idx, data_batch)
        time.sleep(sleep)

    ResumableEpochBasedTrainLoop.run_iter = slow_run_iter

victim = os.environ.get('FAULT_KILL_IN_SAVE')
if victim:
    write_bytes = atomic_checkpoint_hook._write_bytes

    def dying_write(f, data):
        # the temporary file is opened from a descriptor: ask /proc its name
        name = osp.basename(os.readlink(f'/proc/self/fd/{f.fileno()}'))
        if not name.startswith(f'.{victim}.'):
            write_bytes(f, data)
            return
        f.write(data[:len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    atomic_checkpoint_hook._write_bytes = dying_write

sys.argv = [osp.join(ROOT, 'tools', 'train.py')] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
