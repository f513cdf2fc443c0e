/// Encodes replies and pushed frames, each one compact JSON line ending in `\n`.
public enum Reply {
    /// `{"id":<id>,"ok":true,...}` — `body` writes the result members (keys and values) into the
    /// open object. `id` is left out when the request had none.
    public static func success(id: RequestID?, _ body: (inout JSONWriter) -> Void = { _ in }) -> [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        if let id {
            w.key("id")
            id.write(to: &w)
        }
        w.key("ok")
        w.bool(true)
        body(&w)
        w.endObject()
        w.bytes.append(0x0A)
        return w.bytes
    }

    /// `{"id":<id>,"ok":false,"error":{"code","message","retryable"[,"run"]}}`
    public static func failure(id: RequestID?, _ error: WireError) -> [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        if let id {
            w.key("id")
            id.write(to: &w)
        }
        w.key("ok")
        w.bool(false)
        w.key("error")
        error.write(to: &w)
        w.endObject()
        w.bytes.append(0x0A)
        return w.bytes
    }

    /// `{"sub":S,"error":{...}}` — the last frame of a subscription the server ended (an
    /// addition: sent when a catch-up read finds its events removed by retention, `GONE`).
    public static func subscriptionEnded(sub: Int64, _ error: WireError) -> [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("sub")
        w.int(sub)
        w.key("error")
        error.write(to: &w)
        w.endObject()
        w.bytes.append(0x0A)
        return w.bytes
    }
}

/// A pushed subscription frame: `{"sub":S,"event":{...}}\n`.
///
/// The event's JSON is encoded once (`EventPayload.json`) and shared by every subscriber; a
/// frame only wraps it with a small prefix and suffix, which a writer can send as three slices
/// without copying the event.
public enum EventFrame {
    /// `{"sub":S,"event":`
    public static func prefix(sub: Int64) -> [UInt8] {
        Array("{\"sub\":\(sub),\"event\":".utf8)
    }

    /// `}\n`
    public static let suffix: [UInt8] = [UInt8(ascii: "}"), 0x0A]

    /// The whole frame in one buffer.
    public static func encode(sub: Int64, event: [UInt8]) -> [UInt8] {
        var out = prefix(sub: sub)
        out.reserveCapacity(out.count + event.count + 2)
        out.append(contentsOf: event)
        out.append(contentsOf: suffix)
        return out
    }
}
