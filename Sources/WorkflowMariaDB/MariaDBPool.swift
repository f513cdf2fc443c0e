import CMariaDB
import Foundation
import Logging
import Synchronization

/// Pool sizing, with the seed's defaults (Go's `database/sql` settings in the seed README).
public struct PoolConfiguration: Sendable, Equatable {
    /// At most this many connections (and so database threads) at once. Default 25.
    public var maxOpen: Int = 25
    /// Connections kept open while idle. Default 5.
    public var maxIdle: Int = 5
    /// A connection older than this is closed and replaced before its next use. Default 300 s.
    public var maxLifetimeSeconds: Double = 300
    /// How long a surplus idle connection waits for work before it closes. Default 1 s.
    public var idleLingerSeconds: Double = 1
    /// Attempts of one transaction on deadlock (1213 — on a Galera cluster also a certification
    /// failure at COMMIT), lock wait timeout (1205) or a connection lost before COMMIT.
    /// Default 5; workflowd raises it to 10 on a Galera cluster.
    public var transactionAttempts: Int = 5
    /// Attempts to connect before reporting UNAVAILABLE. Default 3.
    public var connectAttempts: Int = 3

    public init() {}

    public init(maxOpen: Int, maxIdle: Int, maxLifetimeSeconds: Double) {
        self.maxOpen = maxOpen
        self.maxIdle = maxIdle
        self.maxLifetimeSeconds = maxLifetimeSeconds
    }
}

/// A bounded pool of MariaDB connections, each owned by its own dedicated thread.
///
/// Connector/C calls block, so they never run on Swift's cooperative pool (which has only as
/// many threads as cores): `withConnection` and `transaction` queue a job, one of up to
/// `maxOpen` database threads runs it with its connection, and the awaiting task resumes when
/// it is done. Threads (and connections) are created on demand; surplus idle ones beyond
/// `maxIdle` close after `idleLingerSeconds`.
public final class MariaDBPool: Sendable {
    public let configuration: MariaDBConfiguration
    public let poolConfiguration: PoolConfiguration
    let logger: Logger
    private let shared: Shared
    /// Transactions tried again, by cause (for metrics and tests).
    public let retries = Retries()

    /// Counts of transactions rolled back and tried again, and of those that ran out of attempts.
    public final class Retries: Sendable {
        /// 1213 from a statement: a deadlock (or, on Galera, a replicated write that aborted
        /// this transaction).
        public let deadlock = Atomic<Int>(0)
        /// 1213 at COMMIT: on a Galera cluster, a certification failure (another node committed
        /// a conflicting write first). Nothing was applied.
        public let certification = Atomic<Int>(0)
        /// 1205 lock wait timeout.
        public let lockWait = Atomic<Int>(0)
        /// The connection broke before COMMIT was sent.
        public let connectionLost = Atomic<Int>(0)
        /// Transactions that failed on their last attempt with one of the above.
        public let exhausted = Atomic<Int>(0)

        func count(_ e: MariaDBError, atCommit: Bool) {
            switch (e.errno, atCommit) {
            case (1213, true): certification.add(1, ordering: .relaxed)
            case (1213, false): deadlock.add(1, ordering: .relaxed)
            case (1205, _): lockWait.add(1, ordering: .relaxed)
            default: connectionLost.add(1, ordering: .relaxed)
            }
        }
    }

    public init(configuration: MariaDBConfiguration, pool: PoolConfiguration = .init(), logger: Logger) {
        precondition(pool.maxOpen >= 1 && pool.maxIdle >= 0, "bad pool configuration")
        self.configuration = configuration
        self.poolConfiguration = pool
        self.logger = logger
        self.shared = Shared()
    }

    /// A point-in-time view, for `stats` and tests.
    public struct Statistics: Sendable, Equatable {
        public var threads: Int
        public var idle: Int
        public var queued: Int
        public var openConnections: Int
    }

    public var statistics: Statistics {
        shared.condition.lock()
        defer { shared.condition.unlock() }
        return Statistics(
            threads: shared.workers, idle: shared.idle, queued: shared.queue.count - shared.queueHead,
            openConnections: shared.openConnections)
    }

    // MARK: - Running work

