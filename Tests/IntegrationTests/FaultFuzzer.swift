import WorkflowTestSupport
import WorkflowWire

/// The line generator of `FaultTests.fuzzer`: random and mutated request lines from a fixed
/// seed, so a failure is replayed by setting `WORKFLOWD_FUZZ_SEED` (the sequence of lines
/// depends on the seed alone, never on the server's replies).

/// SplitMix64: small, fast and the same on every platform.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What the fuzzer sends next.
enum FuzzCase {
    /// A whole line (no `\n` inside; the sender adds `\n` or `\r\n`).
    case line([UInt8])
    /// More than `max_line` bytes: `LINE_TOO_LONG`, then the server closes.
    case tooLong([UInt8])
    /// Bytes without a line end, then the client closes its socket (no reply expected).
    case partialThenClose([UInt8])
    /// Bytes without a line end, then the client shuts down its writing side: the server answers
    /// the unfinished last line (it is not blank) and closes.
    case partialThenHalfClose([UInt8])
}

struct FuzzGenerator {
    var rng: SplitMix64
    let maxLine: Int

    init(seed: UInt64, maxLine: Int) {
        rng = SplitMix64(seed: seed)
        self.maxLine = maxLine
    }

    /// Server's rule (SessionStateMachine): a line of spaces, tabs and CRs only is ignored.
    static func isBlank(_ line: [UInt8]) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
    }

    private mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    private mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }
    private mutating func pick<T>(_ items: [T]) -> T { items[int(0...(items.count - 1))] }

    mutating func next() -> FuzzCase {
        let c = pickCase()
        // A mutation may have grown a line past max_line: the server treats it as such.
        if case .line(let line) = c, line.count > maxLine { return .tooLong(line) }
        return c
    }

    private mutating func pickCase() -> FuzzCase {
        let roll = int(0...9_999)
        switch roll {
        case 0..<4: return .tooLong(tooLongLine())
        case 4..<10: return .partialThenClose(partialLine())
        case 10..<16: return .partialThenHalfClose(partialLine())
        case 16..<1_350: return .line(randomBytes())
        case 1_350..<1_600: return .line(deepNesting())
        case 1_600..<2_100: return .line(hugeNumbers())
        case 2_100..<2_600: return .line(nulAndEncoding())
        case 2_600..<3_000: return .line(pick([[], [0x20], [0x09, 0x20], [0x0D], Array("   \t".utf8)]))
        case 3_000..<5_000: return .line(validRequest().bytes)
        case 5_000..<8_000: return .line(structurallyMutated())
        default: return .line(byteMutated())
        }
    }

    // MARK: - Raw material

    /// Random bytes of any value but `\n` (invalid UTF-8, NUL, control bytes included).
    private mutating func randomBytes() -> [UInt8] {
        let n = pick([0, 1, 2, 5, 20, 100, 1_000, 10_000])
        let count = int(0...n)
        if chance(50) {
            return (0..<count).map { _ in
                let b = UInt8.random(in: 0...255, using: &rng)
                return b == 0x0A ? 0x0B : b
            }
        }
        // Printable ASCII with JSON punctuation, so some of it gets past the first byte.
        let alphabet = Array(#"{}[]":,0123456789.-+eE truefalsnul\"op"#.utf8)
        return (0..<count).map { _ in alphabet[int(0...(alphabet.count - 1))] }
    }

    private mutating func deepNesting() -> [UInt8] {
        let depth = pick([63, 64, 65, 1_000, 100_000, int(1...200_000)])
        switch int(0...5) {
        case 0: return [UInt8](repeating: UInt8(ascii: "["), count: depth)
        case 1:
            return [UInt8](repeating: UInt8(ascii: "["), count: depth) + [UInt8](repeating: UInt8(ascii: "]"), count: depth)
        case 2: return Array(String(repeating: #"{"a":"#, count: min(depth, 150_000)).utf8)
        case 3:
            let inner = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            return Array(#"{"op":"ping","id":1,"x":\#(inner)}"#.utf8)
        case 4:
            let inner = String(repeating: #"{"k":"#, count: depth) + "1" + String(repeating: "}", count: depth)
            return Array(#"{"op":"submit","order":\#(inner)}"#.utf8)
        default:
            let inner = String(repeating: "[{", count: depth / 2)
            return Array(#"{"op":"list","status":\#(inner)"#.utf8)
        }
    }

    private mutating func hugeNumber() -> String {
        switch int(0...9) {
        case 0: return String(repeating: "9", count: pick([20, 400, 50_000]))
        case 1: return "-" + String(repeating: "9", count: pick([19, 20, 400]))
        case 2: return "1e999999999"
        case 3: return "-1e-999999999"
        case 4: return "0." + String(repeating: "0", count: 10_000) + "1"
        case 5: return "9223372036854775807"
        case 6: return "9223372036854775808"
        case 7: return "-9223372036854775809"
        case 8: return "1" + String(repeating: "0", count: int(1...30)) + ".5e" + String(int(-400...400))
        default: return pick(["-0", "0e0", "1E+2", "01", "1.", ".5", "+1", "0x10", "NaN", "Infinity", "-", "1e", "1.5e+"])
        }
    }

    private mutating func hugeNumbers() -> [UInt8] {
        let n = hugeNumber()
        let templates = [
            #"{"op":"ping","id":\#(n)}"#, #"{"op":"list","limit":\#(n)}"#, #"{"op":"subscribe","from":\#(n)}"#,
            #"{"op":"await","foreign_id":"fz-1","timeout_ms":\#(n)}"#, #"{"op":"unsubscribe","sub":\#(n)}"#,
            #"{"op":"get","run_id":\#(n)}"#, #"{"op":"list","status":[\#(n)],"run_state":[\#(n)]}"#,
            #"{"op":"submit","order":{"id":"fz-n","customer_name":"A","email":"a@b.c","items":[{"product_id":"p","name":"n","quantity":\#(n),"price":\#(n)}],"total":\#(n)}}"#,
            #"{"op":"list","created_after":\#(n)}"#, n,
        ]
        return Array(pick(templates).utf8)
    }

    private mutating func nulAndEncoding() -> [UInt8] {
        let bad: [[UInt8]] = [
            [0x00], [0xFF], [0xFE, 0xFF], [0xC0, 0x80], [0xC3], [0xE2, 0x82], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
            [0xF8, 0x88, 0x80, 0x80, 0x80], [0x80], [0xEF, 0xBB, 0xBF],
        ]
        let b = pick(bad)
        switch int(0...5) {
        case 0: return Array(#"{"op":"ping","id":""#.utf8) + b + Array(#""}"#.utf8)
        case 1: return Array(#"{"op":""#.utf8) + b + Array(#"ping"}"#.utf8)
        case 2: return b + Array(#"{"op":"ping"}"#.utf8)
        case 3: return Array(#"{"op":"ping"}"#.utf8) + b
        case 4:
            let escape = pick([#"\u0000"#, #"\ud800"#, #"\udc00"#, #"\ud800\u0041"#, #"\uD83D\uDE00"#, #"\u00"#, #"\x41"#, #"\"#, #"\uzzzz"#])
            return Array(#"{"op":"submit","order":{"id":"fz-\#(escape)","customer_name":"\#(escape)","email":"a@b.c","items":[{"product_id":"p","name":"n","quantity":1,"price":1}],"total":1}}"#.utf8)
        default:
            var line = validRequest().bytes
            let at = int(0...line.count)
            line.insert(contentsOf: b, at: at)
            return line
        }
    }

    // MARK: - Valid requests and their mutations

    private mutating func foreignID() -> JSON { .string("fz-\(int(0...19))") }

    private mutating func order() -> JSON {
        .object([
            .init("id", foreignID()), .init("customer_name", .string(pick(["Ann", "", "Zoë Ünïcode", "x"]))),
            .init("email", .string(pick(["ann@example.com", "", "not-an-email"]))),
            .init(
                "items",
                .array([
                    .object([
                        .init("product_id", .string("p1")), .init("name", .string("Laptop")),
                        .init("quantity", .number(String(int(0...3)))), .init("price", .number(pick(["1299.99", "0", "0.01"]))),
                    ])
                ])),
            .init("total", .number(pick(["1299.99", "0", "2599.98", "-1"]))),
        ])
    }

    private mutating func runRef() -> [JSON.Member] {
        if chance(80) { return [.init("foreign_id", foreignID())] }
        return [.init("run_id", .string(pick(["01J0000000000000000000000", "", "x"])))]
    }

    private mutating func statusList() -> JSON {
        .array((0..<int(0...3)).map { _ in
            chance(50)
                ? .string(pick(["OrderCreated", "OrderCompleted", "PaymentFailed", "Nope"])) : .number(String(int(0...9)))
        })
    }

    mutating func validRequest() -> JSON {
        var members: [JSON.Member]
        switch int(0...19) {
        case 0: members = [.init("op", .string("hello"))]
        case 1, 2: members = [.init("op", .string("ping"))]
        case 3, 4, 5: members = [.init("op", .string("submit")), .init("order", order())]
        case 6:
            members = [
                .init("op", .string("trigger")), .init("workflow", .string("order-processor")), .init("foreign_id", foreignID()),
                .init("object", order()),
            ]
        case 7, 8: members = [.init("op", .string("get"))] + runRef()
        case 9:
            members = [
                .init("op", .string("list")), .init("status", statusList()), .init("limit", .number(String(int(1...50)))),
                .init("order", .string(pick(["asc", "desc"]))),
            ]
        case 10: members = [.init("op", .string("history"))] + runRef()
        case 11:
            members =
                [.init("op", .string("await"))] + runRef() + [
                    .init("status", statusList()), .init("timeout_ms", .number(String(int(0...50)))),
                ]
        case 12:
            // Mostly "now": a subscription from the start of a long log costs the reader, not the server.
            let from: JSON = chance(80) ? .string("now") : (chance(50) ? .string("earliest") : .number(String(int(0...100_000))))
            members = [.init("op", .string("subscribe")), .init("from", from), .init("foreign_id", foreignID())]
        case 13: members = [.init("op", .string("unsubscribe")), .init("sub", .number(String(int(0...5))))]
        case 14, 15:
            members =
                [.init("op", .string(pick(["pause", "resume", "cancel", "delete_data"])))] + runRef() + [
                    .init("reason", .string("fuzz"))
                ]
        case 16: members = [.init("op", .string("stats"))]
        case 17: members = [.init("op", .string("graph"))]
        case 18: members = [.init("op", .string("health"))]
        default: members = [.init("op", .string(pick(["", "PING", "nope", "ping ", "submit\u{0}"])))]
        }
        if chance(60) {
            members.insert(.init("id", chance(50) ? .number(String(int(0...1_000_000))) : .string("f\(int(0...999))")), at: int(0...1))
        }
        return .object(members)
    }

    /// A random JSON value of any type, some of them hostile.
    private mutating func randomValue(depth: Int = 0) -> JSON {
        switch int(0...11) {
        case 0: return .null
        case 1: return .bool(chance(50))
        case 2: return .number(String(int(-1_000...1_000_000)))
        case 3: return .number(hugeNumber())
        case 4: return .string(pick(["", "x", "OrderCompleted", "now", "earliest", "asc", "order-processor", "fz-1"]))
        case 5: return .string(String(repeating: "ü", count: pick([100, 100, 10_000, 100_000])))
        case 6: return .string("a\u{0}b\u{1F}c\u{7F}\u{FFFF}\u{10FFFF}")
        case 7: return .array(depth > 3 ? [] : (0..<int(0...4)).map { _ in randomValue(depth: depth + 1) })
        case 8:
            return .object(depth > 3 ? [] : (0..<int(0...4)).map { _ in .init(pick(["op", "id", "a", ""]), randomValue(depth: depth + 1)) })
        case 9: return .number(pick(["1.5", "-0", "1e3", "3.0"]))
        case 10:
            var v: JSON = .null
            for _ in 0..<pick([10, 64, 65, 500]) { v = .array([v]) }
            return v
        default: return order()
        }
    }

    /// Mutates one member somewhere in `value` (recursing into objects and arrays).
    private mutating func mutate(_ value: JSON, depth: Int = 0) -> JSON {
        switch value {
        case .object(var members) where !members.isEmpty && depth < 4:
            let i = int(0...(members.count - 1))
            switch int(0...9) {
            case 0: members.remove(at: i)
            case 1: members.append(.init(pick(["unknown", "op", "id", "order", "", "\u{0}"]), randomValue()))
            case 2: members.append(members[i])  // duplicate key
            case 3: members[i].key = pick(["OP", "op ", "", members[i].key + "x", "\u{0}"])
            case 4, 5, 6: members[i].value = randomValue()
            default: members[i].value = mutate(members[i].value, depth: depth + 1)
            }
            return .object(members)
        case .array(var items) where !items.isEmpty && depth < 4:
            let i = int(0...(items.count - 1))
            if chance(50) { items[i] = mutate(items[i], depth: depth + 1) } else { items[i] = randomValue() }
            return .array(items)
        default:
            return randomValue()
        }
    }

    /// An `await` must not wait long: a reply that may legitimately take minutes is no test of
    /// the server staying responsive. Its `timeout_ms` is clamped when it is a plain integer.
    private func clampAwait(_ value: JSON) -> JSON {
        guard case .object(var members) = value, members.contains(where: { $0.key == "op" && $0.value == .string("await") })
        else { return value }
        var found = false
        for i in members.indices where members[i].key == "timeout_ms" {
            found = true
            if let t = members[i].value.int64Value, t > 50 { members[i].value = .number("50") }
        }
        if !found { members.append(.init("timeout_ms", .number("20"))) }
        return .object(members)
    }

    private mutating func structurallyMutated() -> [UInt8] {
        var v = validRequest()
        for _ in 0..<int(1...3) { v = mutate(v) }
        return clampAwait(v).bytes
    }

    private mutating func byteMutated() -> [UInt8] {
        var request = validRequest()
        while request["op"] == .string("await") { request = validRequest() }
        var line = request.bytes
        for _ in 0..<int(1...4) {
            guard !line.isEmpty else { break }
            let at = int(0...(line.count - 1))
            switch int(0...6) {
            case 0: line[at] ^= UInt8(1) << UInt8(int(0...7))
            case 1: line.insert(UInt8.random(in: 0...255, using: &rng), at: at)
            case 2: line.remove(at: at)
            case 3: line.removeSubrange(at...)
            case 4: line.insert(contentsOf: pick([[0x22], [0x5C], [0x7B], [0x7D], [0x2C], [0x00], [0xFF]]), at: at)
            case 5: line[at] = pick([0x22, 0x3A, 0x2C, 0x5B, 0x5D, 0x20])
            default: line.insert(contentsOf: line[at...].prefix(int(1...20)), at: at)
            }
        }
        if line.contains(0x0A) { line = line.map { $0 == 0x0A ? 0x20 : $0 } }
        // A mutation that turned another op into a long await is not worth the wait; `await`
        // cannot appear by a few byte changes from the other templates' bytes anyway.
        return line
    }

    private mutating func tooLongLine() -> [UInt8] {
        let count = maxLine + int(1...4_096)
        var line = Array(#"{"op":"ping","pad":""#.utf8)
        line += [UInt8](repeating: UInt8(ascii: "a"), count: count - line.count - 2)
        line += Array(#""}"#.utf8)
        return line
    }

    private mutating func partialLine() -> [UInt8] {
        var line = validRequest().bytes
        line.removeSubrange(int(1...(line.count - 1))...)
        // Still unfinished JSON (it lost at least its closing brace), never blank.
        return line
    }
}
