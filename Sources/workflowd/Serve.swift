import ArgumentParser
@preconcurrency import Dispatch
import Foundation
import Logging
import OrderWorkflow
import WorkflowEngine
import WorkflowMariaDB
import WorkflowServer

/// Options of the socket server.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "Unix socket path (env WORKFLOWD_SOCKET, default <data-dir>/workflowd.sock).")
    var socket: String?

    @Option(name: .customLong("socket-mode"), help: "Socket file permissions in octal (env WORKFLOWD_SOCKET_MODE, default 0660).")
    var socketMode: String?

    @Option(name: .customLong("allow-uid"), help: "Only these user ids may connect, e.g. 0,1000 (env WORKFLOWD_ALLOW_UIDS; a peer whose uid or gid is allowed is served; default: anyone who may open the socket).")
    var allowUID: String?

    @Option(name: .customLong("allow-gid"), help: "Only these group ids may connect, e.g. 0,1000 (env WORKFLOWD_ALLOW_GIDS; see --allow-uid).")
    var allowGID: String?

    @Option(name: .customLong("max-line"), help: "Longest request line in bytes (env WORKFLOWD_MAX_LINE, default 1048576).")
    var maxLine: Int?

    @Option(name: .customLong("max-connections"), help: "Most client connections (env WORKFLOWD_MAX_CONNECTIONS, default 1024).")
    var maxConnections: Int?

    @Option(name: .customLong("partitions"), help: "Partitions per step consumer (env WORKFLOWD_PARTITIONS, default 4).")
    var partitions: Int?

    @Option(name: .customLong("lease-ttl-ms"), help: "Lease lifetime in ms; holders renew at a fifth of it (env WORKFLOWD_LEASE_TTL_MS, default 10000).")
    var leaseTTL: Int?

    @Option(name: .customLong("metrics-listen"), help: "Serve Prometheus metrics over HTTP at ADDRESS:PORT, e.g. 127.0.0.1:9464 or [::1]:9464 (env WORKFLOWD_METRICS_LISTEN, default off).")
    var metricsListen: String?

    @Option(name: .customLong("lag-alert"), help: "Consumer lag in events that logs a warning and makes `health` unhealthy (env WORKFLOWD_LAG_ALERT, default 10000).")
    var lagAlert: Int?

    @Option(name: .customLong("outbox-alert"), help: "Outbox rows waiting for the relay that make `health` report `outbox` unhealthy (env WORKFLOWD_OUTBOX_ALERT, default 10000).")
    var outboxAlert: Int?

    @Option(name: .customLong("relay-alert"), help: "Age of the oldest outbox row (the relay's lag), e.g. 30s, that makes `health` report `relay` unhealthy (env WORKFLOWD_RELAY_ALERT, default 30s).")
    var relayAlert: String?

    @Option(name: .customLong("retain-runs"), help: "Automatic retention: delete finished runs (Completed, Cancelled, DataDeleted) unchanged for this long, e.g. 30d (env WORKFLOWD_RETAIN_RUNS, default off).")
    var retainRuns: String?

    @Option(name: .customLong("retain-events"), help: "Automatic retention: delete events older than this from the start of the log, e.g. 7d (env WORKFLOWD_RETAIN_EVENTS, default off).")
    var retainEvents: String?

    @Flag(name: .customLong("retention-archive"), help: "Copy runs into workflow_records_archive before retention deletes them (env WORKFLOWD_RETENTION_ARCHIVE=1).")
    var retentionArchive = false

    @Option(name: .customLong("retention-interval"), help: "Time between two retention passes of the instance holding the retention lease (env WORKFLOWD_RETENTION_INTERVAL, default 5m).")
    var retentionInterval: String?

    @Option(name: .customLong("external-steps"), help: "Statuses whose step another program does over the socket (workers, callbacks): OrderCreated, OrderValidated, PaymentProcessed, comma-separated (env WORKFLOWD_EXTERNAL_STEPS, default none: the simulated gateways).")
    var externalSteps: String?

    @Option(name: .customLong("retry-max-attempts"), help: "Failures of a step (a built-in one that threw, or a worker's fail) after which the run is paused (env WORKFLOWD_RETRY_MAX_ATTEMPTS, default 5).")
    var retryMaxAttempts: Int?

    @Option(name: .customLong("retry-base-delay"), help: "Wait before the first retry of a failed step, e.g. 1s; it doubles with each further failure (env WORKFLOWD_RETRY_BASE_DELAY, default 1s).")
    var retryBaseDelay: String?

    @Option(name: .customLong("retry-max-delay"), help: "Longest wait between retries, e.g. 60s (env WORKFLOWD_RETRY_MAX_DELAY, default 60s).")
    var retryMaxDelay: String?

    @Option(name: .customLong("task-wait-alert"), help: "How long a run may wait in an external status with no worker anywhere before `health` reports `external` unhealthy, e.g. 60s (env WORKFLOWD_TASK_WAIT_ALERT, default 60s).")
    var taskWaitAlert: String?

    @Flag(name: .customLong("no-migrate"), help: "Do not apply the schema at start-up, only check that it is current (run `workflowd migrate` as an admin).")
    var noMigrate = false

    func serverConfiguration(dataDirectory: String, env: [String: String]) throws -> ServerConfiguration {
        let path = Settings.socketPath(flag: socket, dataDirectory: dataDirectory, env: env)
        var c = ServerConfiguration(socketPath: path)
        if let text = socketMode ?? env["WORKFLOWD_SOCKET_MODE"], !text.isEmpty {
            guard let mode = UInt32(text, radix: 8), mode <= 0o777 else {
                throw SettingsError(message: "\(socketMode != nil ? "--socket-mode" : "WORKFLOWD_SOCKET_MODE"): '\(text)' is not an octal file mode such as 0660")
            }
            c.socketMode = mode
        }
        c.allowedPeers = try Self.allowList(uids: allowUID, gids: allowGID, env: env)
        c.maxLine = try Settings.int(maxLine, env, "WORKFLOWD_MAX_LINE", "--max-line", 1 << 20, 1024...(64 << 20))
        c.maxConnections = try Settings.int(maxConnections, env, "WORKFLOWD_MAX_CONNECTIONS", "--max-connections", 1024, 1...100_000)
        c.serverVersion = WorkflowdVersion.string
        if let text = metricsListen ?? env["WORKFLOWD_METRICS_LISTEN"], !text.isEmpty {
            guard let address = Self.listenAddress(text) else {
                throw SettingsError(
                    message: "\(metricsListen != nil ? "--metrics-listen" : "WORKFLOWD_METRICS_LISTEN"): '\(text)' is not ADDRESS:PORT such as 127.0.0.1:9464 or [::1]:9464")
            }
            c.metricsListen = address
        }
        return c
    }

    /// "127.0.0.1:9464" or "[::1]:9464" → (address, port); the address must be an IP literal.
    static func listenAddress(_ text: String) -> (address: String, port: Int)? {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (1...65_535).contains(port), !host.isEmpty else { return nil }
        let h = String(host)
        var v4 = in_addr()
        var v6 = in6_addr()
        guard inet_pton(AF_INET, h, &v4) == 1 || inet_pton(AF_INET6, h, &v6) == 1 else { return nil }
        return (h, port)
    }

    /// The peer allow-list from `--allow-uid` / `--allow-gid` (or their variables); nil when
    /// neither is set. An empty variable counts as unset; an empty flag is an error.
    static func allowList(uids: String?, gids: String?, env: [String: String]) throws -> PeerAllowList? {
        func ids(_ flag: String?, _ flagName: String, _ variable: String) throws -> Set<UInt32>? {
            let text: String
            let source: String
            if let flag {
                (text, source) = (flag, flagName)
            } else if let value = env[variable], !value.isEmpty {
                (text, source) = (value, variable)
            } else {
                return nil
            }
            do {
                return try PeerAllowList.parseIDs(text)
            } catch {
                throw SettingsError(message: "\(source): \(error.message)")
            }
        }
        let u = try ids(uids, "--allow-uid", "WORKFLOWD_ALLOW_UIDS")
        let g = try ids(gids, "--allow-gid", "WORKFLOWD_ALLOW_GIDS")
        if u == nil && g == nil { return nil }
        return PeerAllowList(uids: u ?? [], gids: g ?? [])
    }

    func engineConfiguration(env: [String: String]) throws -> WorkflowEngine.Configuration {
        var c = WorkflowEngine.Configuration()
        c.partitionCount = try Settings.int(partitions, env, "WORKFLOWD_PARTITIONS", "--partitions", 4, 1...256)
        let ttl = try Settings.int(leaseTTL, env, "WORKFLOWD_LEASE_TTL_MS", "--lease-ttl-ms", 10_000, 500...600_000)
        c.leaseTTLMilliseconds = Int64(ttl)
        c.leaseRenewMilliseconds = max(100, ttl / 5)
        c.healthMaxLag = Int64(try Settings.int(lagAlert, env, "WORKFLOWD_LAG_ALERT", "--lag-alert", 10_000, 1...1_000_000_000))
        c.healthMaxOutboxPending = try Settings.int(outboxAlert, env, "WORKFLOWD_OUTBOX_ALERT", "--outbox-alert", 10_000, 1...1_000_000_000)
        if let text = relayAlert ?? env["WORKFLOWD_RELAY_ALERT"].flatMap({ $0.isEmpty ? nil : $0 }) {
            guard let seconds = Settings.duration(text), seconds >= 0.001, seconds <= 86_400 else {
                throw SettingsError(
                    message: "\(relayAlert != nil ? "--relay-alert" : "WORKFLOWD_RELAY_ALERT"): '\(text)' is not a duration from 1ms to 24h such as 30s, 2m or 500ms")
            }
            c.healthMaxOutboxAgeMilliseconds = Int64((seconds * 1000).rounded())
        }
        c.retention = try retentionPolicy(env: env)
        c.retry = try retryPolicy(env: env)
        if let ms = try Settings.milliseconds(taskWaitAlert, env, "WORKFLOWD_TASK_WAIT_ALERT", "--task-wait-alert", minimum: 1) {
            c.healthMaxTaskWaitMilliseconds = ms
        }
        // Fault injection for the crash tests; not an operator's setting.
        c.killAfterDirectWrites = try Settings.int(
            nil, env, "WORKFLOWD_TEST_KILL_AFTER_DIRECT_WRITES", "WORKFLOWD_TEST_KILL_AFTER_DIRECT_WRITES", 0, 0...1_000_000_000)
        return c
    }

    /// The durable retry policy of failing steps (built-in and external).
    func retryPolicy(env: [String: String]) throws -> RetryPolicy {
        let attempts = try Settings.int(
            retryMaxAttempts, env, "WORKFLOWD_RETRY_MAX_ATTEMPTS", "--retry-max-attempts", 5, 1...1000)
        let base = try Settings.milliseconds(retryBaseDelay, env, "WORKFLOWD_RETRY_BASE_DELAY", "--retry-base-delay", minimum: 0) ?? 1_000
        let cap = try Settings.milliseconds(retryMaxDelay, env, "WORKFLOWD_RETRY_MAX_DELAY", "--retry-max-delay", minimum: 1) ?? 60_000
        guard cap >= base else {
            throw SettingsError(message: "--retry-max-delay / WORKFLOWD_RETRY_MAX_DELAY (\(cap) ms) must not be shorter than the base delay (\(base) ms)")
        }
        return RetryPolicy(maxAttempts: attempts, baseDelayMilliseconds: base, maxDelayMilliseconds: cap)
    }

    /// The order workflow's settings: its variables, and `--external-steps` over
    /// `WORKFLOWD_EXTERNAL_STEPS`.
    func orderConfiguration(env: [String: String]) throws -> OrderWorkflow.Configuration {
        do {
            var c = try OrderWorkflow.Configuration(environment: env)
            if let text = externalSteps {
                c.externalSteps = try OrderWorkflow.Configuration.externalSteps(text, source: "--external-steps")
            }
            return c
        } catch {
            throw SettingsError(message: (error as? OrderWorkflowError)?.message ?? "\(error)")
        }
    }

    /// The automatic retention policy, or nil when neither `--retain-runs` nor `--retain-events`
    /// (nor their variables) is set.
    func retentionPolicy(env: [String: String]) throws -> RetentionPolicy? {
        let runs = try Settings.milliseconds(retainRuns, env, "WORKFLOWD_RETAIN_RUNS", "--retain-runs", minimum: 1000)
        let events = try Settings.milliseconds(retainEvents, env, "WORKFLOWD_RETAIN_EVENTS", "--retain-events", minimum: 1000)
        let archive = try Settings.bool(retentionArchive, env, "WORKFLOWD_RETENTION_ARCHIVE")
        let interval = try Settings.milliseconds(
            retentionInterval, env, "WORKFLOWD_RETENTION_INTERVAL", "--retention-interval", minimum: 100)
        guard runs != nil || events != nil else {
            if archive {
                throw SettingsError(message: "--retention-archive / WORKFLOWD_RETENTION_ARCHIVE: archiving needs --retain-runs (or WORKFLOWD_RETAIN_RUNS)")
            }
            return nil
        }
        if archive && runs == nil {
            throw SettingsError(message: "--retention-archive / WORKFLOWD_RETENTION_ARCHIVE: archiving needs --retain-runs (or WORKFLOWD_RETAIN_RUNS)")
        }
        return RetentionPolicy(
            runsOlderThanMilliseconds: runs, eventsOlderThanMilliseconds: events, archive: archive,
            intervalMilliseconds: Int(interval ?? 300_000))
    }
}

