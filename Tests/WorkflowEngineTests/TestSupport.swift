import Synchronization
import Testing

@testable import WorkflowEngine

/// Waits until `condition` holds, checking every few milliseconds; fails after `seconds`.
/// Correctness never depends on how long this takes: it only waits for a state to be reached.
func eventually(
    _ what: String, seconds: Double = 20, sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(2))
    }
    Issue.record("timed out waiting for: \(what)", sourceLocation: sourceLocation)
    throw TestFailure(what)
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Engine settings for tests: short real-time waits; fixed jitter (unit 0.5 = none).
func testConfiguration(instance: String = "engine-1", random: Double = 0.5) -> WorkflowEngine.Configuration {
    var c = WorkflowEngine.Configuration()
    c.instanceID = instance
    c.partitionCount = 4
    c.relayIdleMilliseconds = 5
    c.eventPollMilliseconds = 5
    c.timeoutPollMilliseconds = 5
    c.idleBackstopMilliseconds = 5
    c.leaseRenewMilliseconds = 20
    c.cursorFlushMilliseconds = 10
    c.drainMilliseconds = 5_000
    c.maxInstances = 4
    c.random = { random }
    return c
}

/// Runs `engines` while `body` runs, then stops them gracefully and waits.
func running<T: Sendable>(_ engines: [WorkflowEngine], _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for e in engines { group.addTask { try await e.run() } }
        do {
            let value = try await body()
            for e in engines { e.shutdown() }
            try await group.waitForAll()
            return value
        } catch {
            for e in engines { e.shutdown() }
            try? await group.waitForAll()
            throw error
        }
    }
}

func running<T: Sendable>(_ engine: WorkflowEngine, _ body: () async throws -> T) async throws -> T {
    try await running([engine], body)
}

/// Every event in the log.
func allEvents(_ store: some WorkflowStore) async throws -> [WorkflowEvent] {
    try await store.events(after: 0, filter: EventFilter(), limit: Int.max)
}

/// A small workflow whose steps do what the foreign id says:
/// `A(1) → B(2) → Done(3)`, with `Failed(4)` reachable from A and B.
/// - `fail-always-…`: A throws every time; `fail-N-…`: A throws N times, then moves on;
/// - `reject-…`: A returns Failed with reason "rejected";
/// - `gate-…`: B waits until `openGate()`;
/// - `bad-…`: A returns the undeclared status Done (a definition error).
final class TestFlow: Sendable {
    static let name = "test-flow"
    static let a = 1, b = 2, done = 3, failed = 4

    struct StepError: Error, CustomStringConvertible {
        var description: String
    }

    private let calls = Mutex<[String: Int]>([:])
    private let failures = Mutex<[String: Int]>([:])
    let gate = OneShot()
    let hookCalls = Mutex<[String]>([])

    func openGate() { gate.fire() }

    /// How often the step of `status` ran for `foreignID`.
    func callCount(_ foreignID: String, _ status: Int) -> Int { calls.withLock { $0["\(foreignID)/\(status)"] ?? 0 } }
    var totalCalls: Int { calls.withLock { $0.values.reduce(0, +) } }

    /// With `externalB`, B's step is done by workers (`complete` to Done or Failed).
    func definition(timeoutOnB: Int64? = nil, externalB: Bool = false) throws -> WorkflowDefinition {
        var b = WorkflowBuilder(name: Self.name)
        b.status("A", code: Self.a)
        b.status("B", code: Self.b)
        b.status("Done", code: Self.done, terminal: true)
        b.status("Failed", code: Self.failed, terminal: true)
        b.initial(Self.a)
        b.step(from: Self.a, to: [Self.b, Self.failed]) { [self] input in
            let id = input.foreignID
            calls.withLock { $0["\(id)/\(Self.a)", default: 0] += 1 }
            if id.hasPrefix("fail-always") { throw StepError(description: "gateway down for \(id)") }
            if id.hasPrefix("fail-") {
                let n = Int(id.split(separator: "-")[1]) ?? 0
                let failedSoFar = failures.withLock { f -> Int in
                    defer { f[id, default: 0] += 1 }
                    return f[id] ?? 0
                }
                if failedSoFar < n { throw StepError(description: "transient failure \(failedSoFar + 1)") }
            }
            if id.hasPrefix("reject") { return .next(Self.failed, reason: "rejected") }
            if id.hasPrefix("bad") { return .next(Self.done) }
            return .next(Self.b, object: input.object + Array("+a".utf8))
        }
        if externalB {
            b.externalStep(from: Self.b, to: [Self.done, Self.failed])
            b.checkObjects { object, _ in
                if object.first == UInt8(ascii: "!") { throw StepError(description: "objects may not start with !") }
            }
        } else {
            b.step(from: Self.b, to: [Self.done, Self.failed]) { [self] input in
                calls.withLock { $0["\(input.foreignID)/\(Self.b)", default: 0] += 1 }
                if input.foreignID.hasPrefix("gate") { await gate.wait() }
                return .next(Self.done, object: input.object + Array("+b".utf8))
            }
        }
        if let timeoutOnB { b.timeout(in: Self.b, after: timeoutOnB, to: Self.failed, reason: "timed out") }
        b.onRunState(.completed) { [self] run in hookCalls.withLock { $0.append("completed:\(run.foreignID)") } }
        b.onRunState(.paused) { [self] run in hookCalls.withLock { $0.append("paused:\(run.foreignID)") } }
        b.erase { _ in Array("{}".utf8) }
        return try b.build()
    }
}
