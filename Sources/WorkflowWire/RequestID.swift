/// A request's `id`: a string or a number, echoed exactly as the client wrote it (numbers keep
/// their text, so `1e3` comes back as `1e3`, and a 30-digit id is not rounded).
public enum RequestID: Sendable, Hashable, CustomStringConvertible {
    case string(String)
    case number(String)

    public var description: String {
        switch self {
        case .string(let s): "\"\(s)\""
        case .number(let n): n
        }
    }

    func write(to w: inout JSONWriter) {
        switch self {
        case .string(let s): w.string(s)
        case .number(let n): w.number(text: n)
        }
    }
}
