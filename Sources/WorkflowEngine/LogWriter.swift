#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// This instance's one writer of the event log at a time.
///
/// The holder of the `relay` lease numbers events itself: each of its writes takes the writer's
/// turn inside its transaction — after its other statements, right before it appends — and puts
/// its events straight into the log (`EventRoute.log`), after any outbox rows still pending: no
/// outbox row, no second commit by the relay, and the events reach listeners and consumers right
/// after the commit. The relay loop takes its turn too when there are outbox rows (other
/// instances' changes, or a write that met a backlog).
///
/// Writes wait for their turn rather than fall back to the outbox when the writer is busy: a
/// fall-back was measured to feed itself under load (each outbox write woke the relay, whose
/// round kept the writer busy for the next write): at 20 concurrent orders 99 % of writes went
/// through the outbox, 10.2 statements and 0.92 ms of MariaDB CPU per order; waiting, 100 %
/// go straight to the log, 7.0 statements and 0.47 ms, 1,115–1,139 orders/s instead of
/// 1,058–1,061 (same run). Taking the turn only for the append and commit, instead of for the
/// whole transaction, lets the writes' record statements overlap: 2,083 → 2,793 orders/s at
/// c=200 and 1,067 → 1,245 at c=20 (quick bench, docs/benchmarks.md).
///
/// A database thread waits for its turn blocked (`acquireBlocking`: it is ours, not the
/// concurrency pool's, and its transaction holds only its own runs' rows, which the holder never
/// needs); the relay loop waits as a task.
///
/// One writer at a time keeps the numbering gap-free: the head a write starts from is the head
/// the previous one ended at (a stale head — another instance's relay appended meanwhile —
/// makes the insert meet a duplicate `seq`, and the store reads the head again).
final class LogWriter: Sendable {
    private struct State {
        var busy = false
        /// The log's head after the last write through here (nil: unknown, read it).
        var head: Int64?
        var waiters: [Waiter] = []
        /// No outbox row of this instance is pending (as of the last drain).
        var outboxClean = false
        /// Counts this instance's writes to the outbox, so a drain that raced one does not
        /// call the outbox clean.
        var outboxWrites = 0
        /// Writes that may block a database thread waiting for their turn (`enterTransaction`).
        var inTransaction = 0
    }

    /// The writer, held: the head it knows and whether the outbox is known to be empty of this
    /// instance's rows.
    struct Ticket: Sendable {
        var head: Int64?
        var outboxClean: Bool
        fileprivate var outboxWrites: Int
    }

    private let state = Mutex(State())

    /// Who waits for the writer: a task, or a database thread inside its transaction.
    private enum Waiter {
        case task(CheckedContinuation<Ticket, Never>)
        case thread(ThreadWaiter)

        func resume(_ t: Ticket) {
            switch self {
            case .task(let c): c.resume(returning: t)
            case .thread(let w): w.resume(t)
            }
        }
    }

    /// A thread blocked until the writer is its (a POSIX semaphore: the engine has no Foundation).
    private final class ThreadWaiter: @unchecked Sendable {
        private let semaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
        private var ticket: Ticket?
        init() { sem_init(semaphore, 0, 0) }
        deinit {
            sem_destroy(semaphore)
            semaphore.deallocate()
        }
        func resume(_ t: Ticket) {
            ticket = t
            sem_post(semaphore)
        }
        func wait() -> Ticket {
            while sem_wait(semaphore) != 0 {}  // EINTR
            return ticket!
        }
    }

    /// Whether a write may wait for its turn inside its transaction (a database thread blocked),
    /// given at most `limit` such writes: if not, it takes its turn before the transaction.
    /// Balanced by `leaveTransaction` when true.
    func enterTransaction(limit: Int) -> Bool {
        state.withLock { s in
            guard s.inTransaction < limit else { return false }
            s.inTransaction += 1
            return true
        }
    }

    func leaveTransaction() { state.withLock { $0.inTransaction -= 1 } }

    /// Waits for the writer on this thread: only from a database thread (never the concurrency
    /// pool), which may hold the writer's turn inside its transaction.
    func acquireBlocking() -> Ticket {
        let waiter = ThreadWaiter()
        let ticket = state.withLock { s -> Ticket? in
            guard s.busy else {
                s.busy = true
                return Ticket(head: s.head, outboxClean: s.outboxClean, outboxWrites: s.outboxWrites)
            }
            s.waiters.append(.thread(waiter))
            return nil
        }
        return ticket ?? waiter.wait()
    }

    /// Waits for the writer, first come first served.
    func acquire() async -> Ticket {
        await withCheckedContinuation { (c: CheckedContinuation<Ticket, Never>) in
            let ticket = state.withLock { s -> Ticket? in
                guard s.busy else {
                    s.busy = true
                    return Ticket(head: s.head, outboxClean: s.outboxClean, outboxWrites: s.outboxWrites)
                }
                s.waiters.append(.task(c))
                return nil
            }
            if let ticket { c.resume(returning: ticket) }
        }
    }

    /// Gives the writer up. `head`: the log's head after this write (nil: unknown). `drained`:
    /// the write found (and moved) every pending outbox row.
    func release(_ ticket: Ticket, head: Int64?, drained: Bool) {
        let next = state.withLock { s -> (Waiter, Ticket)? in
            s.head = head
            if drained && s.outboxWrites == ticket.outboxWrites { s.outboxClean = true }
            guard !s.waiters.isEmpty else {
                s.busy = false
                return nil
            }
            return (s.waiters.removeFirst(), Ticket(head: head, outboxClean: s.outboxClean, outboxWrites: s.outboxWrites))
        }
        if let (w, t) = next { w.resume(t) }
    }

    /// A write of this instance used the outbox (the writer was busy, or it is not the relay).
    func wroteOutbox() {
        state.withLock { s in
            s.outboxWrites += 1
            s.outboxClean = false
        }
    }

    /// Whether this instance's outbox rows are all in the log (a relay round can be skipped).
    var outboxClean: Bool { state.withLock { $0.outboxClean } }
}