/// Everything `serve` and `demo` run: database, engine, socket server.
final class Service {
    let db: DatabaseHandle
    let engine: WorkflowEngine
    let server: WorkflowServer
    let logger: Logger
    private var engineTask: Task<Void, Error>?

    init(database: DatabaseOptions, server options: ServerOptions, env: [String: String]) async throws {
        let settings = try Settings.resolve(database, env: env)
        let logger = settings.makeLogger(label: "workflowd")
        self.logger = logger
        let serverConfiguration = try options.serverConfiguration(dataDirectory: settings.dataDirectory, env: env)
        let engineConfiguration = try options.engineConfiguration(env: env)
        let orders = try options.orderConfiguration(env: env)
        try FileManager.default.createDirectory(atPath: settings.dataDirectory, withIntermediateDirectories: true)
        let db = try await DatabaseHandle(settings: settings, logger: logger)
        do {
            // With the schema current, neither path needs more than SELECT: `serve` runs with a
            // user that may only read and write the tables (docs/operations.md, "Least privilege").
            let migrator = SchemaMigrator(pool: db.pool, logger: logger)
            if options.noMigrate {
                try await migrator.verify()
            } else {
                try await migrator.migrate()
            }
            try await db.cluster.checkTables(db.pool, logger: logger)
            if db.cluster.galera && engineConfiguration.leaseTTLMilliseconds < 10_000 {
                // A node that dies stalls the cluster's writes until the others evict it
                // (evs.suspect_timeout, 5 s by default): renewals stall with them.
                logger.warning(
                    "lease TTL below 10 s on a Galera cluster: leases will change hands whenever a node failure stalls the cluster's writes; use --lease-ttl-ms 10000 or more",
                    metadata: ["lease.ttl_ms": "\(engineConfiguration.leaseTTLMilliseconds)"])
            }
            let store = MariaDBWorkflowStore(pool: db.pool, logger: logger)
            var engineConfiguration = engineConfiguration
            engineConfiguration.maxWritesWaitingInTransaction = db.pool.poolConfiguration.maxOpen - 1
            let engine = try WorkflowEngine(
                store: store, definitions: [try OrderWorkflow.definition(configuration: orders)],
                configuration: engineConfiguration, logger: logger)
            self.engine = engine
            self.server = WorkflowServer(configuration: serverConfiguration, service: engine, logger: logger)
            self.db = db
        } catch {
            await db.close()
            throw error
        }
    }

