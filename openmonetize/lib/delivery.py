"""The background side of `OpenMonetize`.

`Dispatcher` makes every delivery decision: which batch goes next, and what an answer means for the
events in it. It is single-threaded and takes its clock and its transport as arguments, so its tests need
no sockets and no sleeps. `DeliveryWorker` runs it: one dispatcher thread that owns the buffer, and a few
sender threads that each make one HTTP attempt at a time through the generated `EventsApi`.

Data flows one way: tracked events -> buffer -> job -> attempt -> answer -> the job is resolved. A job
ends in exactly one of: acknowledged (accepted or duplicate), refused for good (kept in the spool's
dead letters and reported), unconfirmed after `max_unconfirmed` answers that did not account for it
(kept and reported), or, at shutdown, left in the spool / reported undelivered. Everything else sends the
same events, with the same ids, again later.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from openmonetize.exceptions import ApiException, InvalidResponseError
from openmonetize.lib.failures import DeliveryFailure, FailureKind
from openmonetize.lib.memory_buffer import Batch, MemoryBuffer
from openmonetize.lib.retry import RetryPolicy, verdict
from openmonetize.models.ingest_response import IngestResponse

logger = logging.getLogger("openmonetize")

# One HTTP attempt: the request body and how many events it holds -> the checked answer, or raises an
# `ApiException` (`ApiConnectionError`/`ApiTimeoutError` without an answer, `InvalidResponseError` for a
# 2xx that breaks the contract).
Send = Callable[[bytes, int], IngestResponse]

_ENTRY_OVERHEAD = 128  # bytes a queued event costs beyond its JSON: the bytes object, the tuple, its seq


@dataclass
class DeliverySettings:
    batch_size: int = 1000
    max_batch_bytes: int = 5 * 1024 * 1024
    flush_interval: float = 0.5
    max_concurrent_requests: int = 2
    request_timeout: float = 10.0
    commit_interval: float = 0.05
    gzip: bool = False
    adopt_interval: float = 30.0


@dataclass
class Stats:
    sent: int = 0
    duplicates: int = 0
    retried: int = 0
    rejected: int = 0
    unconfirmed: int = 0
    dropped: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


_MAX_FAULTS = 3  # answers of one batch whose handling may raise before the batch is given up


@dataclass(eq=False)
class Job:
    """A batch on its way: the same events, with the same ids, until it is resolved."""

    batch: Batch
    not_before: float = 0.0
    failures: int = 0  # transient failures of this job in a row
    unconfirmed: int = 0  # 2xx answers that did not account for its events
    forbidden_at: int | None = None  # the answer number of the first 403 for the batch it was split from
    faults: int = 0  # answers whose handling raised (a bug): resent a few times, then reported


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt gave: the checked answer, or the exception it raised."""

    job: Job
    response: IngestResponse | None = None
    error: BaseException | None = None


