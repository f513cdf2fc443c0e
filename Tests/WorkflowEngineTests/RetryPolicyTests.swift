import Testing

@testable import WorkflowEngine

@Suite struct RetryPolicyTests {
    let policy = RetryPolicy(maxAttempts: 5, baseDelayMilliseconds: 1_000, multiplier: 2, maxDelayMilliseconds: 10_000, jitter: 0.2)

    @Test func growsExponentiallyWithoutJitterAtTheMiddle() {
        #expect((1...6).map { policy.delay(attempt: $0, unit: 0.5) } == [1_000, 2_000, 4_000, 8_000, 10_000, 10_000])
    }

    @Test func jitterSpreadsWithinTheFraction() {
        #expect(policy.delay(attempt: 2, unit: 0) == 1_600)
        #expect(policy.delay(attempt: 2, unit: 0.999_999) == 2_400)
        #expect(policy.delay(attempt: 2, unit: 0.25) == 1_800)
    }

    @Test func capHoldsAfterJitter() {
        #expect(policy.delay(attempt: 10, unit: 0.999) == 10_000)
        #expect(policy.delay(attempt: 10, unit: 0) == 8_000)
        #expect(policy.delay(attempt: 1_000_000, unit: 0.5) == 10_000)
    }
}
