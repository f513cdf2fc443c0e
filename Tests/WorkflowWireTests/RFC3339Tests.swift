import Testing

@testable import WorkflowWire

@Suite struct RFC3339Tests {
    @Test func formatsWithMilliseconds() {
        #expect(RFC3339.format(milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(RFC3339.format(milliseconds: 1_795_586_400_123) == "2026-11-25T06:00:00.123Z")
        #expect(RFC3339.format(milliseconds: -1) == "1969-12-31T23:59:59.999Z")
    }

    @Test func parsesWhatItFormats() {
        for ms: Int64 in [0, 1, 999, 1_795_586_400_123, 951_782_400_000, 4_102_444_799_999] {
            #expect(RFC3339.parse(RFC3339.format(milliseconds: ms)) == ms)
        }
    }

    @Test func parsesOffsetsAndFractions() {
        #expect(RFC3339.parse("2026-11-25T07:00:00.123+01:00") == 1_795_586_400_123)
        #expect(RFC3339.parse("2026-11-25T06:00:00Z") == 1_795_586_400_000)
        #expect(RFC3339.parse("2026-11-25T06:00:00.1Z") == 1_795_586_400_100)
        #expect(RFC3339.parse("2026-11-25T06:00:00.123456Z") == 1_795_586_400_123)
    }

    @Test(arguments: [
        "2026-11-25", "2026-11-25T06:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-25 06:00:00Z",
        "2026-11-25T25:00:00Z", "2026-11-25T06:00:00.Z", "yesterday", "2026-11-25T06:00:00Zjunk",
    ])
    func rejectsInvalidTimes(_ text: String) {
        #expect(RFC3339.parse(text) == nil)
    }
}
