/// A point in time as whole milliseconds since the Unix epoch, UTC.
///
/// The protocol and the database both carry millisecond precision, so the engine never holds
/// more than that: a value read back from MariaDB compares equal to the one written.
/// Formatting and parsing are done by hand (civil-from-days) because they sit on the hot path of
/// every row and every event, and `DateFormatter` is both slow and locale-sensitive.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var milliseconds: Int64

    @inlinable public init(milliseconds: Int64) { self.milliseconds = milliseconds }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.milliseconds < b.milliseconds }

    public func adding(milliseconds ms: Int64) -> Timestamp { Timestamp(milliseconds: milliseconds + ms) }

    public var description: String { rfc3339 }

    /// `2026-11-25T06:00:00.123Z`
    public var rfc3339: String { format(dateSeparator: "T", suffix: "Z") }

    /// `2026-11-25 06:00:00.123`, the literal form of a MariaDB `DATETIME(3)` in UTC.
    public var sqlDateTime: String { format(dateSeparator: " ", suffix: "") }

    private func format(dateSeparator: Character, suffix: String) -> String {
        let (days, msOfDay) = Self.floorDivMod(milliseconds, 86_400_000)
        let (y, m, d) = Self.civil(fromDays: days)
        let h = msOfDay / 3_600_000
        let mi = (msOfDay / 60_000) % 60
        let s = (msOfDay / 1000) % 60
        let ms = msOfDay % 1000
        var out = ""
        out.reserveCapacity(24)
        Self.pad(&out, y, 4); out.append("-"); Self.pad(&out, m, 2); out.append("-"); Self.pad(&out, d, 2)
        out.append(dateSeparator)
        Self.pad(&out, h, 2); out.append(":"); Self.pad(&out, mi, 2); out.append(":"); Self.pad(&out, s, 2)
        out.append("."); Self.pad(&out, ms, 3)
        out.append(suffix)
        return out
    }

    /// Parses `YYYY-MM-DD[T| ]HH:MM:SS[.fff…][Z|±HH:MM]`. Without a zone the value is taken as UTC
    /// (that is how the server stores it). Fractions beyond milliseconds are truncated.
    public init?(parsing text: some StringProtocol) {
        let b = Array(text.utf8)
        var i = 0
        func num(_ n: Int) -> Int64? {
            guard i + n <= b.count else { return nil }
            var v: Int64 = 0
            for k in 0..<n {
                let c = b[i + k]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < b.count, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = num(4), expect(45), let mo = num(2), expect(45), let d = num(2) else { return nil }
        guard i < b.count, b[i] == 84 || b[i] == 116 || b[i] == 32 else { return nil }  // T t ' '
        i += 1
        guard let h = num(2), expect(58), let mi = num(2), expect(58), let s = num(2) else { return nil }
        guard (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61 else { return nil }
        var ms: Int64 = 0
        if i < b.count, b[i] == 46 {  // '.'
            i += 1
            var digits = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                if digits < 3 { ms = ms * 10 + Int64(b[i] - 48) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<3 where digits < 3 { ms *= 10 }
        }
        var offsetMinutes: Int64 = 0
        if i < b.count {
            if b[i] == 90 || b[i] == 122 {  // Z z
                i += 1
            } else if b[i] == 43 || b[i] == 45 {  // + -
                let sign: Int64 = b[i] == 45 ? -1 : 1
                i += 1
                guard let oh = num(2), expect(58), let om = num(2) else { return nil }
                offsetMinutes = sign * (oh * 60 + om)
            } else {
                return nil
            }
        }
        guard i == b.count else { return nil }
        let days = Self.days(fromCivil: y, mo, d)
        let total = ((days * 24 + h) * 60 + mi) * 60 + s
        self.milliseconds = (total - offsetMinutes * 60) * 1000 + ms
    }

    // Howard Hinnant's days_from_civil / civil_from_days.
    public static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (m + 9) % 12
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    public static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }

    public static func floorDivMod(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
        var q = a / b
        var r = a % b
        if r < 0 { q -= 1; r += b }
        return (q, r)
    }

    private static func pad(_ out: inout String, _ v: Int64, _ width: Int) {
        let s = String(v)
        if s.count < width { out.append(String(repeating: "0", count: width - s.count)) }
        out.append(s)
    }
}
