import Logging
import Synchronization

/// Failures of the engine's background calls to the store, logged once per episode: the first
/// failure after a healthy stretch is a warning that names the call and the error, the ones
/// that follow are debug lines, and the first success once no call has failed for `quiet` is
/// one notice with how long the episode lasted and how many calls failed. An outage of the
/// database (restart, "too many connections", a network timeout) is thus two lines in the log,
/// not one per retry — also when it is partial and some calls succeed in the middle of it.
/// A call that began before the episode ended and fails after it (on a silent network it waits
/// for its read timeout, long after other calls succeed again) belongs to that episode: it is a
/// debug line, not the start of a new one.
final class StoreHealth: Sendable {
    private struct State {
        var failingSince: ContinuousClock.Instant?
        var lastFailure: ContinuousClock.Instant?
        var failures = 0
        var episodes = 0
        /// When the last episode ended.
        var recoveredAt: ContinuousClock.Instant?
    }
    private let state = Mutex(State())
    private let logger: Logger
    private let counter: @Sendable () -> Void
    private let quiet: Duration

    init(logger: Logger, quiet: Duration = .seconds(3), counter: @escaping @Sendable () -> Void) {
        self.logger = logger
        self.quiet = quiet
        self.counter = counter
    }

    /// A background call that began at `started` failed (it will be retried).
    func failed(
        _ what: String, _ error: any Error, started: ContinuousClock.Instant, metadata: Logger.Metadata = [:]
    ) {
        counter()
        let first = state.withLock { s -> Bool in
            if s.failingSince == nil, let recovered = s.recoveredAt, started < recovered {
                return false  // a straggler of the episode that has ended
            }
            s.failures += 1
            s.lastFailure = .now
            guard s.failingSince == nil else { return false }
            s.failingSince = .now
            s.episodes += 1
            return true
        }
        var m = metadata
        m["call"] = "\(what)"
        m["error"] = "\(EngineCore.describe(error))"
        if first {
            logger.warning("database calls are failing; retrying with back-off until they succeed", metadata: m)
        } else {
            logger.debug("database call failed again", metadata: m)
        }
    }

    /// A background call succeeded; ends an episode if one was going on.
    func succeeded() {
        let ended = state.withLock { s -> (Duration, Int)? in
            guard let since = s.failingSince, let last = s.lastFailure, last.duration(to: .now) >= quiet else { return nil }
            let r = (since.duration(to: last), s.failures)
            s.failingSince = nil
            s.failures = 0
            s.recoveredAt = .now
            return r
        }
        guard let (duration, failures) = ended else { return }
        let c = duration.components
        let seconds = Double(c.seconds) + Double(c.attoseconds) / 1e18
        logger.notice(
            "database calls succeed again",
            metadata: ["outage.seconds": "\(Int((seconds * 10).rounded()) / 10)", "failed.calls": "\(failures)"])
    }

    /// Episodes so far and whether one is going on (for tests and health).
    var snapshot: (episodes: Int, failing: Bool) { state.withLock { ($0.episodes, $0.failingSince != nil) } }
}
