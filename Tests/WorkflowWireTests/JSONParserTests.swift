import Testing

@testable import WorkflowWire

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let v = try JSONParser.parse(#" {"a": [1, -2.5, 3e10, true, false, null, "x"], "b": {}} "#)
        #expect(
            v
                == .object([
                    .init(
                        "a",
                        .array([.number("1"), .number("-2.5"), .number("3e10"), .bool(true), .bool(false), .null, .string("x")])),
                    .init("b", .object([])),
                ]))
    }

    @Test func exactDecimalsRoundTrip() throws {
        let text = #"{"total":1359.97,"price":0.1,"big":12345678901234567890123456789.000000001,"e":-1.5E-7}"#
        let v = try JSONParser.parse(text)
        #expect(v["total"] == .number("1359.97"))
        #expect(String(decoding: v.bytes, as: UTF8.self) == text)
    }

    @Test func hugeNumbersAreKeptAsText() throws {
        let digits = String(repeating: "9", count: 400)
        let v = try JSONParser.parse("[\(digits)]")
        #expect(v == .array([.number(digits)]))
        #expect(v.bytes == Array("[\(digits)]".utf8))
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul",
        "\"abc", "[1 2]", "{\"a\":1} x", "'a'", "\"\\x\"", "\"\\u12\"", "NaN", "Infinity", "[-]",
    ])
    func rejectsInvalidJSON(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
    }

    @Test func errorsSayWhereAndWhat() {
        do {
            _ = try JSONParser.parse(#"{"a":1,"b":x}"#)
            Issue.record("no error")
        } catch {
            #expect(error.offset == 11)
            #expect(error.message.contains("'x'"))
        }
    }

    @Test func decodesEscapes() throws {
        let v = try JSONParser.parse(#""a\"b\\c\/d\b\f\n\r\t\u00e9\u20ac\ud83d\ude00\u0000z""#)
        #expect(v == .string("a\"b\\c/d\u{8}\u{c}\n\r\té€😀\u{0}z"))
    }

    @Test func escapesRoundTrip() throws {
        let s = "quote\" backslash\\ nl\n cr\r tab\t nul\u{0} bell\u{7} é 😀"
        var w = JSONWriter()
        w.string(s)
        let encoded = String(decoding: w.bytes, as: UTF8.self)
        #expect(!encoded.contains("\n"))
        #expect(encoded.contains("\\u0000"))
        #expect(try JSONParser.parse(w.bytes) == .string(s))
    }

    @Test func rejectsLoneSurrogates() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#""\ud83d""#) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#""\ude00""#) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#""\ud83d\u0041""#) }
    }

    @Test func rejectsRawControlCharactersAndNUL() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0x61, 0x00, 0x62, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0x61, 0x0A, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x7B, 0x00, 0x7D]) }
    }

    @Test(arguments: [
        [0x22, 0xFF, 0x22],  // never valid
        [0x22, 0xC3, 0x22],  // truncated 2-byte sequence
        [0x22, 0xC0, 0xAF, 0x22],  // overlong '/'
        [0x22, 0xED, 0xA0, 0x80, 0x22],  // encoded surrogate
        [0x22, 0x5C, 0x6E, 0xE2, 0x82, 0x22],  // escape then truncated 3-byte sequence
        [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // beyond U+10FFFF
    ] as [[UInt8]])
    func rejectsInvalidUTF8(_ bytes: [UInt8]) {
        do {
            _ = try JSONParser.parse(bytes)
            Issue.record("accepted invalid UTF-8")
        } catch {
            #expect(error.message.contains("UTF-8"))
        }
    }

    @Test func acceptsValidMultibyteUTF8() throws {
        #expect(try JSONParser.parse(Array("\"Zoë 東京 😀\"".utf8)) == .string("Zoë 東京 😀"))
    }

    @Test func limitsNesting() throws {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        _ = try JSONParser.parse(ok)
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
        let deepObjects = String(repeating: "{\"a\":", count: 100_000)
        do {
            _ = try JSONParser.parse(deepObjects)
            Issue.record("accepted deep nesting")
        } catch {
            #expect(error.message.contains("nesting"))
        }
    }

    @Test func writerTracksCommas() {
        var w = JSONWriter()
        w.beginObject()
        w.key("a"); w.beginArray(); w.int(1); w.beginObject(); w.endObject(); w.string("x"); w.endArray()
        w.key("b"); w.null()
        w.key("c"); w.int(-42)
        w.endObject()
        #expect(String(decoding: w.bytes, as: UTF8.self) == #"{"a":[1,{},"x"],"b":null,"c":-42}"#)
    }
}
