/// How the server listens and what it allows. Every property documents its default.
public struct Configuration: Sendable {
    /// The Unix socket path. No default: `workflowd` takes it from `--socket` / `WORKFLOWD_SOCKET`.
    public var socketPath: String
    /// File mode of the socket, default `0o660` (owner and group may connect).
    public var socketMode: UInt32 = 0o660
    /// Local users allowed to connect, checked with `SO_PEERCRED` as each connection is
    /// accepted; a peer whose uid or gid is listed is served, any other gets one `FORBIDDEN`
    /// line and is closed. Default nil: everyone who may open the socket file.
    public var allowedPeers: PeerAllowList? = nil
    /// Longest request line in bytes, default 1 MiB. Longer lines get `LINE_TOO_LONG` and the
    /// connection is closed.
    public var maxLine: Int = 1 << 20
    /// Open connections, default 1024; one more is answered `LIMIT` and closed.
    public var maxConnections: Int = 1024
    /// Subscriptions per connection, default 64; one more is answered `LIMIT`.
    public var maxSubscriptionsPerConnection: Int = 64
    /// Requests of one connection without a reply, default 256; beyond it the server stops
    /// reading that connection until replies go out (pipelining stays bounded).
    public var maxPendingRequestsPerConnection: Int = 256
    /// Unwritten bytes per connection at which the server stops reading it and stops pushing
    /// events to it, default 1 MiB.
    public var writeBufferHighWater: Int = 1 << 20
    /// Unwritten bytes below which reading and pushing resume, default 256 KiB.
    public var writeBufferLowWater: Int = 256 << 10
    /// Events per catch-up read of a slow or resuming subscriber, default 256.
    public var catchUpBatchSize: Int = 256
    /// Recent events kept in memory (shared by all subscribers) so a subscriber that fell
    /// slightly behind rejoins live delivery without reading the log, default 4096.
    public var recentEventsKept: Int = 4096
    /// Wait before retrying a failed catch-up read, default 500 ms.
    public var catchUpRetryDelayMilliseconds: UInt64 = 500
    /// How long a graceful drain waits for in-flight requests, default 10 s.
    public var drainTimeoutMilliseconds: UInt64 = 10_000
    /// After the drain, how long closing sessions may take to flush, default 1 s.
    public var closeGraceMilliseconds: UInt64 = 1_000
    /// `listen(2)` backlog, default 511.
    public var listenBacklog: Int32 = 511
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`): an IP address literal and
    /// a port. Default nil: no HTTP endpoint (the `metrics` op is always there).
    public var metricsListen: (address: String, port: Int)?
    /// Reported by `hello`, default "workflowd".
    public var serverName: String = "workflowd"
    /// Reported by `hello`, default "0.1.0".
    public var serverVersion: String = "0.1.0"

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    var sessionLimits: SessionStateMachine.Limits {
        SessionStateMachine.Limits(
            maxLine: maxLine, writeHighWater: writeBufferHighWater, writeLowWater: writeBufferLowWater,
            maxPendingRequests: maxPendingRequestsPerConnection)
    }
}
