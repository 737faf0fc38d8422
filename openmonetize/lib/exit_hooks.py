"""Deliver queued events when a process ends in a way that skips `atexit`.

`atexit` (in `client.py`) covers a normal interpreter exit: the end of the script, an uncaught exception,
`sys.exit`, an uncaught KeyboardInterrupt. Two common endings skip it, and lost events are lost revenue:

- `multiprocessing` children (fork and forkserver start methods, `Pool` workers) end with `os._exit` after
  running their own `multiprocessing.util` finalizers. A client that starts delivering in such a child registers
  one there. billiard (Celery's fork of multiprocessing) runs the same finalizers for its `Process`, but its pool
  workers call `os._exit` from `Worker._do_exit` before any finalizer, so that method is wrapped.
- SIGTERM at its default action kills the process outright. A client constructed in the main thread while
  SIGTERM is at `SIG_DFL` installs a handler that drains every client of the process, each within its
  `shutdown_timeout`, then dies of SIGTERM as the default action would have. A handler the program installs,
  before or after, is left alone: it replaces ours and we never call it. A forked child gets `SIG_DFL` back and
  takes SIGTERM again when it starts a client; a watchdog makes sure the handler runs (see `_watch`).

multiprocessing and billiard are looked up in `sys.modules`, never imported: a process that has not imported them
is not their child. Nothing here starts at import.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

logger = logging.getLogger("openmonetize")

# multiprocessing runs finalizers of higher priority first. Ours goes early: it needs nothing the others tear
# down, and after the first pass multiprocessing joins the child's own children, which may take forever.
_EXIT_PRIORITY = 100
# After a client's flush, what its shutdown may take (closing the spool, reporting to `on_error`) before a
# process dying of SIGTERM stops waiting: a thread holding a lock the shutdown needs must not keep it alive.
_GRACE = 1.0
_UTIL_MODULES = ("multiprocessing.util", "billiard.util")
# While the main thread is inside this code it may hold a lock of a client (or of logging): the SIGTERM handler
# waits until it is out. The LLM wrappers' own frames (around a provider call) hold none.
_LIB = os.path.dirname(os.path.abspath(__file__)) + os.sep
_CRITICAL_CODE = (_LIB, os.path.dirname(os.path.abspath(logging.__file__)) + os.sep)
_NOT_CRITICAL = (_LIB + "llm" + os.sep,)
_NUDGE_INTERVAL = 0.01
# Signals a program may handle in Python: the client's background threads never take them
_PROCESS_SIGNALS = {getattr(signal, name) for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                    if hasattr(signal, name)}


class Drainable(Protocol):
    """What this module needs of a client (`OpenMonetize`)."""

    shutdown_timeout: float

    def flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> bool: ...


_clients: weakref.WeakSet[Drainable] = weakref.WeakSet()
# id(Finalize class) -> (pid, the finalizer registered in that process): billiard 4 shares multiprocessing's
_finalizers: dict[int, tuple[int, Any]] = {}
# the SIGTERM being handled: (pid, signal, first seen, draining); a forked child compares the pid
_sigterm: tuple[int, int, float, bool] | None = None
_wakeup: tuple[int, int, int] | None = None  # (pid, read fd, write fd): our signal wakeup pipe, see `_watch`
_nudger_pid = 0  # the process where a nudger thread runs
_inherited = False  # a forked child of a process that handled SIGTERM: take it again at the first start here
_fork_hook_registered = False


def client_created(client: Drainable) -> None:
    """At construction: remember the client, and take SIGTERM if nobody has (see the module docstring)."""
    _clients.add(client)
    _take_sigterm()


@contextlib.contextmanager
def starting_delivery() -> Iterator[None]:
    """Around starting a client's delivery threads, in the process where it starts.

    The threads are started with the process-level signals blocked (a thread inherits its creator's mask), so
    the kernel hands SIGTERM or Ctrl-C to a thread of the program: if one of ours took it while the main thread
    waits in a call that only its own EINTR ends (a Pool worker waiting for its next task), the Python handler
    would never run.

    Then this process's `os._exit` endings are hooked. At each start, not at construction: a multiprocessing
    child empties its finalizer registry (after the `os.register_at_fork` hooks) just before `run()`, and a
    forked client starts again on first use there.
    """
    with _signals_blocked():
        yield
    if _inherited:
        _take_sigterm()
    for name in _UTIL_MODULES:
        util = sys.modules.get(name)
        if util is not None:
            _register_finalizer(util)
    pool = sys.modules.get("billiard.pool")
    if pool is not None:
        _wrap_billiard_worker_exit(pool)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Threads started in this block never take the signals a program handles."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def shutdown_all() -> None:
    """Shut every client of this process down, each within its `shutdown_timeout` (idempotent)."""
    for client in _snapshot():
        try:
            client.shutdown(client.shutdown_timeout)
        except Exception:
            logger.exception("openmonetize: shutdown at process exit failed")
    _end_deferred_sigterm()


def _snapshot() -> list[Drainable]:
    for _ in range(100):
        try:
            return list(_clients)
        except RuntimeError:  # a client was added by another thread meanwhile
            continue
    return []


# -- os._exit endings ---------------------------------------------------------------------------------------


def _register_finalizer(util: Any) -> None:
    finalize = getattr(util, "Finalize", None)
    if finalize is None:
        return
    pid = os.getpid()
    registered = _finalizers.get(id(finalize))
    if registered is not None and registered[0] == pid and registered[1].still_active():
        return
    _finalizers[id(finalize)] = (pid, finalize(None, shutdown_all, exitpriority=_EXIT_PRIORITY))


def _wrap_billiard_worker_exit(pool: Any) -> None:
    """billiard's pool worker ends in `Worker._do_exit` (also after its own SIGTERM handler's `sys.exit`)."""
    worker: Any = getattr(pool, "Worker", None)
    original = getattr(worker, "_do_exit", None)
    if original is None or getattr(original, "_openmonetize_drains", False):
        return

    @functools.wraps(original)
    def _do_exit(self: Any, *args: Any, **kwargs: Any) -> Any:
        shutdown_all()
        return original(self, *args, **kwargs)

    _do_exit._openmonetize_drains = True  # type: ignore[attr-defined]
    worker._do_exit = _do_exit


# -- SIGTERM ------------------------------------------------------------------------------------------------


def _take_sigterm() -> None:
    """On the main thread, if SIGTERM is at its default action: handle it, and watch that the handler runs."""
    global _inherited
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers
    _inherited = False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter
        return
    _watch()
    global _fork_hook_registered
    if not _fork_hook_registered:
        _fork_hook_registered = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _watch() -> None:
    """Have the C-level handler write to a pipe that a thread reads (`signal.set_wakeup_fd`).

    A Python handler runs on the main thread between bytecodes, or when a blocking call fails with EINTR. A
    SIGTERM that lands just before the main thread blocks (glibc's `sem_wait` re-waiting, as a Pool worker
    does when `Pool.terminate()` takes the queue's lock) is noted but never run: without this watchdog the
    process would hang where the default action killed it. If the wakeup fd is taken (an event loop's), its
    owner wakes the main thread and nothing is watched.
    """
    global _wakeup
    try:
        reader, writer = os.pipe()
    except OSError:
        return
    try:
        os.set_blocking(writer, False)
        previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)
            raise ValueError("the wakeup fd is taken")
        _wakeup = (os.getpid(), reader, writer)
        with _signals_blocked():
            threading.Thread(target=_watchdog, args=(reader,), name="openmonetize-sigterm-watchdog",
                             daemon=True).start()
    except (ValueError, OSError, RuntimeError):
        if _wakeup is not None and _wakeup[2] == writer:
            signal.set_wakeup_fd(-1)
            _wakeup = None
        os.close(reader)
        os.close(writer)


def _watchdog(reader: int) -> None:
    while True:
        try:
            received = os.read(reader, 512)
        except OSError:
            return
        if not received:
            return
        if signal.SIGTERM in received and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            _note_sigterm(signal.SIGTERM)
            _nudge_until_draining()


def _after_fork_in_child() -> None:
    """A forked child gets SIGTERM's default action back, and takes SIGTERM again when it starts a client.

    The parent's watchdog does not exist here, and a child that never delivers (a Pool worker doing other
    work) has nothing to drain: it dies of SIGTERM at once, as it would have without openmonetize.
    """
    global _wakeup, _inherited
    if _wakeup is not None:
        _, reader, writer = _wakeup
        _wakeup = None
        with contextlib.suppress(ValueError, OSError):
            current = signal.set_wakeup_fd(-1)
            if current != writer:
                signal.set_wakeup_fd(current)
        os.close(reader)
        os.close(writer)
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _inherited = True


def _note_sigterm(signum: int) -> tuple[int, int, float, bool]:
    global _sigterm
    state = _sigterm
    if state is None or state[0] != os.getpid():
        state = _sigterm = (os.getpid(), signum, time.monotonic(), False)
    return state


def _nudge_until_draining() -> None:
    """Resend the signal to the main thread every `_NUDGE_INTERVAL` until its handler drains (EINTR wakes it)."""
    global _nudger_pid
    pid = os.getpid()
    if _nudger_pid == pid:
        return
    _nudger_pid = pid
    try:
        with _signals_blocked():
            threading.Thread(target=_nudge, args=(pid,), name="openmonetize-sigterm-nudge", daemon=True).start()
    except RuntimeError:  # the interpreter is finalizing
        _nudger_pid = 0


def _nudge(pid: int) -> None:
    global _nudger_pid
    main = threading.main_thread().ident
    try:
        while True:
            time.sleep(_NUDGE_INTERVAL)
            state = _sigterm
            if (main is None or state is None or state[0] != pid or state[3]
                    or signal.getsignal(state[1]) is not _on_sigterm):
                return
            signal.pthread_kill(main, state[1])
    finally:
        _nudger_pid = 0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Drain every client of this process, then die of the signal as the default action would have."""
    global _sigterm
    if signal.getsignal(signum) is not _on_sigterm:
        return  # called by a handler installed over ours: that handler decides how the process ends
    pid, signum, first_seen, draining = _note_sigterm(signum)
    if draining:
        return  # SIGTERM again while draining: the first one ends the process within its bound
    clients = _snapshot()
    bound = max((c.shutdown_timeout for c in clients), default=0.0)
    if _inside_the_client(frame) and time.monotonic() - first_seen < bound:
        _nudge_until_draining()
        return  # let the main thread leave the client first: it may hold a lock the drain needs
    _sigterm = (pid, signum, first_seen, True)
    try:
        logger.info("openmonetize: SIGTERM: delivering queued events before exiting")
        _drain_bounded(clients)
    finally:
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        signal.raise_signal(signum)
        os._exit(128 + signum)  # not reached: the default action has ended the process


def _inside_the_client(frame: FrameType | None) -> bool:
    """Was the main thread interrupted in the client's code (or logging's), where it may hold a lock?

    E.g. in `Event.set` under `flush`, as when `Pool.terminate()` SIGTERMs a worker that is already draining
    in its finalizer: a drain thread would wait for that lock until the bound.
    """
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_CRITICAL_CODE) and not filename.startswith(_NOT_CRITICAL):
            return True
        frame = frame.f_back
    return False


