/// The simulation's dice. With a seed, every draw is a function of (seed, key, purpose) only —
/// the gateways use the order id as key — so an outcome depends neither on how many runs go at
/// once nor on their order, and submitting the same orders again with the same seed gives the
/// same outcomes (run ids are fresh UUIDs each time, so they would not). Without a seed, draws
/// come from the system generator.
public struct SimulationRandom: Sendable {
    public let seed: UInt64?

    public init(seed: UInt64?) { self.seed = seed }

    /// A number in [0, 1).
    public func unit(key: String, purpose: String) -> Double {
        Double(bits(key: key, purpose: purpose) >> 11) / Double(1 << 53)
    }

    /// 64 random bits.
    public func bits(key: String, purpose: String) -> UInt64 {
        guard let seed else {
            var g = SystemRandomNumberGenerator()
            return g.next()
        }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a over purpose, a separator and the run id
        for b in purpose.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ 0xff) &* 0x100_0000_01b3
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Self.splitMix(seed ^ h)
    }

    /// `prefix_` + 16 hex digits.
    public func identifier(prefix: String, key: String, purpose: String) -> String {
        let v = bits(key: key, purpose: purpose + "-id")
        let hex = String(v, radix: 16)
        return prefix + "_" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func splitMix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
