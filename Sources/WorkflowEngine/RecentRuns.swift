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
/// Bounded: at most `capacity` runs, the oldest insertions forgotten first; a miss costs one read.
final class RecentRuns: Sendable {
    private struct State {
        var runs: [String: Run] = [:]
        /// Insertion order, a ring of `capacity` slots.
        var order: [String?]
        var next = 0
    }

    let capacity: Int
    private let state: Mutex<State>

    init(capacity: Int) {
        self.capacity = max(0, capacity)
        self.state = Mutex(State(order: Array(repeating: nil, count: max(0, capacity))))
    }

    /// Remembers committed runs (a later version replaces an earlier one).
    func put(_ runs: some Sequence<Run>) {
        guard capacity > 0 else { return }
        state.withLock { s in
            for run in runs {
                if let old = s.runs[run.runID] {
                    if old.version < run.version { s.runs[run.runID] = run }
                    continue  // already has a slot in the ring
                }
                if let evicted = s.order[s.next] { s.runs[evicted] = nil }
                s.order[s.next] = run.runID
                s.next = (s.next + 1) % capacity
                s.runs[run.runID] = run
            }
        }
    }

    /// The run as committed at exactly `version`, if this instance wrote it recently.
    func run(_ runID: String, version: Int64) -> Run? {
        guard capacity > 0 else { return nil }
        return state.withLock { s in
            guard let run = s.runs[runID], run.version == version else { return nil }
            return run
        }
    }

    var count: Int { state.withLock { $0.runs.count } }
}