def _end_deferred_sigterm() -> None:
    """After a drain on the main thread: a SIGTERM deferred meanwhile ends the process now (the next nudge might
    come too late: a multiprocessing child calls `os._exit` right after its finalizers)."""
    deferred = _sigterm
    if (deferred is not None and deferred[0] == os.getpid() and not deferred[3]
            and threading.current_thread() is threading.main_thread()):
        _on_sigterm(deferred[1], None)


class _Drain(threading.Thread):
    """Flush, then shut down, one client. Off the main thread: the signal may have interrupted it holding a lock."""

    def __init__(self, client: Drainable) -> None:
        super().__init__(name="openmonetize-sigterm", daemon=True)
        self.client = client
        self.flushed = threading.Event()

    def run(self) -> None:
        timeout = self.client.shutdown_timeout
        deadline = time.monotonic() + timeout
        try:
            try:
                self.client.flush(timeout)  # delivers even if the lock `shutdown` takes is held by the main thread
            finally:
                self.flushed.set()
            # undelivered: reported as at shutdown, or left in the spool
            self.client.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("openmonetize: delivery on SIGTERM failed")

    def ended(self) -> bool:
        return not self.is_alive()


def _drain_bounded(clients: list[Drainable]) -> None:
    """Drain the clients in parallel: until they are flushed (at most their `shutdown_timeout`), plus `_GRACE`."""
    drains: list[_Drain] = []
    for client in clients:
        drain = _Drain(client)
        try:
            with _signals_blocked():
                drain.start()
        except RuntimeError:  # the interpreter is finalizing: atexit has run already
            continue
        drains.append(drain)
    if not drains:
        return
    hard = time.monotonic() + max(d.client.shutdown_timeout for d in drains) + _GRACE
    for d in drains:
        _wait(d.flushed.wait, d.flushed.is_set, hard)
    soft = min(hard, time.monotonic() + _GRACE)
    for d in drains:
        _wait(d.join, d.ended, soft)


def _wait(wait: Callable[[float], object], done: Callable[[], bool], deadline: float) -> None:
    while not done() and (left := deadline - time.monotonic()) > 0:
        # a nested signal handler may raise (Ctrl-C meanwhile): the process is dying anyway
        with contextlib.suppress(BaseException):
            wait(left)
