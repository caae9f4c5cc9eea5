"""The process's resident set and glibc's mmap threshold."""
import os.path as osp
import platform
import subprocess
import sys
import textwrap

import pytest

from auglocal_det.process_memory import RSS_ENV, read_proc_status

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    not osp.isfile('/proc/self/clear_refs'), reason='needs Linux /proc')


def test_read_proc_status():
    status = read_proc_status()
    assert status['VmHWM'] >= status['VmRSS'] > 0
    assert read_proc_status(('VmRSS', )).keys() == {'VmRSS'}


def test_peak_resident_set_follows_a_large_tensor():
    """After a reset the peak resident set is the current one; touching a
    64 MiB tensor raises it by about that much (blocks above glibc's
    largest mmap threshold, 32 MiB, are mapped on their own, so freeing
    them gives the pages back). In a fresh process: the allocator of a
    long test session may hold free resident pages that the tensor reuses.
    """
    code = textwrap.dedent("""
        import torch
        from auglocal_det.process_memory import (
            peak_rss_bytes, reset_peak_rss, rss_bytes)
        MiB = 2**20
        reset_peak_rss()
        start = rss_bytes()
        assert peak_rss_bytes() <= start + MiB
        big = torch.ones(16 * MiB)  # 64 MiB, every page written
        assert peak_rss_bytes() >= start + 60 * MiB, (peak_rss_bytes(), start)
        del big
        assert rss_bytes() < start + 16 * MiB
        print('ok')
    """)
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='needs glibc')
def test_mmap_threshold_in_process_and_environment():
    """The environment of a measured process and the in-process setting
    name the same threshold."""
    assert RSS_ENV == {'MALLOC_MMAP_THRESHOLD_': '65536'}
    code = textwrap.dedent("""
        from auglocal_det.process_memory import (
            RSS_MMAP_THRESHOLD, set_mmap_threshold)
        assert set_mmap_threshold(RSS_MMAP_THRESHOLD)
        assert set_mmap_threshold(32 * 2**20)
        print('ok')
    """)
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr
