#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import WorkflowWire

/// A blocking connection to workflowd over its Unix socket (POSIX sockets; no event loop).
///
/// Use it from one thread: command-line code, or a thread of its own. Every request gets an
/// integer `id`, and replies are matched by it, so requests may be pipelined — `send` several,
/// then `reply(to:)` them in any order (`await` replies come out of order; the others are kept
/// until asked for). Pushed subscription frames read while waiting for a reply are kept for
/// `nextFrame()`.
///
/// ```swift
/// let connection = try WorkflowConnection(path: ".workflowd/workflowd.sock")
/// let run = try connection.request("get", ["foreign_id": "order-1001"]).json["run"]
/// ```
public final class WorkflowConnection {
    /// The socket path.
    public let path: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    private var nextID: Int64 = 1
    private var replies: [RequestID: WorkflowMessage] = [:]
    private var pending: Set<RequestID> = []
    private var frames: [WorkflowMessage] = []
    private var frameStart = 0

    /// Connects to the socket at `path`. `timeout`: how long a single read or write may block
    /// (nil: no limit); when it runs out, the call throws `.io`.
    public init(path: String, timeout: Duration? = nil) throws(WorkflowClientError) {
        self.path = path
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !pathBytes.isEmpty, pathBytes.count < capacity else {
            throw WorkflowClientError(.cannotConnect, "socket path must be 1 to \(capacity - 1) bytes: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        #if canImport(Darwin)
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #else
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #endif
        guard fd >= 0 else {
            throw WorkflowClientError(.cannotConnect, "socket(): \(Self.errnoText())")
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            let text = Self.errnoText()
            _ = Glibc_close(fd)
            throw WorkflowClientError(.cannotConnect, "cannot connect to \(path): \(text)", retryable: true)
        }
        #if canImport(Darwin)
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        self.fd = fd
        if let timeout {
            setTimeout(timeout)
        }
    }

    deinit {
        close()
    }

    /// Closes the connection (idempotent).
    public func close() {
        if fd >= 0 {
            _ = Glibc_close(fd)
            fd = -1
        }
    }

    /// Shuts down the writing side: the server answers what was sent, then closes (or keeps
    /// streaming subscriptions).
    public func finishWriting() {
        if fd >= 0 {
            _ = shutdown(fd, Int32(SHUT_WR))
        }
    }

    /// Sets how long one read or write may block (nil: no limit).
    public func setTimeout(_ timeout: Duration?) {
        guard fd >= 0 else { return }
        var tv = timeval()
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            tv.tv_sec = Int(seconds)
            tv.tv_usec = .init(attoseconds / 1_000_000_000_000)
            if tv.tv_sec == 0 && tv.tv_usec == 0 { tv.tv_usec = 1 }
        }
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    // MARK: - Requests

    /// Sends `{"op": op, "id": N, ...arguments}` without waiting; returns the id for `reply(to:)`.
    @discardableResult
    public func send(_ op: String, _ arguments: [JSON.Member] = []) throws(WorkflowClientError) -> RequestID {
        let id = RequestID.number(String(nextID))
        nextID += 1
        var members = [JSON.Member("op", .string(op)), JSON.Member("id", .number(id.numberText))]
        members.append(contentsOf: arguments.filter { $0.value != .null })
        var line = JSON.object(members).bytes
        line.append(0x0A)
        try write(line)
        pending.insert(id)
        return id
    }

    /// Waits for the reply to `id`. Returns it when `ok` is true; throws the server's error
    /// (with the whole reply) when it is false.
    public func reply(to id: RequestID) throws(WorkflowClientError) -> WorkflowMessage {
        while replies[id] == nil {
            guard pending.contains(id) else {
                preconditionFailure("no request with id \(id) is waiting for a reply")
            }
            let message = try readMessage()
            if message.isFrame {
                frames.append(message)
                continue
            }
            guard let replyID = message.id else {
                // A line without id (LIMIT before the server closes): the connection's fate.
                if !message.isOK { throw WorkflowClientError.from(reply: message) }
                throw WorkflowClientError(.badReply, "a reply without id: \(message.line)")
            }
            pending.remove(replyID)
            replies[replyID] = message
        }
        let message = replies.removeValue(forKey: id)!
        guard message.isOK else { throw WorkflowClientError.from(reply: message) }
        return message
    }

    /// Sends one request and waits for its reply.
    public func request(_ op: String, _ arguments: [JSON.Member] = []) throws(WorkflowClientError) -> WorkflowMessage {
        let id = try send(op, arguments)
        return try reply(to: id)
    }

    /// Sends one request given as object members, e.g. `["foreign_id": "order-1"]`.
    public func request(_ op: String, _ arguments: KeyValuePairs<String, JSON>) throws(WorkflowClientError) -> WorkflowMessage {
        try request(op, arguments.map { JSON.Member($0.key, $0.value) })
    }

    // MARK: - Subscriptions

    /// The next pushed frame of any subscription on this connection: `(sub, event)` plus the
    /// raw line. Replies that arrive meanwhile are kept for `reply(to:)`; an `ok: false` line
    /// without id (the server closing the connection with a reason) is thrown.
    public func nextFrame() throws(WorkflowClientError) -> (sub: Int64, event: JSON, message: WorkflowMessage) {
        while true {
            let message = try nextPushed()
            if let (sub, event) = message.frame { return (sub, event, message) }
        }
    }

    /// The next task frame of any worker on this connection: `(worker, task)` plus the raw
    /// line; replies meanwhile are kept for `reply(to:)`.
    public func nextTask() throws(WorkflowClientError) -> (worker: Int64, task: JSON, message: WorkflowMessage) {
        while true {
            let message = try nextPushed()
            if let (worker, task) = message.task { return (worker, task, message) }
        }
    }

    /// The next pushed line, of any kind.
    private func nextPushed() throws(WorkflowClientError) -> WorkflowMessage {
        while true {
            let message: WorkflowMessage
            if frameStart < frames.count {
                message = frames[frameStart]
                frameStart += 1
                if frameStart == frames.count {
                    frames.removeAll(keepingCapacity: true)
                    frameStart = 0
                }
            } else {
                message = try readMessage()
            }
            if message.isFrame { return message }
            if let id = message.id {
                pending.remove(id)
                replies[id] = message
            } else if !message.isOK {
                throw WorkflowClientError.from(reply: message)
            }
        }
    }

    // MARK: - Lines

    /// The next line from the server, parsed.
    public func readMessage() throws(WorkflowClientError) -> WorkflowMessage {
        while true {
            if let newline = buffer[bufferStart...].firstIndex(of: 0x0A) {
                var end = newline
                if end > bufferStart && buffer[end - 1] == 0x0D { end -= 1 }
                let bytes = Array(buffer[bufferStart..<end])
                bufferStart = newline + 1
                if bufferStart == buffer.count {
                    buffer.removeAll(keepingCapacity: true)
                    bufferStart = 0
                }
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                let json: JSON
                do {
                    json = try JSONParser.parse(bytes)
                } catch {
                    throw WorkflowClientError(.badReply, "not JSON from the server (\(error))")
                }
                guard case .object = json else {
                    throw WorkflowClientError(.badReply, "not a JSON object from the server")
                }
                return WorkflowMessage(json: json, line: String(decoding: bytes, as: UTF8.self))
            }
            try fill()
        }
    }

    private func fill() throws(WorkflowClientError) {
        guard fd >= 0 else { throw WorkflowClientError(.connectionClosed, "the connection is closed") }
        if bufferStart > 0 && bufferStart > buffer.count / 2 {
            buffer.removeFirst(bufferStart)
            bufferStart = 0
        }
        let chunk = 64 * 1024
        let old = buffer.count
        buffer.reserveCapacity(old + chunk)
        var received = 0
        while true {
            buffer.append(contentsOf: repeatElement(0, count: chunk))
            received = buffer.withUnsafeMutableBytes { raw in
                recv(fd, raw.baseAddress! + old, chunk, 0)
            }
            if received < 0 {
                buffer.removeLast(chunk)
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw WorkflowClientError(.io, "no data from the server in time", retryable: true)
                }
                throw WorkflowClientError(.io, "read from \(path): \(Self.errnoText())")
            }
            buffer.removeLast(chunk - received)
            break
        }
        if received == 0 {
            throw WorkflowClientError(.connectionClosed, "the server closed the connection", retryable: true)
        }
    }

    /// After a write found the connection closed: the server may have said why in a last line
    /// without id (`LIMIT`, `FORBIDDEN` at accept), still readable; that error, else "closed".
    private func reasonForClose() -> WorkflowClientError {
        while let message = try? readMessage() {
            if message.id == nil && !message.isOK { return WorkflowClientError.from(reply: message) }
        }
        return WorkflowClientError(.connectionClosed, "the server closed the connection", retryable: true)
    }

    private func write(_ bytes: [UInt8]) throws(WorkflowClientError) {
        guard fd >= 0 else { throw WorkflowClientError(.connectionClosed, "the connection is closed") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                #if canImport(Darwin)
                Darwin.send(fd, raw.baseAddress! + offset, raw.count - offset, 0)
                #else
                Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                #endif
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET { throw reasonForClose() }
                throw WorkflowClientError(.io, "write to \(path): \(Self.errnoText())")
            }
            offset += n
        }
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

extension RequestID {
    fileprivate var numberText: String {
        switch self {
        case .number(let n): n
        case .string(let s): s
        }
    }
}

#if canImport(Darwin)
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 { Darwin.close(fd) }
#elseif canImport(Musl)
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 { Musl.close(fd) }
#else
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 { Glibc.close(fd) }
#endif
