import Synchronization

/// One metric with its samples, in the shape of the Prometheus text exposition format.
public struct MetricFamily: Sendable, Equatable {
    public enum Kind: String, Sendable { case counter, gauge, histogram }

    public struct Sample: Sendable, Equatable {
        /// Appended to the family name: "" or, for histograms, "_bucket" / "_sum" / "_count".
        public var suffix: String
        /// Label names and values, in the order they are written.
        public var labels: [Label]
        public var value: Double
        public init(suffix: String = "", labels: [Label] = [], value: Double) {
            self.suffix = suffix
            self.labels = labels
            self.value = value
        }
    }

    public struct Label: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public var name: String
    public var help: String
    public var kind: Kind
    public var samples: [Sample]

    public init(_ name: String, _ kind: Kind, help: String, samples: [Sample]) {
        self.name = name
        self.help = help
        self.kind = kind
        self.samples = samples
    }

    /// A family with one unlabelled sample.
    public init(_ name: String, _ kind: Kind, help: String, value: Double) {
        self.init(name, kind, help: help, samples: [Sample(value: value)])
    }
}

/// Counters indexed 0..<n, updated from any thread.
public final class CounterVector: Sendable {
    private let values: Mutex<[Int]>
    public init(count: Int) { values = Mutex(Array(repeating: 0, count: count)) }
    public func add(_ i: Int, _ n: Int = 1) { values.withLock { $0[i] += n } }
    public var snapshot: [Int] { values.withLock { $0 } }
}

/// Renders metric families as Prometheus text (version 0.0.4).
public enum PrometheusText {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func render(_ families: [MetricFamily]) -> String {
        var out = ""
        out.reserveCapacity(families.count * 160)
        for f in families {
            out += "# HELP \(f.name) \(escapeHelp(f.help))\n"
            out += "# TYPE \(f.name) \(f.kind.rawValue)\n"
            for s in f.samples {
                out += f.name
                out += s.suffix
                if !s.labels.isEmpty {
                    out += "{"
                    out += s.labels.map { "\($0.name)=\"\(escapeLabel($0.value))\"" }.joined(separator: ",")
                    out += "}"
                }
                out += " "
                out += format(s.value)
                out += "\n"
            }
        }
        return out
    }

    static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }

    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func escapeHelp(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}

/// A fixed-bucket histogram of milliseconds, updated lock-free from any thread.
public final class LatencyHistogram: Sendable {
    /// Upper bounds in milliseconds; the last bucket (+Inf) is implicit.
    public let bounds: [Double]
    private struct State {
        var counts: [Int]
        var total = 0
        var sumMilliseconds = 0.0
    }
    private let state: Mutex<State>

    public init(bounds: [Double] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000]) {
        self.bounds = bounds
        self.state = Mutex(State(counts: Array(repeating: 0, count: bounds.count)))
    }

    public func observe(milliseconds ms: Double) {
        let i = bounds.firstIndex(where: { ms <= $0 })
        state.withLock { s in
            if let i { s.counts[i] += 1 }
            s.total += 1
            s.sumMilliseconds += ms
        }
    }

    public func observe(_ d: Duration) {
        let c = d.components
        observe(milliseconds: Double(c.seconds) * 1000 + Double(c.attoseconds) / 1e15)
    }

    /// The `_bucket` (cumulative), `_sum` (seconds) and `_count` samples.
    public func samples(labels: [MetricFamily.Label] = []) -> [MetricFamily.Sample] {
        let s = state.withLock { $0 }
        var out: [MetricFamily.Sample] = []
        var cumulative = 0
        for (i, b) in bounds.enumerated() {
            cumulative += s.counts[i]
            out.append(.init(suffix: "_bucket", labels: labels + [.init("le", PrometheusText.format(b / 1000))], value: Double(cumulative)))
        }
        out.append(.init(suffix: "_bucket", labels: labels + [.init("le", "+Inf")], value: Double(s.total)))
        out.append(.init(suffix: "_sum", labels: labels, value: s.sumMilliseconds / 1000))
        out.append(.init(suffix: "_count", labels: labels, value: Double(s.total)))
        return out
    }
}
