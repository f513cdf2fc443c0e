import Logging
import Synchronization
import Testing

@testable import WorkflowEngine

/// Log lines kept in memory, for tests that check what the engine logs.
final class CapturedLog: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }
    let lines = Mutex<[Line]>([])

    var logger: Logger {
        var l = Logger(label: "test") { _ in Handler(log: self) }
        l.logLevel = .trace
        return l
    }

    func matching(_ message: String) -> [Line] { lines.withLock { $0.filter { $0.message == message } } }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            log.lines.withLock {
                $0.append(Line(level: event.level, message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
            }
        }
    }
}

@Suite struct MetricsTests {
    let clock = ManualClock()

    @Test func prometheusTextEscapesLabelsAndWritesHistograms() {
        let h = LatencyHistogram(bounds: [1, 10])
        h.observe(milliseconds: 0.5)
        h.observe(milliseconds: 5)
        h.observe(milliseconds: 50)
        let text = PrometheusText.render([
            MetricFamily("x_total", .counter, help: "Help with a \\ and\na newline.", samples: [
                .init(labels: [.init("name", #"a"b\c"# + "\nd")], value: 3)
            ]),
            MetricFamily("lat_seconds", .histogram, help: "Latency.", samples: h.samples()),
            MetricFamily("g", .gauge, help: "A gauge.", value: 0.25),
        ])
        #expect(
            text == """
                # HELP x_total Help with a \\\\ and\\na newline.
                # TYPE x_total counter
                x_total{name="a\\"b\\\\c\\nd"} 3
                # HELP lat_seconds Latency.
                # TYPE lat_seconds histogram
                lat_seconds_bucket{le="0.001"} 1
                lat_seconds_bucket{le="0.01"} 2
                lat_seconds_bucket{le="+Inf"} 3
                lat_seconds_sum 0.0555
                lat_seconds_count 3
                # HELP g A gauge.
                # TYPE g gauge
                g 0.25

                """)
    }

    @Test(.timeLimit(.minutes(1)))
    func engineMetricsCountStepsRunStatesAndSkips() async throws {
        let flow = TestFlow()
        let store = InMemoryWorkflowStore(clock: clock)
        let engine = try WorkflowEngine(
            store: store, definitions: [flow.definition()], configuration: testConfiguration(), clock: clock)
        try await running(engine) {
            for i in 0..<3 { _ = try await engine.trigger(workflow: TestFlow.name, foreignID: "m-\(i)", object: []) }
            _ = try await engine.trigger(workflow: TestFlow.name, foreignID: "reject-1", object: [])
            try await eventually("all finished") { store.allRuns.allSatisfy { $0.runState.isFinished } && store.allRuns.count == 4 }
            try await eventually("all relayed and delivered") {
                let head = try await store.head()
                return try await store.outboxStats().pending == 0 && engine.deliveredHead == head
            }
            // Cursors are written a little after the work (throttled): wait for them.
            try await eventually("cursors written") {
                try await engine.metrics().first { $0.name == "workflowd_consumer_lag_max_events" }?.samples[0].value == 0
            }
            let families = try await engine.metrics()
            func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
                families.first { $0.name == name }?.samples.first { s in
                    labels.allSatisfy { k, v in s.labels.contains { $0.name == k && $0.value == v } }
                }?.value
            }
            // 3 runs: A, B → 2 steps each; the rejected one: 1 step.
            #expect(value("workflowd_steps_total") == 7)
            #expect(value("workflowd_transitions_applied_total") == 7)
            #expect(value("workflowd_runs", ["status": "Done"]) == 3)
            #expect(value("workflowd_runs", ["status": "Failed"]) == 1)
            #expect(value("workflowd_runs_by_run_state", ["run_state": "Completed"]) == 4)
            // Events: 4 created (Initiated), 3 moved to B (Running), 4 finished (Completed).
            #expect(value("workflowd_run_state_changes_total", ["run_state": "Initiated"]) == 4)
            #expect(value("workflowd_run_state_changes_total", ["run_state": "Running"]) == 3)
            #expect(value("workflowd_run_state_changes_total", ["run_state": "Completed"]) == 4)
            #expect(value("workflowd_step_duration_seconds", ["le": "+Inf"]) == 7)
            #expect(value("workflowd_outbox_pending") == 0)
            #expect(value("workflowd_store_errors_total") == 0)
            #expect((value("workflowd_leases_held") ?? 0) >= 1)

            // A paused run's pending event is passed over as "not runnable".
            let gated = try await engine.trigger(workflow: TestFlow.name, foreignID: "gate-1", object: []).run
            try await eventually("gate-1's B step waits at the gate") { flow.callCount("gate-1", TestFlow.b) == 1 }
            _ = try await engine.control(.pause, runID: gated.runID, reason: "hold")
            flow.openGate()
            try await eventually("gate-1 step done") { try await engine.metrics().first { $0.name == "workflowd_transition_conflicts_total" }?.samples[0].value == 1 }
            let text = PrometheusText.render(try await engine.metrics())
            #expect(text.contains("workflowd_runs_by_run_state{workflow=\"test-flow\",run_state=\"Paused\"} 1"), "\(text)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aLaggingConsumerLogsOneWarningThenOneLineWhenItCatchesUp() async throws {
        let flow = TestFlow()
        let store = InMemoryWorkflowStore(clock: clock)
        let log = CapturedLog()
        var config = testConfiguration()
        config.partitionCount = 1
        config.healthMaxLag = 4
        config.lagCheckMilliseconds = 10
        let engine = try WorkflowEngine(
            store: store, definitions: [flow.definition()], configuration: config, clock: clock, logger: log.logger)
        try await running(engine) {
            // gate-1's B step waits, so B's consumer cannot move its low-water mark past it while
            // the other runs add events to the log.
            _ = try await engine.trigger(workflow: TestFlow.name, foreignID: "gate-1", object: [])
            for i in 0..<5 { _ = try await engine.trigger(workflow: TestFlow.name, foreignID: "n-\(i)", object: []) }
            // (A's consumer may lag for a moment too on a slow machine; B's is the one held.)
            func lines(_ message: String) -> [CapturedLog.Line] {
                log.matching(message).filter { $0.metadata["consumer"]?.hasPrefix("consumer/test-flow/2/") == true }
            }
            try await eventually("a lag warning for B") { !lines("consumer lag passed the alert threshold").isEmpty }
            // Several more checks pass while it still lags: still one warning.
            try await Task.sleep(for: .milliseconds(100))
            let warnings = lines("consumer lag passed the alert threshold")
            #expect(warnings.count == 1)
            #expect(warnings.first?.level == .warning)
            #expect(lines("consumer lag back under the alert threshold").isEmpty)
            flow.openGate()
            try await eventually("back under") { !lines("consumer lag back under the alert threshold").isEmpty }
            #expect(lines("consumer lag passed the alert threshold").count == 1)
        }
    }
}

@Suite struct StoreHealthTests {
    @Test func anOutageIsOneWarningAndOneNoticeWhateverTheNumberOfFailures() {
        let log = CapturedLog()
        let counted = Mutex(0)
        let health = StoreHealth(logger: log.logger, quiet: .zero) { counted.withLock { $0 += 1 } }
        health.succeeded()  // nothing to end
        #expect(log.lines.withLock { $0.isEmpty })
        for i in 0..<50 { health.failed(i % 2 == 0 ? "relay" : "lease renewal", WorkflowError(.unavailable, "down (MariaDB error 2002)"), started: .now) }
        #expect(health.snapshot == (1, true))
        let warnings = log.lines.withLock { $0.filter { $0.level >= .warning } }
        #expect(warnings.count == 1)
        #expect(warnings.first?.metadata["call"] == "relay")
        #expect(warnings.first?.metadata["error"] == "down (MariaDB error 2002)")
        health.succeeded()
        health.succeeded()
        let notices = log.matching("database calls succeed again")
        #expect(notices.count == 1)
        #expect(notices.first?.metadata["failed.calls"] == "50")
        #expect(counted.withLock { $0 } == 50, "every failure is counted in the metrics")
        // A second outage is a second episode.
        health.failed("commit", WorkflowError(.unavailable, "down"), started: .now)
        health.succeeded()
        #expect(health.snapshot == (2, false))
        #expect(log.lines.withLock { $0.filter { $0.level >= .notice }.count } == 4)
    }

    @Test func successesInTheMiddleOfAnOutageDoNotEndIt() async throws {
        let log = CapturedLog()
        let health = StoreHealth(logger: log.logger, quiet: .milliseconds(200)) {}
        for _ in 0..<5 {
            health.failed("relay", WorkflowError(.unavailable, "1040"), started: .now)
            health.succeeded()  // a call on an older connection still works
        }
        #expect(log.matching("database calls succeed again").isEmpty)
        #expect(health.snapshot == (1, true))
        try await Task.sleep(for: .milliseconds(300))
        health.succeeded()
        #expect(log.matching("database calls succeed again").count == 1)
        #expect(log.matching("database calls are failing; retrying with back-off until they succeed").count == 1)
    }

    /// On a silent network a call waits for its read timeout: it can fail after other calls
    /// have succeeded and ended the episode. It belongs to that episode, not a new one.
    @Test func aCallBegunBeforeTheRecoveryThatFailsAfterItStartsNoNewEpisode() {
        let log = CapturedLog()
        let health = StoreHealth(logger: log.logger, quiet: .zero) {}
        let straggler = ContinuousClock.now
        health.failed("relay", WorkflowError(.unavailable, "2013"), started: .now)
        health.succeeded()
        #expect(health.snapshot == (1, false))
        health.failed("commit", WorkflowError(.unavailable, "2013"), started: straggler)
        #expect(health.snapshot == (1, false))
        #expect(log.matching("database calls are failing; retrying with back-off until they succeed").count == 1)
        // A call begun after the recovery that fails is a new episode.
        health.failed("commit", WorkflowError(.unavailable, "2013"), started: .now)
        #expect(health.snapshot == (2, true))
        #expect(log.matching("database calls are failing; retrying with back-off until they succeed").count == 2)
    }
}
