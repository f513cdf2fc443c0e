import Synchronization
import WorkflowEngine
import WorkflowWire

/// Counters of the server itself. Requests are counted on the loop thread; errors where they
/// are mapped to a wire code (engine tasks and the loop), hence the lock.
final class ServerMetrics: Sendable {
    private struct State {
        var requests: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var connectionsAccepted = 0
        var connectionsRefused = 0
    }
    private let state = Mutex(State())

    func request(_ op: String) { state.withLock { $0.requests[op, default: 0] += 1 } }
    func error(_ code: WireError.Code) { state.withLock { $0.errors[code.name, default: 0] += 1 } }
    func accepted() { state.withLock { $0.connectionsAccepted += 1 } }
    func refused() { state.withLock { $0.connectionsRefused += 1 } }

    /// The server's families; `connections`, `subscriptions` and `uptime` are read on the loop
    /// thread by the caller.
    func families(connections: Int, subscriptions: Int, uptimeSeconds: Double) -> [MetricFamily] {
        typealias F = MetricFamily
        let s = state.withLock { $0 }
        return [
            F("workflowd_connections", .gauge, help: "Open client connections.", value: Double(connections)),
            F("workflowd_connections_accepted_total", .counter, help: "Client connections accepted.", value: Double(s.connectionsAccepted)),
            F("workflowd_connections_refused_total", .counter, help: "Client connections refused (at the connection limit, or a peer not on the allow-list).", value: Double(s.connectionsRefused)),
            F("workflowd_subscriptions", .gauge, help: "Live subscriptions.", value: Double(subscriptions)),
            F(
                "workflowd_requests_total", .counter, help: "Requests dispatched, by op.",
                samples: Operation.names.map { .init(labels: [.init("op", $0)], value: Double(s.requests[$0] ?? 0)) }),
            F(
                "workflowd_request_errors_total", .counter,
                help: "Error replies to dispatched requests, by code (framing errors are not counted here).",
                samples: WireError.Code.all.map { .init(labels: [.init("code", $0.name)], value: Double(s.errors[$0.name] ?? 0)) }),
            F("workflowd_uptime_seconds", .gauge, help: "Seconds since the server started.", value: uptimeSeconds),
        ]
    }
}
