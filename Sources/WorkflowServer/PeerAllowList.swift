/// Which local users may talk to the server, beyond the socket file's permissions: a peer is
/// admitted when its user id or its group id is listed. The ids are the kernel's view of the
/// process that connected (`SO_PEERCRED`: effective uid and gid at `connect(2)`; supplementary
/// groups do not count).
public struct PeerAllowList: Sendable, Equatable {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    public init(uids: Set<UInt32> = [], gids: Set<UInt32> = []) {
        self.uids = uids
        self.gids = gids
    }

    public func admits(uid: UInt32, gid: UInt32) -> Bool {
        uids.contains(uid) || gids.contains(gid)
    }

    /// Why a list of ids does not parse; the message quotes the offending item.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Parses a comma-separated list of numeric ids, such as `0,1000` (spaces around items are
    /// ignored). An empty list, an empty item, a name, a negative number or `4294967295` (the
    /// kernel's "no id") is an error.
    public static func parseIDs(_ text: String) throws(ParseError) -> Set<UInt32> {
        var ids: Set<UInt32> = []
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
        for raw in items {
            var item = raw
            while item.first == " " || item.first == "\t" { item = item.dropFirst() }
            while item.last == " " || item.last == "\t" { item = item.dropLast() }
            let s = String(item)
            guard !s.isEmpty else {
                throw ParseError(message: items.count == 1 ? "the list is empty (expected ids such as 0,1000)" : "'\(text)' has an empty item (expected ids such as 0,1000)")
            }
            guard s.allSatisfy({ $0.isASCII && $0.isNumber }), let id = UInt32(s), id != UInt32.max else {
                throw ParseError(message: "'\(s)' is not a numeric id from 0 to 4294967294")
            }
            ids.insert(id)
        }
        return ids
    }
}

/// How often a refused peer is logged: the first refusal of a (uid, gid) is a warning, later
/// ones within `window` milliseconds are only counted, and the next warning after the window
/// says how many were not logged. A local user retrying in a loop thus cannot flood the log;
/// the `refused` metric still counts every refusal. Memory is bounded by `maxPeers`.
struct RefusalLogPolicy {
    struct Decision: Equatable {
        /// Log a warning now.
        var warn: Bool
        /// Refusals of this peer not logged since its previous warning (when `warn`).
        var suppressed: Int
    }

    let window: UInt64
    let maxPeers: Int
    private var peers: [UInt64: (warnedAt: UInt64, suppressed: Int)] = [:]

    init(window: UInt64 = 60_000, maxPeers: Int = 256) {
        self.window = window
        self.maxPeers = maxPeers
    }

    /// `uid`/`gid` nil: the peer's credentials were unknown (one key for all such peers).
    mutating func refused(uid: UInt32?, gid: UInt32?, now: UInt64) -> Decision {
        let key = uid.map { UInt64($0) << 32 | UInt64(gid ?? 0) } ?? UInt64.max
        if let entry = peers[key], now &- entry.warnedAt < window {
            peers[key] = (entry.warnedAt, entry.suppressed + 1)
            return Decision(warn: false, suppressed: entry.suppressed + 1)
        }
        if peers[key] == nil, peers.count >= maxPeers { peers.removeAll(keepingCapacity: true) }
        let suppressed = peers[key]?.suppressed ?? 0
        peers[key] = (now, 0)
        return Decision(warn: true, suppressed: suppressed)
    }
}
