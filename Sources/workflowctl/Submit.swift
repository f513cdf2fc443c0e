import ArgumentParser
import WorkflowClient
import WorkflowWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start order-processor for an order.",
        discussion: """
            The order is a JSON object read from FILE (or stdin when FILE is - or not given), or
            built from --id, --customer-name, --email and one --item PRODUCT_ID:NAME:QUANTITY:PRICE per
            item (NAME may contain colons). The total is the exact sum unless --total gives it.
            Numbers are sent exactly as written.
            """)

    @Argument(help: "A file with the order JSON; - or nothing for stdin.") var file: String?
    @Option(help: "The order id (builds the order from flags).") var id: String?
    @Option(name: .customLong("customer-name"), help: "The customer's name.") var customerName: String?
    @Option(help: "The customer's email.") var email: String?
    @Option(name: .customLong("item"), help: "PRODUCT_ID:NAME:QUANTITY:PRICE (repeatable).") var items: [String] = []
    @Option(help: "The total (default: the sum of quantity × price).") var total: String?
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        let usesFlags = id != nil || customerName != nil || email != nil || !items.isEmpty || total != nil
        if usesFlags {
            if file != nil { throw ValidationError("give an order file or flags, not both") }
            guard id != nil else { throw ValidationError("--id is required when the order is built from flags") }
            guard !items.isEmpty else { throw ValidationError("give at least one --item") }
            _ = try orderFromFlags()
        }
    }

    func run() throws {
        let order: JSON
        if id != nil {
            order = try orderFromFlags()
        } else {
            let bytes = try readInput()
            do {
                order = try JSONParser.parse(bytes)
            } catch {
                throw ValidationError("the order is not JSON: \(error)")
            }
            guard case .object = order else { throw ValidationError("the order must be a JSON object") }
        }
        try global.withConnection { c in
            let reply = try c.request("submit", [.init("order", order)])
            if global.json { printOut(reply.line); return }
            let j = reply.json
            let note = j["created"] == .bool(false) ? " (already running: not created again)" : ""
            printOut("\(Output.text(j["foreign_id"]))  run \(Output.text(j["run_id"]))  \(Output.text(j["status"]))\(note)")
        }
    }

    private func readInput() throws -> [UInt8] {
        var fd = STDIN_FILENO
        if let file, file != "-" {
            fd = open(file, O_RDONLY)
            guard fd >= 0 else { throw ValidationError("cannot open \(file): \(String(cString: strerror(errno)))") }
        }
        defer { if fd != STDIN_FILENO { close(fd) } }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return bytes
    }

    func orderFromFlags() throws -> JSON {
        var itemValues: [JSON] = []
        var sum = ExactDecimal.zero
        for item in items {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 4 else {
                throw ValidationError("--item '\(item)' is not PRODUCT_ID:NAME:QUANTITY:PRICE")
            }
            let product = parts[0]
            let name = parts[1..<(parts.count - 2)].joined(separator: ":")
            guard let quantity = Int64(parts[parts.count - 2]) else {
                throw ValidationError("--item '\(item)': the quantity is not an integer")
            }
            guard let price = ExactDecimal(parts[parts.count - 1]) else {
                throw ValidationError("--item '\(item)': the price is not a decimal number")
            }
            guard let line = price.multiplied(by: quantity), let next = sum.adding(line) else {
                throw ValidationError("--item '\(item)': the total is too large")
            }
            sum = next
            itemValues.append(
                .object([
                    .init("product_id", .string(product)), .init("name", .string(name)),
                    .init("quantity", .number(String(quantity))), .init("price", .number(price.text)),
                ]))
        }
        let totalText: String
        if let total {
            guard ExactDecimal(total) != nil else { throw ValidationError("--total is not a decimal number") }
            totalText = total
        } else {
            totalText = sum.text
        }
        return .object([
            .init("id", .string(id ?? "")), .init("customer_name", .string(customerName ?? "")),
            .init("email", .string(email ?? "")), .init("items", .array(itemValues)),
            .init("total", .number(totalText)),
        ])
    }
}

/// A decimal number as an integer and a scale (digits after the point), for exact totals.
struct ExactDecimal: Equatable {
    var units: Int64
    var scale: Int

    static let zero = ExactDecimal(units: 0, scale: 0)

    init(units: Int64, scale: Int) {
        self.units = units
        self.scale = scale
    }

    /// `12`, `12.5`, `-0.10` (no exponent, no leading zeros beyond one).
    init?(_ text: String) {
        var digits = Substring(text)
        var negative = false
        if digits.hasPrefix("-") { negative = true; digits = digits.dropFirst() }
        let parts = digits.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let intPart = parts.first, !intPart.isEmpty,
            intPart.allSatisfy({ $0.isASCII && $0.isNumber }), intPart == "0" || !intPart.hasPrefix("0")
        else { return nil }
        let frac = parts.count == 2 ? parts[1] : ""
        if parts.count == 2 && (frac.isEmpty || !frac.allSatisfy({ $0.isASCII && $0.isNumber })) { return nil }
        guard frac.count <= 18, let value = Int64(intPart + frac) else { return nil }
        units = negative ? -value : value
        scale = frac.count
    }

    func rescaled(to newScale: Int) -> ExactDecimal? {
        var u = units
        for _ in scale..<newScale {
            let (m, overflow) = u.multipliedReportingOverflow(by: 10)
            if overflow { return nil }
            u = m
        }
        return ExactDecimal(units: u, scale: newScale)
    }

    func adding(_ other: ExactDecimal) -> ExactDecimal? {
        let s = max(scale, other.scale)
        guard let a = rescaled(to: s), let b = other.rescaled(to: s) else { return nil }
        let (sum, overflow) = a.units.addingReportingOverflow(b.units)
        return overflow ? nil : ExactDecimal(units: sum, scale: s)
    }

    func multiplied(by n: Int64) -> ExactDecimal? {
        let (p, overflow) = units.multipliedReportingOverflow(by: n)
        return overflow ? nil : ExactDecimal(units: p, scale: scale)
    }

    /// JSON number text with exactly `scale` fraction digits.
    var text: String {
        let negative = units < 0
        var digits = String(units.magnitude)
        if scale > 0 {
            while digits.count <= scale { digits = "0" + digits }
            digits.insert(".", at: digits.index(digits.endIndex, offsetBy: -scale))
        }
        return (negative ? "-" : "") + digits
    }
}
