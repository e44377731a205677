"""Where a poll's CPU work runs: one worker thread, or worker processes.

Decoding and digesting an answer is CPU-bound Python. In a thread of the exporter's process
it competes with the event loop for the interpreter (the GIL): while a round of big gateways
is digested, reading their answers and answering scrapes waits. In worker processes it does
not, and it can use more than one core. The work is one pure function whose arguments and
result are immutable data, so it travels to a worker and back pickled (1-2 ms each way for a
gateway of 5,000 sessions).

Each worker process is a `ProcessPoolExecutor` of one process (a slot), and a slot takes one
poll at a time. So a worker that dies (killed, out of memory) costs exactly the poll that was
in it: with one pool of several processes, the death of one fails every poll in flight or
queued in the pool. Processes start from a forkserver (safe in a process with threads and a
running event loop, unlike `fork`) that has imported the digest's modules once, and only when
a poll needs them: a site whose polls never overlap uses one process, whatever the number
allowed. Every wait for a worker is bounded here, in the exporter (`WorkerProcesses`): the
bounds inside a worker cannot act on one that is stopped, and a stopped forkserver can neither
start a worker nor report that one died.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import logging
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
R = TypeVar("R")

# `auto` never starts more worker processes than this: each holds its own interpreter, the
# digest's modules and what it kept of its biggest digest (30 MB after 5,000 sessions, 70 MB
# after 100,000). Four would digest a round of 100 gateways of 5,000 sessions (6-7 s of CPU)
# in about 2 s, well within a poll interval.
AUTO_MAX_PROCESSES = 4
WORKER_NICENESS = 5  # see BORN_NICED
# A worker's start may take this long beyond the poll's bound (a forkserver started on a busy
# machine imports the digest's modules first) before the poll fails.
START_GRACE = 10.0
# A digest stuck in C code, where the soft bound (an exception) cannot reach it, is ended with
# its process once it has used this much CPU time beyond the bound.
HARD_BOUND_GRACE = 2.0
# The exporter's stop waits this long at most for digests under way (whose polls it has
# cancelled) to end, whatever their bounds: a gateway `timeout` of minutes must not hold the
# stop past systemd's stop timeout (90 s by default) and get the exporter killed.
STOP_WITHIN = 10.0


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


def _reduce_mapping_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, ...]:
    """Read-only mappings travel as the dict they show, and come back read-only. (pickle
    cannot look `MappingProxyType` up by name, so the reducer names this module's function.)"""
    return _mapping_proxy, (dict(proxy),)


copyreg.pickle(MappingProxyType, _reduce_mapping_proxy)


# --- how many --------------------------------------------------------------------------------

def usable_cpus(cgroups: Path = Path("/proc/self/cgroup"),
                root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity (`taskset`, cpusets), and the CPU
    quota of its cgroup where there is one (`docker run --cpus`, systemd's `CPUQuota=`),
    which affinity does not show."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    quota = _cgroup_quota(cgroups, root)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota(cgroups: Path, root: Path) -> float | None:
    """Cores' worth of CPU time the process's own cgroup may use; None when unlimited or not
    known. cgroup v2: `cpu.max` holds `<quota> <period>` (microseconds) or `max <period>`;
    v1: `cpu.cfs_quota_us` (-1 when unlimited) and `cpu.cfs_period_us`."""
    try:
        lines = cgroups.read_text().splitlines()
    except OSError:
        return None
    for hierarchy, controllers, path in (line.split(":", 2) for line in lines
                                         if line.count(":") >= 2):
        if hierarchy == "0":
            files = [root / path.lstrip("/") / "cpu.max"]
        elif "cpu" in controllers.split(","):
            where = root / controllers / path.lstrip("/")
            files = [where / "cpu.cfs_quota_us", where / "cpu.cfs_period_us"]
        else:
            continue
        try:
            quota, period = " ".join(file.read_text() for file in files).split()
            return int(quota) / int(period) if quota not in ("max", "-1") else None
        except (OSError, ValueError):
            continue  # not this hierarchy's controller (a hybrid host), or unreadable
    return None


# Worker processes start from a forkserver, which Windows does not have.
PROCESSES_SUPPORTED = "forkserver" in multiprocessing.get_all_start_methods()


def auto_processes(cpus: int) -> int:
    """`digest_processes: auto`. One core: the worker thread, since a process would add memory
    and pickling and no CPU. More: one core is left to the event loop (reading answers,
    serving scrapes), the rest digest, up to AUTO_MAX_PROCESSES."""
    if not PROCESSES_SUPPORTED or cpus <= 1:
        return 0
    return min(cpus - 1, AUTO_MAX_PROCESSES)


def describe(processes: int) -> str:
    """`digest_processes` in words, for `--check-config`."""
    where = f"{processes} worker process(es)" if processes else "0, the worker thread"
    return f"{where} (this process may use {usable_cpus()} core(s))"


# --- failures --------------------------------------------------------------------------------

class DigestTimeout(BaseException):
    """Raised inside a worker process when its work outlives its bound. A BaseException, so
    no `except Exception` in the work can take it for the work's own failure."""


_DIED = ("the worker process digesting the answer died (killed, out of memory, or stuck past "
         "its timeout); a new one takes the next poll")


class WorkerLost(Exception):
    """The worker process running the work died before answering (killed, out of memory, or
    stopped for overrunning its bound by HARD_BOUND_GRACE)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- inside a worker process -----------------------------------------------------------------

def _expired(signum: int, frame: FrameType | None) -> None:
    raise DigestTimeout


def _start_worker(niceness: int) -> None:
    """Ctrl+C in a terminal reaches the whole process group: the exporter stops its workers
    itself, so they ignore it (SIGTERM still ends one: a broken pool ends its remains with
    it). SIGALRM ends overrunning work (`_bounded`). `niceness` lowers the worker's priority
    where it was not born low (`BORN_NICED`). And a worker ends with the exporter, also when
    that is killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _expired)
    if niceness:
        os.nice(niceness)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_end_with, args=(parent.sentinel,), name="end with exporter",
                         daemon=True).start()


def _end_with(sentinel: int) -> None:
    """Without it, a worker whose exporter was killed (SIGKILL, the OOM killer) waits for ever
    on its queue of work, which it holds open itself, and keeps the forkserver alive."""
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _bounded(seconds: float, grace: float, start_by: float, work: Callable[..., R],
             *arguments: object) -> R:
    """`work(*arguments)`, raising DigestTimeout after `seconds` of wall time. Work stuck where
    Python cannot interrupt it (a loop in C) ends with its process after `seconds` plus
    `grace` of CPU time: SIGPROF's default action. Work that reaches its worker after
    `start_by` (`time.monotonic()`, which is the system's one clock on Linux, macOS and
    Windows, and so the same in every process) is not done at all: its poll has failed
    already, waiting for a worker to start, and its answer is stale."""
    if time.monotonic() > start_by:
        raise DigestTimeout
    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.setitimer(signal.ITIMER_PROF, seconds + grace)
    try:
        return work(*arguments)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)


