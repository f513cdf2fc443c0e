import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The engine's source of "now". Injected so tests control time instead of sleeping.
public protocol WorkflowClock: Sendable {
    func now() -> Timestamp
}

/// Wall-clock time (`CLOCK_REALTIME`). Leases compare these values across instances, so the
/// machines sharing one database need synchronised clocks (NTP), as any lease scheme does.
public struct SystemClock: WorkflowClock {
    public init() {}
    public func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(milliseconds: Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000)
    }
}

/// A clock that only moves when told to. For tests.
public final class ManualClock: WorkflowClock {
    private let current: Mutex<Timestamp>
    public init(_ start: Timestamp = Timestamp(milliseconds: 1_764_000_000_000)) { current = Mutex(start) }
    public func now() -> Timestamp { current.withLock { $0 } }
    public func advance(milliseconds: Int64) { current.withLock { $0.milliseconds += milliseconds } }
    public func set(_ t: Timestamp) { current.withLock { $0 = t } }
}
