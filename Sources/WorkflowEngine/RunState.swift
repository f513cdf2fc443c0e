/// The engine-level state of a run, independent of the workflow's own statuses.
/// Integer codes are those of the seed (luno/workflow), so SQL reads the same.
public enum RunState: Int, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case initiated = 1
    case running = 2
    case paused = 3
    case cancelled = 4
    case completed = 5
    case dataDeleted = 6
    case requestedDataDeleted = 7

    public var name: String {
        switch self {
        case .initiated: "Initiated"
        case .running: "Running"
        case .paused: "Paused"
        case .cancelled: "Cancelled"
        case .completed: "Completed"
        case .dataDeleted: "DataDeleted"
        case .requestedDataDeleted: "RequestedDataDeleted"
        }
    }

    public var description: String { name }

    public init?(name: String) {
        guard let s = RunState.allCases.first(where: { $0.name == name }) else { return nil }
        self = s
    }

    /// Unfinished runs are the ones the engine still moves (or may move after a resume).
    /// At most one unfinished run exists per (workflow, foreign id); the database enforces it.
    public var isFinished: Bool {
        switch self {
        case .initiated, .running, .paused: false
        case .cancelled, .completed, .dataDeleted, .requestedDataDeleted: true
        }
    }

    /// States whose runs retention may delete once they are old enough: finished and settled.
    /// (RequestedDataDeleted is finished but waits for its data to be erased; it is kept.)
    public static let prunable: [RunState] = [.cancelled, .completed, .dataDeleted]

    /// Codes of the unfinished states, for SQL.
    public static let unfinishedCodes: [Int] = RunState.allCases.filter { !$0.isFinished }.map(\.rawValue)
}