    /// Runs `body` with a connection on a database thread. Reads that fail because the
    /// connection was lost are retried on a fresh connection (a read is safe to repeat).
    public func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (MariaDBConnection) throws -> T
    ) async throws -> T {
        try await submit { worker in
            var attempt = 0
            while true {
                attempt += 1
                let connection = try worker.connection()
                do {
                    return try body(connection)
                } catch let e as MariaDBError where e.kind == .connectionLost && attempt < 3 {
                    worker.discard()
                    continue
                }
            }
        }
    }

    /// Runs `body` inside one transaction and commits. The whole transaction is retried a
    /// bounded number of times, with exponential back-off and jitter, when the server
    /// reports a deadlock or lock wait timeout or the connection is lost before COMMIT (in all
    /// three cases nothing was applied). If the connection is lost during COMMIT the outcome is
    /// unknown: that is reported as `.commitOutcomeUnknown` and never retried here. Any other
    /// error, including one thrown by `body`, rolls back and is rethrown.
    ///
    /// `body` may run more than once, so it must only read and write through the connection.
    public func transaction<T: Sendable>(
        _ body: @escaping @Sendable (MariaDBConnection) throws -> T
    ) async throws -> T {
        let attempts = poolConfiguration.transactionAttempts
        let logger = self.logger
        let retries = self.retries
        return try await submit { worker in
            var attempt = 0
            while true {
                attempt += 1
                let connection = try worker.connection()
                var committing = false
                do {
                    try connection.executeText("START TRANSACTION")
                    let value = try body(connection)
                    committing = true
                    try connection.executeText("COMMIT")
                    return value
                } catch let e as MariaDBError {
                    if committing && (e.kind == .connectionLost || e.kind == .unavailable) {
                        worker.discard()
                        throw MariaDBError(
                            kind: .commitOutcomeUnknown, errno: e.errno, sqlState: e.sqlState,
                            message: "connection lost during COMMIT; the change may or may not be applied")
                    }
                    worker.rollback()
                    let retry = e.kind == .retryableConflict || e.kind == .connectionLost
                    guard retry else { throw e }
                    guard attempt < attempts else {
                        retries.exhausted.add(1, ordering: .relaxed)
                        throw e
                    }
                    retries.count(e, atCommit: committing)
                    logger.debug(
                        "retrying transaction",
                        metadata: ["db.errno": "\(e.errno)", "attempt": "\(attempt)"])
                    Self.backOff(attempt: attempt)
                } catch {
                    worker.rollback()
                    throw error
                }
            }
        }
    }

    /// Exponential back-off with full jitter, capped at 200 ms. Sleeps the database thread,
    /// which is ours and holds no lock: never a cooperative-pool thread.
    static func backOff(attempt: Int) {
        let capMicros = 200_000.0
        let base = min(capMicros, 2_000.0 * pow(2.0, Double(attempt - 1)))
        usleep(UInt32(Double.random(in: base / 2...base)))
    }

    /// Stops the pool: queued jobs still run, then every thread closes its connection and
    /// exits. New work fails with `.shutdown`. Waits up to `timeoutSeconds` for the threads.
    public func shutdown(timeoutSeconds: Double = 10) {
        let c = shared.condition
        c.lock()
        shared.isShutdown = true
        c.broadcast()
        let deadline = Date(timeIntervalSinceNow: timeoutSeconds)
        // `alive`, not `workers`: a thread leaves the scheduling count before it closes its
        // connection, and the process may exit as soon as this returns — a connection closed
        // while exit handlers run corrupted the heap (seen once: `workflowd prune` aborted in
        // malloc_consolidate on a database thread after its work was done).
        while shared.workers > 0 || shared.alive > 0 {
            if !c.wait(until: deadline) { break }
        }
        c.unlock()
    }

    // MARK: - Internals

    private func submit<T: Sendable>(_ work: @escaping @Sendable (Worker) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let job = Job { worker in
                guard let worker else {
                    continuation.resume(throwing: MariaDBError(kind: .shutdown, message: "the database pool is shut down"))
                    return
                }
                do {
                    continuation.resume(returning: try work(worker))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            enqueue(job)
        }
    }

    private func enqueue(_ job: Job) {
        let c = shared.condition
        c.lock()
        if shared.isShutdown {
            c.unlock()
            job.run(nil)
            return
        }
        shared.queue.append(job)
        // Spawn when there are more queued jobs than idle threads to take them.
        // (Jobs before `queueHead` were already taken.)
        let spawn = shared.queue.count - shared.queueHead > shared.idle && shared.workers < poolConfiguration.maxOpen
        if spawn {
            shared.workers += 1
            shared.alive += 1
        }
        c.signal()
        c.unlock()
        if spawn {
            let worker = Worker(pool: self)
            let thread = Thread { worker.loop() }
            thread.name = "workflowd-db"
            thread.start()
        }
    }

    /// A unit of work for a database thread. `run(nil)` means the pool is shut down.
    struct Job: Sendable {
        let run: @Sendable (Worker?) -> Void
    }

    /// State shared by all threads of the pool, guarded by `condition`.
    // @unchecked Sendable: every stored property is read and written only with `condition` locked.
    final class Shared: @unchecked Sendable {
        let condition = NSCondition()
        var queue: [Job] = []
        var queueHead = 0
        /// Threads taking jobs (what `enqueue` counts when it decides to start one).
        var workers = 0
        /// Threads not yet finished: a leaving thread still closes its connection after it
        /// stopped counting in `workers`.
        var alive = 0
        var idle = 0
        var openConnections = 0
        var isShutdown = false
    }

    /// One database thread and its connection.
    // @unchecked Sendable: a Worker is created by `enqueue` and from then on used only by its
    // own thread (`loop`, and the jobs that loop runs).
    final class Worker: @unchecked Sendable {
        let pool: MariaDBPool
        private var current: MariaDBConnection?

        init(pool: MariaDBPool) { self.pool = pool }

        /// The thread's connection: opened on first use, replaced when broken or too old.
        func connection() throws -> MariaDBConnection {
            if let c = current {
                if !c.isBroken && monotonicSeconds() - c.openedAt < pool.poolConfiguration.maxLifetimeSeconds {
                    return c
                }
                discard()
            }
            var attempt = 0
            while true {
                attempt += 1
                do {
                    let c = try MariaDBConnection(configuration: pool.configuration)
                    current = c
                    pool.shared.condition.lock()
                    pool.shared.openConnections += 1
                    pool.shared.condition.unlock()
                    return c
                } catch {
                    guard error.kind == .unavailable, attempt < pool.poolConfiguration.connectAttempts else { throw error }
                    MariaDBPool.backOff(attempt: attempt + 3)
                }
            }
        }

        /// Drops the connection (after an error that left it unusable).
        func discard() {
            guard let c = current else { return }
            c.close()
            current = nil
            pool.shared.condition.lock()
            pool.shared.openConnections -= 1
            pool.shared.condition.unlock()
        }

        func rollback() {
            guard let c = current else { return }
            if c.isBroken {
                discard()
                return
            }
            do {
                try c.executeText("ROLLBACK")
            } catch {
                discard()
            }
        }

        /// Names the OS thread "workflowd-db" (what `top -H`, debuggers and tests see). On Linux,
        /// swift-corelibs-foundation applies `Thread.name` to the OS thread only if the new
        /// thread happens to start after `start()` returned, so most pool threads kept their
        /// creator's name (the cooperative pool's "oot.default-qos"); writing the kernel's
        /// `comm` from the thread itself always works.
        static func nameCurrentThread() {
            #if os(Linux)
            let fd = open("/proc/thread-self/comm", O_WRONLY)
            if fd >= 0 {
                _ = "workflowd-db".withCString { write(fd, $0, strlen($0)) }
                close(fd)
            }
            #endif
            Thread.current.name = "workflowd-db"
        }

        func loop() {
            Self.nameCurrentThread()
            let shared = pool.shared
            let c = shared.condition
            let maxIdle = pool.poolConfiguration.maxIdle
            let linger = pool.poolConfiguration.idleLingerSeconds
            c.lock()
            while true {
                if shared.queueHead < shared.queue.count {
                    let job = shared.queue[shared.queueHead]
                    shared.queueHead += 1
                    if shared.queueHead > 64 && shared.queueHead * 2 > shared.queue.count {
                        shared.queue.removeFirst(shared.queueHead)
                        shared.queueHead = 0
                    }
                    c.unlock()
                    job.run(self)
                    c.lock()
                    continue
                }
                if shared.isShutdown { break }
                shared.idle += 1
                if shared.idle > maxIdle {
                    let signalled = c.wait(until: Date(timeIntervalSinceNow: linger))
                    shared.idle -= 1
                    // Leave only while at least maxIdle others stay idle: a waiter woken by
                    // another thread's exit broadcast comes back here too, and without this
                    // check every idle thread could time out and the pool shrank to zero.
                    if !signalled && shared.queueHead >= shared.queue.count && shared.idle >= maxIdle { break }
                } else {
                    c.wait()
                    shared.idle -= 1
                }
            }
            shared.workers -= 1
            c.broadcast()
            c.unlock()
            discard()
            // Free Connector/C's per-thread state before the thread ends.
            mysql_thread_end()
            c.lock()
            shared.alive -= 1
            c.broadcast()
            c.unlock()
        }
    }
}
