import CLibUV
import WorkflowEngine

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A minimal HTTP/1.x endpoint on the loop for Prometheus: `GET /metrics` answers the metrics
/// text; anything else gets 404 (or 405 for another method, 400 for garbage). One request per
/// connection, then the server closes it. Loop thread only.
final class MetricsHTTPListener {
    unowned let core: ServerCore
    private let handle: UnsafeMutablePointer<uv_tcp_t>
    private var closed = false
    private var clients: [ObjectIdentifier: HTTPClient] = [:]

    /// Bytes of a request head we read at most; a longer head is answered 431 and closed.
    static let maxHead = 8 * 1024
    /// Scrapes in flight at once, at most; more are answered 503.
    static let maxClients = 16

    init(core: ServerCore) {
        self.core = core
        handle = .allocate(capacity: 1)
    }

    deinit { handle.deallocate() }

    /// Binds and listens on `address:port` (IPv4 or IPv6 literal). On the starting thread,
    /// before the loop runs.
    func bind(address: String, port: Int) throws(ServerError) {
        var storage = sockaddr_storage()
        let parsed = withUnsafeMutablePointer(to: &storage) { p -> Int32 in
            if address.contains(":") {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { uv_ip6_addr(address, Int32(port), $0) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { uv_ip4_addr(address, Int32(port), $0) }
        }
        guard parsed == 0 else {
            throw ServerError(.system, "metrics listen address '\(address)' is not an IP address")
        }
        uv_tcp_init(core.loop.loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        var rc = withUnsafePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(handle, $0, 0) }
        }
        if rc == 0 {
            rc = uv_listen(asStream(handle), 64) { server, status in
                guard let server, status == 0 else { return }
                let me = Unmanaged<MetricsHTTPListener>.fromOpaque(server.pointee.data).takeUnretainedValue()
                me.accept()
            }
        }
        if rc != 0 {
            close()
            uv_run(core.loop.loop, UV_RUN_NOWAIT)
            throw ServerError(.system, "cannot listen for metrics on \(address):\(port)", uvError: uvErrorName(rc))
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        uv_close(asHandle(handle), nil)
        for c in Array(clients.values) { c.close() }
    }

    private func accept() {
        let client = HTTPClient(listener: self)
        uv_tcp_init(core.loop.loop, client.handle)
        client.handle.pointee.data = Unmanaged.passRetained(client).toOpaque()
        guard uv_accept(asStream(handle), asStream(client.handle)) == 0, !closed else {
            client.close()
            return
        }
        if clients.count >= Self.maxClients {
            client.respond(status: "503 Service Unavailable", body: "too many scrapes at once\n")
            return
        }
        clients[ObjectIdentifier(client)] = client
        client.start()
    }

    fileprivate func finished(_ client: HTTPClient) { clients[ObjectIdentifier(client)] = nil }

    fileprivate func serve(_ client: HTTPClient, head: [UInt8]) {
        // Request line: METHOD SP TARGET SP VERSION
        let line = head.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        guard parts.count == 3, parts[2].starts(with: Array("HTTP/1.".utf8)) else {
            client.respond(status: "400 Bad Request", body: "bad request line\n")
            return
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? target
        guard path == "/metrics" else {
            client.respond(status: "404 Not Found", body: "only /metrics is served here\n")
            return
        }
        guard method == "GET" || method == "HEAD" else {
            client.respond(status: "405 Method Not Allowed", body: "use GET\n", extraHeaders: "Allow: GET, HEAD\r\n")
            return
        }
        let text = core.metricsText()
        let logger = core.logger
        let headOnly = method == "HEAD"
        core.offLoop {
            await attempt { try await text() }
        } then: { result in
            switch result {
            case .success(let body):
                client.respond(status: "200 OK", body: body, contentType: PrometheusText.contentType, headOnly: headOnly)
            case .failure(let error):
                logger.debug("metrics scrape failed", metadata: ["error": "\(error)"])
                client.respond(status: "503 Service Unavailable", body: "metrics unavailable: the database cannot be read now\n")
            }
        }
    }
}

/// One scrape connection. Retained by its handle's `data` from accept until the close callback.
private final class HTTPClient {
    unowned let listener: MetricsHTTPListener
    let handle: UnsafeMutablePointer<uv_tcp_t> = .allocate(capacity: 1)
    private var head: [UInt8] = []
    private var answered = false
    private var closing = false

    init(listener: MetricsHTTPListener) { self.listener = listener }

    func start() {
        uv_read_start(
            asStream(handle),
            { h, suggested, buf in
                guard let h, let buf else { return }
                let core = Unmanaged<ServerCore>.fromOpaque(h.pointee.loop.pointee.data).takeUnretainedValue()
                buf.pointee = uv_buf_init(core.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(core.readBufferSize))
            },
            { stream, nread, buf in
                guard let stream else { return }
                let me = Unmanaged<HTTPClient>.fromOpaque(stream.pointee.data).takeUnretainedValue()
                me.didRead(nread, buf)
            })
    }

    private func didRead(_ nread: Int, _ buf: UnsafePointer<uv_buf_t>?) {
        guard !answered else { return }
        if nread < 0 {
            close()
            return
        }
        guard nread > 0, let base = buf?.pointee.base else { return }
        head.append(contentsOf: UnsafeRawBufferPointer(start: base, count: nread))
        if let end = Self.endOfHead(head) {
            answered = true
            uv_read_stop(asStream(handle))
            listener.serve(self, head: Array(head[..<end]))
        } else if head.count > MetricsHTTPListener.maxHead {
            respond(status: "431 Request Header Fields Too Large", body: "request head too large\n")
        }
    }

    static func endOfHead(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
        return nil
    }

    func respond(
        status: String, body: String, contentType: String = "text/plain; charset=utf-8", extraHeaders: String = "",
        headOnly: Bool = false
    ) {
        guard !closing else { return }
        answered = true
        uv_read_stop(asStream(handle))
        let bodyBytes = Array(body.utf8)
        var bytes = Array(
            "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bodyBytes.count)\r\n\(extraHeaders)Connection: close\r\n\r\n"
                .utf8)
        if !headOnly { bytes += bodyBytes }
        let count = bytes.count
        let data = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 1)
        bytes.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: count) }
        let req = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        req.pointee.data = data
        var buf = uv_buf_init(data.assumingMemoryBound(to: CChar.self), UInt32(count))
        let rc = uv_write(req, asStream(handle), &buf, 1) { req, _ in
            guard let req else { return }
            let stream = req.pointee.handle!
            req.pointee.data.deallocate()
            req.deallocate()
            Unmanaged<HTTPClient>.fromOpaque(stream.pointee.data).takeUnretainedValue().close()
        }
        if rc != 0 {
            data.deallocate()
            req.deallocate()
            close()
        }
    }

    func close() {
        guard !closing else { return }
        closing = true
        listener.finished(self)
        uv_close(asHandle(handle)) { h in
            guard let h else { return }
            let me = Unmanaged<HTTPClient>.fromOpaque(h.pointee.data)
            me.takeUnretainedValue().handle.deallocate()
            me.release()
        }
    }
}