# --- in the exporter -------------------------------------------------------------------------

class Workers(Protocol):
    async def run(self, bound: float, work: Callable[..., R], *arguments: object) -> R:
        """`work(*arguments)` off the event loop; `bound` seconds where it can be enforced."""
        ...

    async def close(self) -> None:
        """Let work under way finish, drop what waits, end the threads or processes."""
        ...


class WorkerThread:
    """One thread for every gateway's work: CPU-bound Python, so more threads would only
    contend for the GIL. A thread cannot be stopped, so `bound` is not enforced."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest")

    async def run(self, bound: float, work: Callable[..., R], *arguments: object) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work,
                                                                *arguments)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)


# Python's `hash` of a string is keyed per process, and the digest's state between polls holds
# session ids as such hashes (model.id_hashes). Every worker forks from one forkserver and so
# shares its key; should the forkserver die and be started again, this seed gives it the same
# key. Chosen once per exporter process, never 0 (which turns the keying off). It is put in the
# exporter's environment once, before the first worker starts, and left there: multiprocessing
# starts the forkserver again by itself, wherever it finds it dead, so the seed must be there
# whenever that happens (and the environment is not changed while other threads may read it).
_HASH_SEED = str(1 + secrets.randbelow(2**32 - 1))

# Workers run at a lower priority than the exporter (`nice`), so that when they compete for a
# core, reading answers and serving scrapes go first. Set in the worker, that priority would
# come too late: a worker's start (its fork, and the import of the exporter's main module when
# that is not preloaded) and the forkserver's own start (importing the digest's modules) would
# still compete at the exporter's priority, at the very moment a round of answers arrives. On
# Linux the priority is a thread's, inherited by the processes it starts: so the forkserver is
# started, and checked before each worker's start (and started again if it died), from one
# thread of its own that lowered its priority first (`_STARTER`); the forkserver and every
# worker forked from it are born low. Only that: the pools' own threads, which pickle answers
# and unpickle digests in the exporter, start from the exporter's threads and keep its
# priority. (multiprocessing also starts a dead forkserver again by itself, from the thread
# starting a worker: one that dies between the check and the start comes back with the seed,
# from the environment, but at the exporter's priority. Elsewhere than Linux `nice` is the
# whole process's, and each worker lowers its own once started.)
BORN_NICED = sys.platform == "linux"


def _starting_forkservers() -> None:
    """The starter thread's setup."""
    if BORN_NICED:
        os.nice(WORKER_NICENESS)


