"""Run command lines side by side, each once the runs it needs are done.

A :class:`Job` is one command line with its log file, the jobs it waits
for and a relative cost. :func:`run_jobs` starts each job as soon as a
slot is free and its inputs exist. :class:`Progress` reports every start
and end with the elapsed time and an ETA.
"""
import functools
import os
import os.path as osp
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

__all__ = [
    'Job', 'JobFailed', 'Progress', 'auto_threads', 'clock', 'run_jobs'
]

_print = functools.partial(print, flush=True)


class JobFailed(RuntimeError):
    """A job exited with an error."""


def clock(seconds: float) -> str:
    """``seconds`` as ``m:ss`` (or ``h:mm:ss``)."""
    seconds = int(round(max(0., seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f'{hours}:{minutes:02d}:{secs:02d}'
    return f'{minutes}:{secs:02d}'


def auto_threads() -> int:
    """Intra-op threads for training: the cores the other jobs leave idle.

    On a machine whose cores are busy, PyTorch's OpenMP threads spin while
    they wait for each other. One thread is then faster than several.

    Returns:
        int: The cores minus the load average, at least 1.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return max(1, min(cores, int(round(cores - load))))


@dataclass
class Job:
    """One command line to run.

    Attributes:
        name (str): What the progress lines call it.
        command (Callable): Returns the command line. It is called when the
            job starts, so that it can read what its dependencies wrote.
        log_path (str): The run's output goes there.
        after (list[str]): Names of the jobs that must finish first.
        cost (float): Relative cost, for the ETA.
        env (dict): Extra environment variables.
    """
    name: str
    command: Callable[[], List[str]]
    log_path: str
    after: List[str] = field(default_factory=list)
    cost: float = 1.
    env: Dict[str, str] = field(default_factory=dict)


class Progress:
    """Progress lines of a run of jobs: stage k of n, elapsed time, ETA.

    The ETA prices every job left at its ``cost`` times the speed of the
    jobs already finished (seconds per unit of cost). That work is shared
    among ``slots`` parallel runs, but takes no less than its longest job.

    Args:
        jobs (Sequence[Job]): The jobs, in the order of their numbers.
        slots (int): How many run at once.
        start (float, optional): Start of the clock (``time.time()``).
            Defaults to None: now.
        log (Callable, optional): Prints a line. Defaults to None:
            ``print``.
    """

    def __init__(self,
                 jobs: Sequence[Job],
                 slots: int,
                 start: Optional[float] = None,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.costs = {job.name: job.cost for job in jobs}
        self.index = {job.name: i + 1 for i, job in enumerate(jobs)}
        self.total = len(jobs)
        self.slots = max(1, slots)
        self.start = time.time() if start is None else start
        self.log = log or _print
        self.done: Dict[str, float] = {}
        self.running: Dict[str, float] = {}

    def eta(self) -> Optional[float]:
        """Seconds left, or None before any job has finished."""
        if not self.done:
            return None
        rate = sum(self.done.values()) / max(
            1e-9, sum(self.costs[n] for n in self.done))
        now = time.time()
        left = [
            cost * rate for name, cost in self.costs.items()
            if name not in self.done and name not in self.running
        ] + [
            max(0., self.costs[name] * rate - (now - begin))
            for name, begin in self.running.items()
        ]
        return max(sum(left) / self.slots, max(left, default=0.))

    def line(self, name: str, what: str) -> str:
        """The progress line of job ``name``, which ``what`` happened to."""
        eta = self.eta()
        eta_str = clock(eta) if eta is not None else 'after the first stage'
        return (f'stage {self.index[name]} of {self.total} {what}: {name} | '
                f'elapsed {clock(time.time() - self.start)} | ETA {eta_str}')

    def started(self, name: str) -> None:
        """Report that job ``name`` started."""
        self.running[name] = time.time()
        self.log(self.line(name, 'started'))

    def finished(self, name: str) -> float:
        """Report that job ``name`` ended; return its seconds."""
        seconds = time.time() - self.running.pop(name)
        self.done[name] = seconds
        self.log(self.line(name, f'done in {clock(seconds)}'))
        return seconds


def _shell(cmd: Sequence[str], cwd: Optional[str]) -> str:
    """A command line for the log, with paths relative to ``cwd``."""
    return ' '.join(
        osp.relpath(c, cwd) if cwd and c.startswith(cwd) else c
        for c in cmd)


def run_jobs(jobs: Sequence,
             parallel: int = 1,
             threads: Optional[int] = None,
             quiet: bool = True,
             progress: Optional[Progress] = None,
             cwd: Optional[str] = None,
             log: Optional[Callable[[str], None]] = None) -> List[float]:
    """Run commands, ``parallel`` at a time, each logging into its file.

    A job starts as soon as a slot is free and the jobs it runs ``after``
    have finished, in the order of ``jobs`` otherwise.

    Args:
        jobs (Sequence): :class:`Job` objects, or ``(name, command,
            log_path)`` triples (independent jobs).
        parallel (int): How many run at once. Defaults to 1.
        threads (int, optional): ``OMP_NUM_THREADS`` of every job. Defaults
            to None: the environment's.
        quiet (bool): Only the log files get the output. Otherwise a
            single job at a time (``parallel=1``) also prints it. Defaults
            to True.
        progress (Progress, optional): Reports starts and ends. Defaults
            to None: one made for ``jobs``.
        cwd (str, optional): Working directory of the jobs. Defaults to
            None: this one.
        log (Callable, optional): Prints a line. Defaults to None:
            ``print``.

    Returns:
        list[float]: Seconds each job took, in the order of ``jobs``.

    Raises:
        JobFailed: If a job fails, once the running ones have finished.
            The jobs that depend on it are not started. The message names
            its log.
    """
    log = log or _print
    jobs = [
        job if isinstance(job, Job) else Job(
            job[0], (lambda cmd=job[1]: cmd), job[2]) for job in jobs
    ]
    env = dict(os.environ)
    if threads is not None:
        env['OMP_NUM_THREADS'] = str(threads)
    parallel = max(1, parallel)
    tee = not quiet and parallel == 1
    progress = progress or Progress(jobs, parallel, log=log)
    pending = list(range(len(jobs)))
    running: Dict[int, tuple] = {}
    finished, failed_names = set(), set()
    seconds: List[float] = [0.] * len(jobs)
    failed: List[str] = []
    while pending or running:
        for index in list(pending):
            if len(running) >= parallel:
                break
            job = jobs[index]
            if any(name in failed_names for name in job.after):
                pending.remove(index)
                failed_names.add(job.name)
                continue
            if not all(name in finished for name in job.after):
                continue
            pending.remove(index)
            cmd = job.command()
            progress.started(job.name)
            log(f'{job.name}: python {_shell(cmd[1:], cwd)}')
            log(f'{job.name}: {env.get("OMP_NUM_THREADS", "default")} '
                f'intra-op thread(s); log: {job.log_path}')
            log_file = open(job.log_path, 'w')
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=dict(env, **job.env),
                stdout=subprocess.PIPE if tee else log_file,
                stderr=subprocess.STDOUT,
                text=True)
            running[index] = (proc, log_file)
            if tee:
                for line in proc.stdout:
                    log_file.write(line)
                    sys.stdout.write(line)
                    sys.stdout.flush()
        for index in list(running):
            proc, log_file = running[index]
            if proc.poll() is None:
                continue
            log_file.close()
            del running[index]
            job = jobs[index]
            seconds[index] = progress.finished(job.name)
            if proc.returncode == 0:
                finished.add(job.name)
            else:
                failed_names.add(job.name)
                failed.append(f'{job.name} (exit code {proc.returncode} '
                              f'after {seconds[index]:.0f} s; see '
                              f'{job.log_path})')
        if running:
            time.sleep(0.5)
        elif pending and not failed and not any(
                all(n in finished for n in jobs[i].after) for i in pending):
            raise RuntimeError('jobs wait for jobs that never run: ' +
                               ', '.join(jobs[i].name for i in pending))
    if failed:
        raise JobFailed('failed: ' + '; '.join(failed))
    return seconds
