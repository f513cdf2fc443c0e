/// When a step that threw is tried again, and when the engine gives up and pauses the run.
///
/// The delay before retry `n` (1-based) is `base · multiplier^(n-1)`, spread by ± `jitter`
/// (a fraction) so runs that failed together do not retry together, and capped at `maxDelay`.
public struct RetryPolicy: Sendable, Equatable {
    /// Failures (first attempt included) after which the run is paused. Default 5.
    public var maxAttempts: Int = 5
    /// Default 1 000 ms.
    public var baseDelayMilliseconds: Int64 = 1_000
    /// Default 2.
    public var multiplier: Double = 2
    /// Default 60 000 ms.
    public var maxDelayMilliseconds: Int64 = 60_000
    /// Default 0.2: the delay is drawn from [0.8 d, 1.2 d].
    public var jitter: Double = 0.2

    public init(
        maxAttempts: Int = 5, baseDelayMilliseconds: Int64 = 1_000, multiplier: Double = 2,
        maxDelayMilliseconds: Int64 = 60_000, jitter: Double = 0.2
    ) {
        precondition(maxAttempts >= 1 && baseDelayMilliseconds >= 0 && multiplier >= 1 && jitter >= 0 && jitter <= 1)
        self.maxAttempts = maxAttempts
        self.baseDelayMilliseconds = baseDelayMilliseconds
        self.multiplier = multiplier
        self.maxDelayMilliseconds = maxDelayMilliseconds
        self.jitter = jitter
    }

    /// The delay before retry number `attempt` (1 = first retry); `unit` is a random number in
    /// [0, 1) (0.5 = no jitter).
    public func delay(attempt: Int, unit: Double) -> Int64 {
        var d = Double(baseDelayMilliseconds)
        var i = 1
        while i < attempt, d < Double(maxDelayMilliseconds) {
            d *= multiplier
            i += 1
        }
        d = min(d, Double(maxDelayMilliseconds))
        let spread = d * jitter * (2 * min(max(unit, 0), 1) - 1)
        return max(0, min(Int64((d + spread).rounded()), maxDelayMilliseconds))
    }
}