_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forkserver starter",
                              initializer=_starting_forkservers)


def _context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    """The forkserver context; the server imports `preload` when it starts. The server is the
    interpreter's one, shared by every pool (`_forkserver_running`)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


def _forkserver_running() -> None:
    """The forkserver started (or again, if it died) with the pinned seed, on the starter
    thread: quick when it runs, which `ensure_running` checks without waiting for it."""
    if os.environ.get("PYTHONHASHSEED") != _HASH_SEED:  # once: see _HASH_SEED
        os.environ["PYTHONHASHSEED"] = _HASH_SEED
    _STARTER.submit(multiprocessing.forkserver.ensure_running).result()


def _forkserver_started_deaf() -> None:
    """`_forkserver_running`, with SIGINT ignored meanwhile when called from the main thread
    (the only one that may change it). The forkserver inherits that through its exec, and
    Python leaves an ignored SIGINT ignored: so Ctrl+C in a terminal, which reaches the whole
    process group, never reaches it, nor the workers forked from it, not even during its
    imports (half a second in which it would print a KeyboardInterrupt traceback). The
    exporter ignores Ctrl+C only while the forkserver is spawned, a few milliseconds."""
    if threading.current_thread() is not threading.main_thread():
        _forkserver_running()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _forkserver_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _off_loop(name: str, call: Callable[[], R]) -> asyncio.Future[R]:
    """`call()` in a daemon thread of its own, as a future of the running loop. Not in the
    loop's default executor, nor in any ThreadPoolExecutor: the exporter's stop waits for
    their threads, so a call that hangs there (a worker's start on a stopped forkserver)
    would hang the stop too. A daemon thread that hangs is left to end with the process."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()

    def target() -> None:
        try:
            outcome: tuple[Callable[[Any], None], Any] = (future.set_result, call())
        except Exception as exc:
            outcome = (future.set_exception, exc)
        _on_loop(loop, _settle, future, *outcome)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _settle(future: asyncio.Future[Any], settle: Callable[[Any], None], value: Any) -> None:
    if not future.done():
        settle(value)


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., None],
             *arguments: Any) -> None:
    """`callback(*arguments)` on `loop`, from another thread; nothing once the loop is closed
    (the exporter stopped meanwhile: nobody waits any more)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *arguments)


# The pool a poll's work went to, and the work's future.
_HandedOver = tuple[ProcessPoolExecutor, Future[Any]]


class _Slot:
    """One worker process, as a pool of one; renewed when its process died or stopped
    answering."""

    def __init__(self, preload: Sequence[str]) -> None:
        self._preload = preload
        self.executor = self._start()
        self.lease: _Lease | None = None  # the poll holding it, if any

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=_context(self._preload),
                                   initializer=_start_worker,
                                   initargs=(0 if BORN_NICED else WORKER_NICENESS,))

    def submit(self, call: tuple[Any, ...]) -> _HandedOver:
        """Called off the loop: the process starts on first use and waits for the forkserver,
        which is checked first. Returns the pool the work went to, with the work."""
        _forkserver_running()
        executor = self.executor
        return executor, executor.submit(*call)

    def renew(self) -> ProcessPoolExecutor:
        """A new pool for this slot; returns the old one, to be shut down."""
        old, self.executor = self.executor, self._start()
        return old


class _Lease:
    """A poll's hold on a slot, given back exactly once (`WorkerProcesses._give_back`): by
    whichever comes first of the work's end and the poll giving up on its answer."""

    def __init__(self, slot: _Slot, start_by: float, answer_by: float) -> None:
        self.slot = slot
        self.start_by = start_by  # the work reaches a worker by then, or never (_bounded)
        self.answer_by = answer_by  # and, once there, answers by then, or its worker is lost
        self.executor: ProcessPoolExecutor | None = None  # the pool the work went to
        self.returned = False
        self.overdue: asyncio.TimerHandle | None = None  # gives it back at answer_by

    def until(self) -> float:
        """Past this moment the slot's pool owes this poll nothing."""
        return self.start_by if self.executor is None else self.answer_by