class Dispatcher:
    """Every delivery decision, on one thread, against an injected clock and transport."""

    def __init__(
        self,
        buffer: MemoryBuffer,
        send: Send,
        settings: DeliverySettings,
        stats: Stats,
        report: Callable[[DeliveryFailure], None],
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buffer = buffer
        self._send = send
        self.settings = settings
        self.stats = stats
        self.report = report
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.waiting: list[Job] = []  # retries and split halves, sent before new batches
        self.in_flight: set[Job] = set()
        self.failed_seqs: list[int] = []  # events resolved without delivery, for flush()'s answer
        self.paused_until = 0.0
        self.pauses = 0  # refusals of the key or account in a row (0: not paused)
        self.failures_in_a_row = 0  # transient failures across jobs since the last 2xx
        self.answers = 0  # answers resolved so far: orders events without trusting the clock's resolution
        self.last_accepted = -1  # the answer number of the latest 2xx
        self.batch_limit = settings.batch_size
        self.entry_bytes = 512.0  # running estimate of what a queued event costs in memory

    # -- what goes next ---------------------------------------------------------------------------------

    def next_jobs(self, due: bool) -> list[Job]:
        """Jobs to hand to senders now. `due`: send a partial batch (the interval passed, or a flush)."""
        now = self.clock()
        if now < self.paused_until:
            return []
        probing = self._probing()
        limit = self._concurrency()
        jobs: list[Job] = []
        while len(self.in_flight) < limit:
            job = self._next_waiting(now)
            if job is None:
                if probing and self.waiting:
                    break  # probe with what failed before taking anything new
                if self.buffer.ready() < self.batch_limit and not due:
                    break
                batch = self.buffer.take(self.batch_limit, self.settings.max_batch_bytes)
                if batch is None:
                    break
                self._measure(batch)
                job = Job(batch)
            self.in_flight.add(job)
            jobs.append(job)
        return jobs

    def _probing(self) -> bool:
        """The service looks down or refuses the key: one batch at a time, nothing new until it answers.
        Three failures in a row, not one: with a few percent of random faults the service is up, and
        holding every batch back behind one failed request would fill the queue."""
        return self.pauses > 0 or self.failures_in_a_row >= 3

    def _concurrency(self) -> int:
        return 1 if self._probing() else self.settings.max_concurrent_requests

    def _next_waiting(self, now: float) -> Job | None:
        ready = [job for job in self.waiting if job.not_before <= now]
        if not ready:
            return None
        job = min(ready, key=lambda j: (j.not_before, j.batch.min_seq))
        self.waiting.remove(job)
        return job

    def _measure(self, batch: Batch) -> None:
        size = sum(map(len, batch.bodies)) / len(batch) + _ENTRY_OVERHEAD
        self.entry_bytes = 0.8 * self.entry_bytes + 0.2 * size

    def next_wakeup(self) -> float:
        """Seconds until a pause ends or a waiting job is due; inf when only an answer can change anything
        (nothing waits, or as many requests as allowed are in flight: a sender's answer wakes the loop)."""
        now = self.clock()
        if self.paused_until > now:
            return self.paused_until - now
        if not self.waiting or len(self.in_flight) >= self._concurrency():
            return math.inf
        return max(0.0, min(job.not_before for job in self.waiting) - now)

    def low_seq(self) -> float:
        """The lowest seq not yet resolved (inf when everything is)."""
        return min([self.buffer.low_seq(), *(job.batch.min_seq for job in (*self.waiting, *self.in_flight))])

    def unresolved(self) -> list[Batch]:
        return [job.batch for job in (*self.in_flight, *self.waiting)]

    # -- one attempt (sender threads) -----------------------------------------------------------------------

    def attempt(self, job: Job) -> Attempt:
        self.stats.add(requests=1)
        try:
            return Attempt(job, response=self._send(job.batch.request_body(), len(job.batch)))
        except Exception as exc:
            return Attempt(job, error=exc)

    # -- what an answer means ---------------------------------------------------------------------------------

    def resolve(self, attempt: Attempt) -> None:
        job = attempt.job
        self.in_flight.discard(job)
        self.answers += 1
        now = self.clock()
        try:
            self._resolve(attempt, now)
        except Exception as exc:
            # a bug (ours, or a retry policy's) must not lose the batch, which is no longer in flight: it would
            # fall out of flush()'s count and never be sent or reported. Send it again later (deduplicated by
            # id); a bug that raises at every answer, a few times, then the batch is given up (reported, kept in
            # the spool's dead letters), not resent for as long as the process runs.
            job.faults += 1
            if job.faults < _MAX_FAULTS:
                logger.exception("openmonetize: handling the answer for %d events failed; they will be sent again",
                                 len(job.batch))
                if job not in self.waiting:
                    job.not_before = now + 1.0
                    self.waiting.append(job)
                return
            logger.exception("openmonetize: handling the answer for %d events failed %d times; giving them up",
                             len(job.batch), job.faults)
            if job in self.waiting:
                self.waiting.remove(job)
            self._give_up(job.batch, "undelivered", f"the SDK failed handling {job.faults} answers for them "
                          f"(a bug; the last: {type(exc).__name__}: {exc})", None)

    def _resolve(self, attempt: Attempt, now: float) -> None:
        job = attempt.job
        if attempt.response is not None:
            self._accepted(job, attempt.response, now)
            return
        error = attempt.error
        if isinstance(error, InvalidResponseError):
            self._unconfirmed(job, error, now)
        elif isinstance(error, ApiException):
            self._refused(job, error, now)
        else:  # a bug below us: never lose the batch to it
            logger.error("openmonetize: unexpected error sending %d events; will retry", len(job.batch),
                         exc_info=error)
            self._retry_later(job, None, now)

    def _accepted(self, job: Job, response: IngestResponse, now: float) -> None:
        if self.pauses:
            logger.warning("openmonetize: the service accepts events again; delivery resumed")
        self.pauses = 0
        self.failures_in_a_row = 0
        self.last_accepted = self.answers
        batch = job.batch
        errors = response.errors or []
        self.stats.add(sent=response.accepted, duplicates=response.duplicates)
        if not errors:
            self.buffer.ack(batch)
            return
        refused = sorted(error.index for error in errors)
        refused_set = set(refused)
        self.buffer.ack(batch.subset(i for i in range(len(batch)) if i not in refused_set))
        reason = "; ".join(f"{error.code}: {error.message}" for error in errors[:5])
        self._give_up(batch.subset(refused), "rejected", reason, 202, [error.to_dict() for error in errors])

    def _unconfirmed(self, job: Job, error: InvalidResponseError, now: float) -> None:
        job.unconfirmed += 1
        if job.unconfirmed >= self.policy.max_unconfirmed:
            self._give_up(job.batch, "unconfirmed",
                          f"{job.unconfirmed} answers did not account for them (last: {error.reason})", error.status,
                          request_id=error.request_id)
            return
        logger.warning("openmonetize: an answer did not account for %d events (%s); resending them",
                       len(job.batch), error.reason)
        self.stats.add(retried=1)
        job.not_before = now + self.policy.backoff(job.unconfirmed)
        self.waiting.append(job)

    def _refused(self, job: Job, error: ApiException, now: float) -> None:
        status = error.status or 0
        kind = verdict(status)
        if kind == "retry":
            self._retry_later(job, error, now)
        elif kind == "isolate":
            self._isolate(job, error, status)
        elif kind == "forbidden":
            # A 403 for some events (a customer this key may not bill) or for all (the key): split while
            # other events still get in; an event refused on its own after others were accepted is refused.
            if job.forbidden_at is None:
                job.forbidden_at = self.answers
            if len(job.batch) > 1 and not self.pauses:
                self._isolate(job, error, status)
            elif len(job.batch) == 1 and self.last_accepted > job.forbidden_at:
                self._give_up(job.batch, "rejected", _reason(error), status, _details(error), error.request_id)
            else:
                self._pause(job, error, status, now, "the key was refused for every event tried (403)")
        else:
            self._pause(job, error, status, now, _pause_reason(status))

    def _retry_later(self, job: Job, error: ApiException | None, now: float) -> None:
        job.failures += 1
        self.failures_in_a_row += 1
        self.stats.add(retried=1)
        delay = self.policy.backoff(job.failures if not self._probing() else max(job.failures,
                                                                                   self.failures_in_a_row))
        retry_after = self.policy.retry_after(error.headers if error is not None else None)
        if retry_after is not None:
            delay = max(delay, retry_after)
            self.paused_until = max(self.paused_until, now + retry_after)  # a rate limit is the key's, not the batch's
        job.not_before = now + delay
        self.waiting.append(job)
        logger.warning("openmonetize: %s for %d events; retrying in %.1fs", _describe(error), len(job.batch), delay)

    def _isolate(self, job: Job, error: ApiException, status: int) -> None:
        if len(job.batch) == 1:
            self._give_up(job.batch, "rejected", _reason(error), status, _details(error), error.request_id)
            return
        if status == 413:
            # the size itself was the problem: smaller batches from now on (the service's limit stays)
            self.batch_limit = min(self.batch_limit, max(1, len(job.batch) // 2))
        for half in job.batch.halves():
            self.waiting.append(Job(half, unconfirmed=job.unconfirmed, forbidden_at=job.forbidden_at))

    def _pause(self, job: Job, error: ApiException, status: int, now: float, why: str) -> None:
        self.pauses += 1
        pause = self.policy.pause(self.pauses)
        self.paused_until = now + pause
        job.not_before = self.paused_until
        self.waiting.append(job)
        reason = f"{why}; events are kept, delivery resumes by itself (next try in {pause:.0f}s): {_reason(error)}"
        if self.pauses == 1:
            self.report(DeliveryFailure("paused", [], reason, status=status, request_id=error.request_id))
        else:
            logger.error("openmonetize: delivery still paused (HTTP %s, %d refusals in a row); next try in %.0fs",
                         status, self.pauses, pause)

    def _give_up(self, batch: Batch, kind: FailureKind, reason: str, status: int | None,
                 details: list[dict[str, object]] | None = None, request_id: str | None = None) -> None:
        """Resolve events that will not be delivered: kept in the spool's dead letters if there is one,
        and reported either way."""
        failure = DeliveryFailure(kind, batch.events(), reason, status=status, details=list(details or []),
                                  request_id=request_id)
        if self.buffer.dead_letter(batch, failure):  # resolves them either way; True when the spool kept them
            failure = dataclasses.replace(failure, reason=f"{reason} (kept in the spool's dead letters)")
        self.stats.add(**{"rejected" if kind == "rejected" else "unconfirmed": len(batch)})
        self.failed_seqs.extend(batch.seqs)
        self.report(failure)


def _describe(error: ApiException | None) -> str:
    if error is None:
        return "an unexpected error"
    if error.status:
        return f"ingest answered {error.status}"
    return str(error.reason or type(error).__name__)


def _reason(error: ApiException) -> str:
    data = getattr(error, "data", None)
    message = getattr(data, "message", None) or error.reason or "refused"
    return f"{error.status} {message}"


def _details(error: ApiException) -> list[dict[str, object]]:
    details = getattr(getattr(error, "data", None), "details", None) or []
    return [detail.to_dict() for detail in details]


def _pause_reason(status: int) -> str:
    if status == 401:
        return "the service refused the API key (401)"
    if status == 402:
        return "the account's plan or quota is exhausted (402)"
    return f"the service answered {status}, which says nothing about the events (wrong base URL?)"


class FlushLedger:
    """What flush() answers from: the seqs of events resolved without delivery (refused, dead-lettered,
    unconfirmed, dropped), kept only as far as a flush may still ask about them. Used under the worker's
    `resolved` lock.

    A flush in progress asks about the seqs in [floor, its ticket); one not begun yet will get a ticket above
    every seq so far, so the seqs at or above the highest ticket in progress are asked about all together, by
    every later flush or by none. Once the list grows they are collapsed into their lowest, which answers
    the same: a process that never flushes keeps one seq, not one per failure."""

    def __init__(self, compact_at: int = 1024) -> None:
        self.seqs: list[int] = []
        self.floor = 0  # failures of events before this seq were answered by an earlier flush()
        self.tickets: list[int] = []  # the tickets of the flushes in progress
        self._min_compact = self._compact_at = compact_at

    def add(self, seqs: Iterable[int]) -> None:
        self.seqs.extend(seqs)
        if len(self.seqs) > self._compact_at:
            bound = max([self.floor, *self.tickets])  # (a flush in progress may have a ticket below the floor)
            kept = [seq for seq in self.seqs if self.floor <= seq < bound]
            later = [seq for seq in self.seqs if seq >= bound]
            self.seqs = [*kept, min(later)] if later else kept
            self._compact_at = 2 * len(self.seqs) + self._min_compact  # amortized: never a scan per failure

    def begin(self, ticket: int) -> None:
        self.tickets.append(ticket)

    def end(self, ticket: int) -> None:
        self.tickets.remove(ticket)

    def failed_before(self, ticket: int) -> bool:
        """The answer of a flush that saw every event before `ticket` resolved: whether one of them failed
        since the last such answer. Each failure is answered once."""
        floor, self.floor = self.floor, max(self.floor, ticket)
        failed = any(floor <= seq < ticket for seq in self.seqs)
        self.seqs = [seq for seq in self.seqs if seq >= self.floor]
        return failed


def commit_due(since_last: float, interval: float, hands_out_unwritten: bool, *, stopping: bool, flush_began: bool,
               flush_asks: bool, flush_waits: bool, full_batch: bool) -> tuple[bool, bool]:
    """Whether a delivery loop's commit is due `since_last` seconds after the last due one, and whether it
    writes the young events too (see SpoolBuffer.commit).

    A healthy spool hands events out at once, written or not, and commits every half interval what is older
    than the last such commit, so each event is on disk within one interval unless acknowledged first. It
    commits everything when a flush begins (so that what the flush waits for is written while it waits),
    when a flush whose time ran out asks for it (`flush_asks`: it returns once that is written), and at
    shutdown. (Leaving the cadence alone when a flush begins was measured: no faster, see BENCHMARKS.md,
    "Fifth session".) A buffer that hands events out only once written (a spool whose
    disk refused a write) commits every interval, at every loop while a flush waits, and as soon as a full
    batch waits."""
    if hands_out_unwritten:
        sooner = stopping or flush_began or flush_asks
        return since_last >= interval / 2 or sooner, sooner
    return since_last >= interval or stopping or flush_waits or flush_asks or full_batch, True


class DeliveryWorker:
    """Runs a `Dispatcher`: one dispatcher thread that owns the buffer, and sender threads."""

    def __init__(self, dispatcher: Dispatcher, max_queue_bytes: int, max_queue_size: int | None = None) -> None:
        self.dispatcher = dispatcher
        self.max_queue_bytes = max_queue_bytes
        self.max_queue_size = max_queue_size
        self.settings = dispatcher.settings
        self.buffer = dispatcher.buffer
        self.wakeup = threading.Event()
        self.buffer.pace(self.wakeup.set)  # this loop says when a commit is due; a spool's writer wakes it
        self.resolved = threading.Condition()
        self.low_water: float = -math.inf  # lowest seq not yet resolved, published after each loop
        self.iterations = 0  # loops completed: flush() waits for one that began after it
        self.flush_waiters = 0
        self.flushes = 0  # flush() calls so far (a commit is due when one begins)
        # flushes whose time ran out ask the loop to commit everything (`write_unresolved`); the loop publishes
        # the latest request whose commit has completed (under `resolved`), and `finished` once it has ended
        self.commits_wanted = 0
        self.commits_done = 0
        self.finished = False
        self.stopping = False
        # set when a stop ran out of time: the caller has reported what is unresolved (or left it in the spool),
        # so no attempt starts after it and the dispatcher ends at its next loop, closing the buffer itself
        self.abandoned = False
        self._ended = False  # (under `resolved`: abandoned or ended, so that one of the caller and the thread closes)
        self.failures = FlushLedger()  # the dispatcher's failed seqs as published, under `resolved`
        self.idle = False  # sleeping with nothing to commit: the next event queued must wake the loop
        self.room_waiters: list[object] = []  # callers waiting for room in the queue, in turn (under `resolved`)
        self.queue_limit = self._queue_limit()  # events the intake may hold, from the byte bound
        self._attempts: queue.SimpleQueue[Attempt] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="openmonetize-dispatcher", daemon=True)
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"openmonetize-sender-{i}", daemon=True)
            for i in range(self.settings.max_concurrent_requests)
        ]

    def start(self) -> None:
        self._thread.start()
        for sender in self._senders:
            sender.start()

    def stop(self, timeout: float | None) -> bool:
        """Ask the threads to finish; True if the dispatcher ended within `timeout` (then the caller closes
        the buffer). Otherwise it is abandoned: it starts no attempt after this and closes the buffer itself."""
        self.stopping = True
        self.wakeup.set()
        self._thread.join(timeout)
        with self.resolved:
            if self._ended:
                return True
            self.abandoned = True
        self.wakeup.set()
        return False

    def write_unresolved(self) -> None:
        """For a flush whose time ran out (with a spool): have the loop commit everything not yet resolved,
        and wait until that write has completed, so that what the flush waited for is acknowledged or on
        disk when it returns. Returns at once if the loop has ended (a stop that ran out of time closes the
        buffer, writing what is in memory, before the loop counts as ended), or if called on the loop's own
        thread (a flush in an `on_error` callback), which cannot wait for itself."""
        if threading.current_thread() is self._thread:
            return
        with self.resolved:
            self.commits_wanted += 1
            wanted = self.commits_wanted
        self.wakeup.set()
        with self.resolved:
            self.resolved.wait_for(lambda: self.commits_done >= wanted or self.finished)

    def unresolved_batches(self) -> list[Batch]:
        """Batches taken from the buffer and not yet resolved (read once the dispatcher is told to stop)."""
        return self.dispatcher.unresolved()

    # -- dispatcher thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        d = self.dispatcher
        try:
            self.buffer.adopt_orphans(self._commit_while_adopting)
            last_send = last_adopt = last_commit = time.monotonic()
            seen_flushes = self.flushes
            asked = 0  # the latest flush request whose commit was made due (see write_unresolved)
            while True:
                self.wakeup.wait(self.wait_timeout(time.monotonic(), last_send))
                self.idle = False
                self.wakeup.clear()
                if self.abandoned:
                    break
                now = time.monotonic()
                try:
                    flush_began, seen_flushes = self.flushes != seen_flushes, self.flushes
                    wanted = self.commits_wanted
                    due, young = commit_due(
                        now - last_commit, self.settings.commit_interval, self.buffer.hands_out_unwritten(),
                        stopping=self.stopping, flush_began=flush_began, flush_asks=wanted != asked,
                        flush_waits=self.flush_waiters > 0,
                        full_batch=len(self.buffer.intake) >= d.batch_limit)
                    # (a spool writes only when due: see SpoolBuffer.paced)
                    self.buffer.commit(due, young=young)
                    if due:
                        last_commit = now
                    asked = wanted
                    if self.commits_done < asked and self.buffer.written():
                        self.commits_done = asked  # (read under `resolved` only once published)
                    self._collect()
                    if now - last_adopt >= self.settings.adopt_interval:
                        self.buffer.adopt_orphans(self._commit_while_adopting)
                        last_adopt = now
                    interval_over = now - last_send >= self.settings.flush_interval
                    jobs = d.next_jobs(interval_over or self.flush_waiters > 0 or self.stopping)
                    if self.abandoned:
                        break
                    for job in jobs:
                        self._work.put(job)
                    if jobs or interval_over:
                        last_send = now  # the interval restarts whether or not there was anything to send
                    self._publish()
                except Exception:  # a bug must not end delivery: the events stay where they are
                    logger.exception("openmonetize: the delivery loop failed; trying again in 1 s")
                    self.wakeup.wait(1.0)
                    continue
                if self.stopping and not d.in_flight and ((len(self.buffer) == 0 and not d.waiting)
                                                          or d.paused_until > d.clock()):
                    break
        except BaseException:
            logger.exception("openmonetize: the delivery thread failed; events stay %s",
                             "in the spool" if self.buffer.durable else "in memory")
            raise
        finally:
            for _ in self._senders:
                self._work.put(None)
            with self.resolved:
                self._ended = True
            if self.abandoned and self.buffer.durable:
                try:
                    self.buffer.close()  # what is left stays on disk for the next process, as shutdown said
                except Exception:
                    logger.exception("openmonetize: closing the spool after shutdown failed")
            with self.resolved:
                self.finished = True
                self.resolved.notify_all()

    def wait_timeout(self, now: float, last_send: float) -> float:
        """How long the loop may sleep: until the flush interval ends or the dispatcher's next wake-up; with
        a spool, half a commit interval while a commit has anything to do. Else `idle` is left set, so that
        the next `track_*` wakes the loop (set before the buffer is looked at: an event queued after the
        look sees it)."""
        timeout = min(self.settings.flush_interval - (now - last_send), self.dispatcher.next_wakeup())
        if self.buffer.durable:
            self.idle = True
            if self.buffer.uncommitted():
                self.idle = False
                timeout = min(timeout, self.settings.commit_interval / 2)
        return max(timeout, 0.0)

    def _collect(self) -> None:
        while not self.abandoned:  # (after a stop that ran out of time, answers change nothing reported)
            try:
                attempt = self._attempts.get_nowait()
            except queue.Empty:
                return
            self.dispatcher.resolve(attempt)

    def _commit_while_adopting(self, commit: Callable[[], None]) -> None:
        """Between the chunks of an adoption (this thread, which may copy a large orphan for seconds): `commit`
        writes what was tracked so far, so the flushes that ran out of time before it began (`write_unresolved`)
        have what they waited for on disk, and return now rather than at the adoption's end."""
        wanted = self.commits_wanted  # (read before the commit: a later flush's events may not be in it)
        commit()
        if self.commits_done < wanted:
            with self.resolved:
                self.commits_done = wanted
                self.resolved.notify_all()

    def _publish(self) -> None:
        d = self.dispatcher
        low = d.low_seq()
        limit = self._queue_limit()
        with self.resolved:
            self.low_water = low
            if d.failed_seqs:
                self.failures.add(d.failed_seqs)
                d.failed_seqs.clear()
            self.queue_limit = limit
            self.iterations += 1
            self.resolved.notify_all()

    def _queue_limit(self) -> int:
        """The byte bound as a count, from the measured size of queued events (read without a lock by
        `track_*`: an int is replaced atomically)."""
        limit = max(1, int(self.max_queue_bytes / self.dispatcher.entry_bytes))
        limit = min(limit, self.max_queue_size) if self.max_queue_size else limit
        return max(0, limit - self.buffer.held)  # events a full disk left in memory count against the bound

    # -- sender threads ---------------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                return
            self._attempts.put(self.dispatcher.attempt(job))
            self.wakeup.set()
