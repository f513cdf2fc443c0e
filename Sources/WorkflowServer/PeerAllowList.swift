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
