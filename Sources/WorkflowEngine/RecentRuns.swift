import Synchronization

/// The runs this instance committed most recently, each as of the version it committed.
///
/// Every change of a run raises its version by exactly 1, so a run id and a version name one
/// content for good: a copy kept here is never stale for *that* version, whoever changes the run
/// later. A consumer that gets an event for (run, version) can therefore take the run from here
/// instead of reading it back; if the run has moved on meanwhile, the step's conditional update
/// finds a newer version and is refused, as it would be after a read. Only committed writes are
/// added (never an update whose commit failed or whose outcome is unknown).
///
/// Bounded twice: at most `capacity` runs and `maxBytes` of objects and meta, the oldest
/// insertions forgotten first; a run larger than a sixteenth of `maxBytes` is not kept. A miss
/// costs one read.
final class RecentRuns: Sendable {
    private struct State {
        var runs: [String: Run] = [:]
        /// Insertion order: a ring of `capacity` slots, `count` of them used from `head`.
        var slots: [String?]
        var head = 0
        var count = 0
        var bytes = 0
    }

    let capacity: Int
    let maxBytes: Int
    private let state: Mutex<State>

    init(capacity: Int, maxBytes: Int = 32 << 20) {
        self.capacity = max(0, capacity)
        self.maxBytes = max(0, maxBytes)
        self.state = Mutex(State(slots: Array(repeating: nil, count: max(0, capacity))))
    }

    /// What a run costs here: its object and meta, and a little for the rest.
    static func size(_ run: Run) -> Int { run.object.count + (run.meta?.count ?? 0) + 256 }

    /// Remembers committed runs (a later version replaces an earlier one).
    func put(_ runs: some Sequence<Run>) {
        guard capacity > 0 else { return }
        let largest = maxBytes / 16
        state.withLock { s in
            for run in runs {
                let size = Self.size(run)
                if let old = s.runs[run.runID] {
                    // Already has a slot in the ring: keep the newer version, or forget a run
                    // grown too large.
                    guard old.version < run.version else { continue }
                    s.bytes -= Self.size(old)
                    if size > largest {
                        s.runs[run.runID] = nil
                    } else {
                        s.runs[run.runID] = run
                        s.bytes += size
                    }
                } else {
                    guard size <= largest else { continue }
                    if s.count == capacity { Self.evictOldest(&s, capacity) }
                    s.slots[(s.head + s.count) % capacity] = run.runID
                    s.count += 1
                    s.runs[run.runID] = run
                    s.bytes += size
                }
                while s.bytes > maxBytes && s.count > 0 { Self.evictOldest(&s, capacity) }
            }
        }
    }

    private static func evictOldest(_ s: inout State, _ capacity: Int) {
        if let id = s.slots[s.head], let run = s.runs.removeValue(forKey: id) { s.bytes -= size(run) }
        s.slots[s.head] = nil
        s.head = (s.head + 1) % capacity
        s.count -= 1
    }

    /// The run as committed at exactly `version`, if this instance wrote it recently.
    func run(_ runID: String, version: Int64) -> Run? {
        guard capacity > 0 else { return nil }
        return state.withLock { s in
            guard let run = s.runs[runID], run.version == version else { return nil }
            return run
        }
    }

    /// Runs and bytes kept (for tests).
    var usage: (runs: Int, bytes: Int) { state.withLock { ($0.runs.count, $0.bytes) } }
    var count: Int { usage.runs }
}
