import WorkflowWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Text output helpers: values as plain text, aligned tables, colour on terminals only.
enum Output {
    /// A member as text: strings without quotes, null as "-", anything else as compact JSON.
    static func text(_ value: JSON?) -> String {
        switch value {
        case nil, .null?: "-"
        case .string(let s)?: s
        case .number(let n)?: n
        case .bool(let b)?: b ? "true" : "false"
        case let other?: other.description
        }
    }

    /// Columns padded to the widest cell (by characters); the last column is not padded.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        var widths = [Int](repeating: 0, count: header.count)
        for row in all {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        var out = ""
        for row in all {
            var line = ""
            for (i, cell) in row.enumerated() {
                if i == row.count - 1 {
                    line += cell
                } else {
                    line += cell + String(repeating: " ", count: widths[i] - cell.count + 2)
                }
            }
            while line.hasSuffix(" ") { line.removeLast() }
            out += line + "\n"
        }
        return out
    }

    static let stdoutIsTerminal: Bool = isatty(STDOUT_FILENO) == 1 && getenv("NO_COLOR") == nil

    /// `text` in the colour that fits a status or run state, when stdout is a terminal.
    static func coloured(_ text: String, for status: String, runState: String) -> String {
        guard stdoutIsTerminal else { return text }
        let code: String
        switch (status, runState) {
        case ("OrderCompleted", _): code = "32"  // green
        case ("OrderRejected", _), ("PaymentFailed", _), ("FulfillmentFailed", _): code = "31"  // red
        case (_, "Paused"), (_, "Cancelled"): code = "33"  // yellow
        case (_, "DataDeleted"), (_, "RequestedDataDeleted"): code = "35"  // magenta
        default: code = "36"  // cyan
        }
        return "\u{1B}[\(code)m\(text)\u{1B}[0m"
    }

    /// A run as `key: value` lines.
    static func run(_ run: JSON?) -> String {
        guard let run else { return "" }
        var out = ""
        for key in ["workflow", "foreign_id", "run_id", "status", "run_state", "version", "reason", "created_at", "updated_at"] {
            out += "\(key + ":")\(String(repeating: " ", count: max(1, 12 - key.count)))\(text(run[key]))\n"
        }
        out += "object:     \(text(run["object"]))\n"
        return out
    }
}
