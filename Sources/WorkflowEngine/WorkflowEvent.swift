/// What an event says about a run; the outbox row carries this, the event log adds `seq`.
public struct EventData: Sendable, Equatable, Hashable {
    public var workflow: String
    public var foreignID: String
    public var runID: String
    public var status: Int
    public var runState: RunState
    /// The run's version after the change this event announces.
    public var version: Int64
    public var at: Timestamp
    public var reason: String?

    public init(
        workflow: String, foreignID: String, runID: String, status: Int, runState: RunState,
        version: Int64, at: Timestamp, reason: String?
    ) {
        self.workflow = workflow
        self.foreignID = foreignID
        self.runID = runID
        self.status = status
        self.runState = runState
        self.version = version
        self.at = at
        self.reason = reason
    }
}

/// An event in the gap-free log `workflow_events`.
public struct WorkflowEvent: Sendable, Equatable, Hashable {
    /// Position in the log: increases by exactly 1 in commit order.
    public var seq: Int64
    public var data: EventData

    public init(seq: Int64, data: EventData) {
        self.seq = seq
        self.data = data
    }

    public var workflow: String { data.workflow }
    public var foreignID: String { data.foreignID }
    public var runID: String { data.runID }
    public var status: Int { data.status }
    public var runState: RunState { data.runState }
    public var version: Int64 { data.version }
    public var at: Timestamp { data.at }
    public var reason: String? { data.reason }
}

/// Which events a reader wants. Empty arrays and nil mean "any".
public struct EventFilter: Sendable, Equatable {
    public var workflow: String?
    public var foreignID: String?
    public var runID: String?
    public var statuses: [Int]
    public var runStates: [RunState]
    /// Only runs whose `Partition.of(runID:count:)` equals `index`.
    public var partition: Partition?

    public init(
        workflow: String? = nil, foreignID: String? = nil, runID: String? = nil, statuses: [Int] = [],
        runStates: [RunState] = [], partition: Partition? = nil
    ) {
        self.workflow = workflow
        self.foreignID = foreignID
        self.runID = runID
        self.statuses = statuses
        self.runStates = runStates
        self.partition = partition
    }

    public func matches(_ e: EventData) -> Bool {
        if let workflow, e.workflow != workflow { return false }
        if let foreignID, e.foreignID != foreignID { return false }
        if let runID, e.runID != runID { return false }
        if !statuses.isEmpty, !statuses.contains(e.status) { return false }
        if !runStates.isEmpty, !runStates.contains(e.runState) { return false }
        if let partition, !partition.contains(runID: e.runID) { return false }
        return true
    }
}

/// A slice of the run-id space. The hash is CRC-32 (IEEE), the same as MariaDB's `CRC32()`,
/// so the database can filter by partition inside the index range scan.
public struct Partition: Sendable, Equatable, Hashable {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        precondition(count >= 1 && index >= 0 && index < count, "bad partition \(index)/\(count)")
        self.index = index
        self.count = count
    }

    public func contains(runID: String) -> Bool { Int(CRC32.checksum(runID.utf8) % UInt32(count)) == index }
}

public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