_DIED_WARNING = "a digest worker process died; starting another"
_MUTE_WARNING = "a digest worker process did not answer in time; starting another"


class WorkerProcesses:
    """Up to `count` worker processes, one poll in each at a time; more polls wait their turn.

    Every wait of a poll is bounded here, in the exporter, whatever becomes of the processes.
    A poll waits for a free slot for as long as the queue can move (`_free_slot`); then
    the work reaches its worker within the poll's `bound` plus `start_grace` (the worker's
    start, when it has none), or the poll fails and the work, should it reach one later, is
    dropped there (`_bounded`). Once there, the work ends within `bound` (or its
    process within `bound` plus `grace` of CPU time): so an answer not back by then never
    will be (the worker is stopped, or died while a stopped forkserver cannot report it),
    and the poll fails without waiting longer. A failed poll never costs its slot: a start
    that hangs holds it until the start ends (the forkserver runs again, or dies), so a
    stopped forkserver costs at most one hanging start, its thread and its open files per
    slot, and not one per poll; a pool that owes an answer it will not give is replaced at
    once and shut down without waiting.

    `preload` names the modules the work needs, imported once by the forkserver so that a new
    worker starts with them."""

    def __init__(self, count: int, preload: Sequence[str] = (),
                 grace: float = HARD_BOUND_GRACE, start_grace: float = START_GRACE,
                 stop_within: float = STOP_WITHIN) -> None:
        self._grace = grace
        self._start_grace = start_grace
        self._stop_within = stop_within
        self._slots = [_Slot(tuple(preload)) for _ in range(count)]
        # Started now rather than by the first poll's worker: it imports the digest's modules
        # (about half a second) while the first answers are fetched.
        _forkserver_started_deaf()
        # Idle slots, the most recently used on top: polls that never overlap reuse one
        # process, and the others are never started.
        self._idle: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for slot in reversed(self._slots):
            self._idle.put_nowait(slot)
        self._failing = False
        self._closed = False

    async def run(self, bound: float, work: Callable[..., R], *arguments: object) -> R:
        slot = await self._free_slot(bound)
        start_by = time.monotonic() + bound + self._start_grace
        lease = _Lease(slot, start_by, start_by + bound + self._grace)
        submitting = self._hand_over(lease, (_bounded, bound, self._grace, start_by, work,
                                             *arguments))
        lease.executor, future = await self._handed_over(submitting, bound, start_by)
        return await self._answer(lease, future, bound)

    def _hand_over(self, lease: _Lease, call: tuple[Any, ...]) -> asyncio.Future[_HandedOver]:
        """The work on its way to the slot's worker, off the loop (a worker's start waits for
        the forkserver). The slot is given back when its work is over, whatever becomes of
        the poll."""
        lease.slot.lease = lease
        try:
            submitting = _off_loop("digest hand-over", partial(self._submit, lease.slot, call))
        except RuntimeError as exc:  # no thread could start (a limit on tasks)
            self._give_back(lease)
            raise WorkerLost(f"the answer could not be handed to a worker process: {exc}"
                             ) from None
        submitting.add_done_callback(partial(self._submitted, lease))
        return submitting

    async def _free_slot(self, bound: float) -> _Slot:
        """A slot of its own for the poll, waited for as long as the queue can move: an
        exporter behind on its polls queues them (its `poll_lag` says so; failing them would
        say the gateways are down), however long the digests ahead take within their own
        bounds. Only when every slot is held by a start that hangs past its deadline (a
        stopped forkserver: no slot can come back until it runs again) does the poll fail,
        after its `bound` plus `start_grace`, rather than queue for ever. (`asyncio.timeout`,
        not `wait_for`, which on Python 3.11 can take a slot for a poll cancelled as it
        came.)"""
        patience = bound + self._start_grace
        while True:
            try:
                async with asyncio.timeout(patience):
                    return await self._idle.get()
            except TimeoutError:
                if not self._stuck():
                    continue
            raise WorkerLost(f"no worker process was free within {patience:g} s (each "
                             "hanging in its start: is the forkserver stopped?)")

    def _stuck(self) -> bool:
        """Whether no slot can come back before a start that hangs ends: every one is held
        by a start past its deadline. (Work handed over comes back by its `answer_by`.)"""
        now = time.monotonic()
        return all(slot.lease is not None and slot.lease.executor is None
                   and now > slot.lease.start_by for slot in self._slots)

    async def _handed_over(self, submitting: asyncio.Future[_HandedOver], bound: float,
                           start_by: float) -> _HandedOver:
        """Once a worker has the work. Handing it over starts the worker when there is
        none, which waits for the forkserver: one that hangs (stopped, a frozen cgroup) fails
        the poll at `start_by`, rather than hold it for ever with nothing failed."""
        if not await _settled(submitting, start_by):  # the work, should it reach a worker
            raise WorkerLost(f"no worker process started within "  # later, is dropped
                             f"{bound + self._start_grace:g} s (is the forkserver stopped?)")
        try:
            return submitting.result()
        except BrokenProcessPool:
            raise WorkerLost(_DIED) from None
        except Exception as exc:  # no worker could start: no open file left, say
            raise WorkerLost(f"the answer could not be handed to a worker process: "
                             f"{type(exc).__name__}: {exc}") from None

    async def _answer(self, lease: _Lease, future: Future[R], bound: float) -> R:
        """The work's answer. None by `answer_by` will never come (see the class): the poll
        fails, and its slot gets a new pool."""
        answer = asyncio.wrap_future(future)
        try:
            answered = await _settled(answer, lease.answer_by)
        finally:
            if not answer.done():  # given up, or the poll cancelled: work not yet in its
                answer.cancel()    # worker is dropped
        if not answered or answer.cancelled():  # cancelled: its pool given up on (overdue)
            self._give_back(lease, _MUTE_WARNING)
            waited = 2 * bound + self._start_grace + self._grace
            raise WorkerLost(f"no answer from the worker process within {waited:g} s "
                             "(stopped, or died while the forkserver is stopped); a new one "
                             "takes the next poll")
        try:
            return answer.result()
        except BrokenProcessPool:
            raise WorkerLost(_DIED) from None

    def _submit(self, slot: _Slot, call: tuple[Any, ...]) -> _HandedOver:
        try:
            return slot.submit(call)
        except (BrokenProcessPool, RuntimeError):  # died while idle, or shut down (below)
            self._renew(slot, _DIED_WARNING)
            return slot.submit(call)
        except Exception:
            # Its worker could not start (no open file left, the forkserver gone mid-start),
            # and the pool holds the work (and the answer in it) to run once one does: a new
            # pool, and that work gone with the old one.
            self._renew(slot, _DIED_WARNING)
            raise

    def _submitted(self, lease: _Lease, submitting: asyncio.Future[_HandedOver]) -> None:
        if submitting.cancelled() or submitting.exception() is not None:
            self._give_back(lease)
            return
        lease.executor, work = submitting.result()
        loop = asyncio.get_running_loop()
        work.add_done_callback(lambda work: _on_loop(loop, self._ended, lease, work))
        # Back by `answer_by` whatever the poll does meanwhile: one cancelled (a reload) no
        # longer waits for the answer, and a stopped worker never gives one.
        # Handed over late (its start hung past `start_by`), the work is dropped by its new
        # worker (`_bounded`) once that has started: it gets a start's time for that
        # (`start_grace`), not a deadline already past, which would replace a healthy worker.
        due = max(lease.answer_by, time.monotonic() + self._start_grace + self._grace)
        lease.overdue = loop.call_later(due - time.monotonic(), self._give_back, lease,
                                        _MUTE_WARNING)

    def _ended(self, lease: _Lease, work: Future[Any]) -> None:
        if not work.cancelled() and isinstance(work.exception(), BrokenProcessPool):
            self._give_back(lease, _DIED_WARNING)
            return
        if not work.cancelled() and self._failing and not lease.returned:
            log.info("digest worker processes work again")
            self._failing = False
        self._give_back(lease)

    def _give_back(self, lease: _Lease, renew_because: str | None = None) -> None:
        """The slot back to the idle ones, once per lease; with a new pool first, when its
        pool is the one the work went to and that has died or stopped answering (not when
        the slot was renewed since)."""
        if lease.returned:
            return
        lease.returned = True
        if lease.overdue is not None:
            lease.overdue.cancel()
        slot = lease.slot
        try:
            if renew_because is not None and slot.executor is lease.executor:
                self._renew(slot, renew_because)
        finally:  # whatever the renewal did, the slot is not lost to the polls
            slot.lease = None
            self._idle.put_nowait(slot)

    def _renew(self, slot: _Slot, because: str) -> None:
        """A new process for a slot whose process died or stopped answering (the old pool
        ends what is left of itself); logged once until a poll is digested again. Where no
        new pool can be made (no open file left, say), the slot keeps its broken one: the next
        poll it takes fails (WorkerLost) and tries again, so the slot is never lost to its
        polls."""
        if self._closed:
            return
        if not self._failing:
            log.warning(because, extra={"processes": len(self._slots)})
        self._failing = True
        try:
            old = slot.renew()
        except Exception as exc:  # no open file left (OSError), or any other refusal
            log.warning("cannot start a digest worker process; the next poll tries again",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            old = slot.executor  # kept, shut down: the next poll renews it
        # Shut down without waiting: a dead pool lets go of its pipes now (4 open files)
        # rather than when the exporter stops, which a worker dying at every poll would
        # otherwise turn into a leak; work it still holds is dropped, never run late (and
        # what already reached its stuck worker ends there, or with the exporter).
        _ending(old)

    async def close(self) -> None:
        """Let work under way finish, each within its own poll's bounds and `stop_within`;
        then end the worker processes, waiting at most `grace` more for that. A pool that
        has not ended by then is left behind, not waited for: its digest takes longer, its
        worker's start hangs on a stopped forkserver, or its processes ended but the stopped
        forkserver cannot report it. Its processes end with the exporter (`_end_with`, and
        `unblocked_exit` for the exporter's own end); a stopped forkserver ends once it runs
        again (its exporter gone) or is killed (the shipped unit's `KillMode=mixed` kills
        what is left once the exporter has ended)."""
        self._closed = True
        now = time.monotonic()
        owed = max([now, *(slot.lease.until() for slot in self._slots
                           if slot.lease is not None)])
        until = min(owed, now + self._stop_within) + self._grace
        ending = [_off_loop(_SHUTDOWN_THREAD, partial(
            slot.executor.shutdown, wait=True, cancel_futures=True)) for slot in self._slots]
        _, left = await asyncio.wait(ending, timeout=until - time.monotonic())
        if left:
            log.warning("digest worker processes did not end in time (a digest still under "
                        "way, or a stopped forkserver or worker); they end with the exporter",
                        extra={"left": len(left)})


_SHUTDOWN_THREAD = "digest pool shutdown"
# Seconds the exporter's exit waits for pools' shutdown threads to end before it ends at once.
EXIT_GRACE = 1.0


def _ending(pool: ProcessPoolExecutor) -> None:
    """Shut a pool given up on down, without waiting here: in a daemon thread that
    `unblocked_exit` looks for, since one whose worker is stopped never ends, and the
    interpreter's exit would wait for it (`concurrent.futures` joins every pool's thread
    there) for ever. Where no thread can start, only without waiting at all."""
    try:
        threading.Thread(target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                         name=_SHUTDOWN_THREAD, daemon=True).start()
    except RuntimeError:
        pool.shutdown(wait=False, cancel_futures=True)


def unblocked_exit(status: int) -> int:
    """`status`, for the exporter to exit with once it has stopped; or, while a pool that
    `close` left behind, or one given up on while the exporter ran (`_ending`), has still
    not ended, the process ended at once with it. The interpreter's own exit would wait for
    that pool for ever: `concurrent.futures` and `multiprocessing` wait there for the end of
    every worker process, which only their forkserver can report (a stopped one never does),
    and for every pool's answers (a stopped worker never gives one). Nothing is lost: the
    exporter has stopped, its log is flushed here, and its workers end with it (`_end_with`;
    a stopped one once it is continued or killed)."""
    if _shutdowns_left():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _shutdowns_left(within: float = EXIT_GRACE) -> bool:
    """Whether a pool's shutdown thread is still alive after `within` seconds in all: one
    that settled its future is ending (not ended yet), one whose pool hangs never will."""
    until = time.monotonic() + within
    for thread in threading.enumerate():
        if thread.name == _SHUTDOWN_THREAD:
            thread.join(max(0.0, until - time.monotonic()))
    return any(thread.name == _SHUTDOWN_THREAD for thread in threading.enumerate())


async def _settled(future: asyncio.Future[Any], until: float) -> bool:
    """Whether `future` is done by `until` (`time.monotonic()`); never cancels it. (Not
    `wait_for`: its TimeoutError would be taken for the work's own, which is an answer.)"""
    done, _ = await asyncio.wait([future], timeout=max(0.0, until - time.monotonic()))
    return bool(done)


def workers(processes: int, preload: Sequence[str] = ()) -> Workers:
    """`digest_processes`: 0 for the worker thread, else that many worker processes; the
    thread, with a warning, where processes cannot start (no writable temporary directory for
    the forkserver's socket, no /dev/shm for the pool's semaphores)."""
    if not processes:
        return WorkerThread()
    try:
        return WorkerProcesses(processes, preload)
    except OSError as exc:
        log.warning("digest worker processes cannot start; the worker thread digests instead",
                    extra={"error": str(exc)})
        return WorkerThread()
