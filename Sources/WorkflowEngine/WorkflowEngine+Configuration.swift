extension WorkflowEngine {
    /// How the engine runs. Intervals marked "real time" are waits of this process; lease
    /// expiry and timeouts use the injected `WorkflowClock`.
    public struct Configuration: Sendable {
        /// Names this instance in `workflow_leases`. Default: a fresh UUID.
        public var instanceID: String = UUIDv7Generator().next(now: SystemClock().now())
        /// Partitions per (workflow, status) consumer. Default 4. Every instance sharing a
        /// database must use the same number.
        public var partitionCount: Int = 4
        /// Steps one consumer partition (or the poller) runs at once. Default 64.
        public var maxConcurrentSteps: Int = 64
        /// Events a consumer reads per query. Default 256.
        public var eventBatchSize: Int = 256
        /// Outbox rows the relay moves per transaction. Default 500.
        public var relayBatchSize: Int = 500
        /// Updates committed per `store.update` call. Default 256.
        public var commitBatchSize: Int = 256
        /// Batches of step results that commit at once (one queue serves every consumer; while
        /// these commit, the next batch gathers). Default 2.
        public var commitConcurrency: Int = 2
        /// Real time between relay attempts when the outbox was empty (rows written by other
        /// instances; local writes wake the relay at once). Default 50 ms.
        public var relayIdleMilliseconds: Int = 50
        /// Real time between reads of the event log by an instance that does not hold the relay
        /// lease. Default 50 ms.
        public var eventPollMilliseconds: Int = 50
        /// Real time between queries for due timeouts and retries while other instances share the
        /// database (their timeouts cannot be heard of otherwise). Alone, the poller sleeps
        /// until the next due time or a local commit's signal. Default 100 ms.
        public var timeoutPollMilliseconds: Int = 100
        /// Real time an instance alone on its database waits, with nothing scheduled, before the
        /// relay and the poller look again although nothing signalled them: a backstop, since
        /// every change then comes from this instance's own commits. Default 60 000 ms.
        public var idleBackstopMilliseconds: Int = 60_000
        /// Lease lifetime (by the injected clock). Default 10 000 ms.
        public var leaseTTLMilliseconds: Int64 = 10_000
        /// Real time between lease renewals; must be well under the TTL. Default 2 000 ms.
        public var leaseRenewMilliseconds: Int = 2_000
        /// Most instances expected on one database (member slots). Default 16.
        public var maxInstances: Int = 16
        /// Real time a graceful stop waits for in-flight steps. Default 10 000 ms.
        public var drainMilliseconds: Int = 10_000
        /// Real time between cursor writes while busy (an idle consumer writes at once). Default 200 ms.
        public var cursorFlushMilliseconds: Int = 200
        /// Retries and pause-after-N.
        public var retry = RetryPolicy()
        /// A number in [0, 1) for jitter. Default: the system generator.
        public var random: @Sendable () -> Double = { Double.random(in: 0..<1) }
        /// Health: consumer lag (events) above which `lag` is unhealthy. Default 10 000.
        public var healthMaxLag: Int64 = 10_000
        /// How often each active consumer's lag is compared with `healthMaxLag`; a consumer
        /// that passes it logs one warning, and one line when it is back under half of it.
        /// Default 5 000 ms.
        public var lagCheckMilliseconds: Int = 5_000
        /// Health: age of the oldest outbox row (how far the relay is behind) above which `relay`
        /// is unhealthy. Default 30 000 ms.
        public var healthMaxOutboxAgeMilliseconds: Int64 = 30_000
        /// Health: outbox rows waiting for the relay above which `outbox` is unhealthy.
        /// Default 10 000.
        public var healthMaxOutboxPending: Int = 10_000
        /// Health: a run waiting in an external status longer than this while no worker (of
        /// any instance) holds a task there makes `external` unhealthy. Default 60 000 ms.
        public var healthMaxTaskWaitMilliseconds: Int64 = 60_000
        /// Runs this instance committed that it keeps in memory (each as of the version it
        /// wrote), so the next step and a finished `await` need not read them back. 0 turns the
        /// cache off. Default 4 096.
        public var recentRunsCapacity: Int = 4_096
        /// Bytes of objects and meta those runs may hold; a run above a sixteenth of it is not
        /// kept. Default 32 MiB.
        public var recentRunsMaxBytes: Int = 32 << 20

        /// Automatic retention (finished runs, old events), run by whichever instance holds the
        /// `retention` lease. Default nil: off.
        public var retention: RetentionPolicy? = nil

        /// Real time between looks in the database for free tasks of an external status while a
        /// worker of this instance has room (work released by other instances, retry times);
        /// new tasks are offered at once without it. Default 1 000 ms.
        public var taskScanMilliseconds: Int = 1_000

        /// How long `history` waits for the relay to log a change that is already committed.
        public var historyWaitMilliseconds: Int = 2_000

        /// Writes that may wait for the log writer's turn inside their transaction, on a
        /// database thread, at once. Must stay below the store's number of database threads (the
        /// turn's holder may need one more: the relay's transaction, a per-run fallback); a write
        /// past the limit takes its turn before its transaction instead. workflowd sets it to
        /// the pool's `maxOpen − 1`; 0 makes every write take its turn first.
        public var maxWritesWaitingInTransaction: Int = 8

        /// Fault injection, for tests only (workflowd: env `WORKFLOWD_TEST_KILL_AFTER_DIRECT_WRITES`):
        /// the process SIGKILLs itself right after its Nth write straight into the log has
        /// committed — before that write's events are delivered and before its runs' next
        /// steps start. 0 (the default): never.
        public var killAfterDirectWrites: Int = 0
        public init() {}
    }
}