    var socketPath: String { server.configuration.socketPath }

    /// Starts the engine's loops and the socket server.
    func start() throws {
        let engine = self.engine
        engineTask = Task { try await engine.run() }
        do {
            try server.start()
        } catch {
            engine.shutdown()
            throw error
        }
    }

    /// Graceful stop: the server drains (in-flight requests are answered, new ones get
    /// DRAINING), then the engine finishes its in-flight steps and releases its leases, then the
    /// pool closes and an embedded database is stopped.
    func stop() async {
        await server.drain()
        engine.shutdown()
        _ = try? await engineTask?.value
        await db.close()
    }
}

/// Waits for SIGTERM or SIGINT (the first one wins).
enum Signals {
    static func wait() async -> Int32 {
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let holder = SignalSources()
        return await withCheckedContinuation { (c: CheckedContinuation<Int32, Never>) in
            holder.install(signals: [SIGTERM, SIGINT]) { c.resume(returning: $0) }
        }
    }
}

/// Keeps the dispatch signal sources alive and resumes the waiter exactly once.
// @unchecked Sendable: `sources` and `done` are only touched on `queue`, a serial queue.
final class SignalSources: @unchecked Sendable {
    private let queue = DispatchQueue(label: "workflowd.signals")
    private var sources: [any DispatchSourceSignal] = []
    private var done = false

    func install(signals: [Int32], _ fire: @escaping @Sendable (Int32) -> Void) {
        queue.sync {
            for sig in signals {
                let s = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                s.setEventHandler { [unowned self] in
                    guard !self.done else { return }
                    self.done = true
                    fire(sig)
                }
                s.resume()
                sources.append(s)
            }
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the service (the default command): the engine and the Unix-socket server.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var server: ServerOptions

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let service = try await Service(database: database, server: server, env: env)
        do {
            try service.start()
        } catch {
            await service.stop()
            throw error
        }
        service.logger.info("ready", metadata: ["socket": "\(service.socketPath)", "pid": "\(getpid())"])
        let sig = await Signals.wait()
        service.logger.info("stopping", metadata: ["signal": "\(sig == SIGTERM ? "SIGTERM" : "SIGINT")"])
        await service.stop()
        service.logger.info("stopped")
    }
}
