import ArgumentParser
import Foundation
import Logging
import WorkflowMariaDB

/// Options every command that talks to the database shares. Each may also come from an
/// environment variable; a flag wins over the variable, which wins over the default.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: "MariaDB DSN (env WORKFLOWD_DSN). Without one, a private MariaDB is started in the data folder.")
    var dsn: String?

    @Option(name: .customLong("data-dir"), help: "Folder for the socket and the embedded database (env WORKFLOWD_DATA_DIR, default .workflowd).")
    var dataDir: String?

    @Option(name: .customLong("pool-max-open"), help: "Most open database connections (env WORKFLOWD_POOL_MAX_OPEN, default 25).")
    var poolMaxOpen: Int?

    @Option(name: .customLong("pool-max-idle"), help: "Idle connections kept open (env WORKFLOWD_POOL_MAX_IDLE, default 5).")
    var poolMaxIdle: Int?

    @Option(name: .customLong("pool-max-lifetime"), help: "Recycle connections older than this, e.g. 5m (env WORKFLOWD_POOL_MAX_LIFETIME, default 5m).")
    var poolMaxLifetime: String?

    @Option(name: .customLong("db-tls-ca"), help: "CA certificate (PEM) that signs the database server's certificate, for a DSN with tls=true (env WORKFLOWD_DB_TLS_CA; the DSN's tls-ca wins).")
    var dbTLSCA: String?

    @Option(name: .customLong("db-tls-cert"), help: "Client certificate (PEM) for the database, with --db-tls-key (env WORKFLOWD_DB_TLS_CERT; the DSN's tls-cert wins).")
    var dbTLSCert: String?

    @Option(name: .customLong("db-tls-key"), help: "Private key (PEM) of the client certificate (env WORKFLOWD_DB_TLS_KEY; the DSN's tls-key wins).")
    var dbTLSKey: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (env WORKFLOWD_LOG_LEVEL, default info).")
    var logLevel: String?
}

/// A configuration value that is wrong; the message names the flag or variable.
struct SettingsError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Resolved settings: flag, else environment, else default — validated once at start-up.
struct Settings {
    var dsn: String?
    var dataDirectory: String
    var pool: PoolConfiguration
    var logLevel: Logger.Level
    /// TLS files for the database from the flags or variables (not the DSN), each with the name
    /// of its source for error messages.
    var tlsFiles: [TLSFile] = []

    struct TLSFile {
        enum Role { case ca, cert, key }
        var role: Role
        var path: String
        var source: String
    }

    static func resolve(_ o: DatabaseOptions, env: [String: String]) throws -> Settings {
        var s = Settings(
            dsn: nil, dataDirectory: ".workflowd", pool: PoolConfiguration(), logLevel: .info)
        if let dsn = o.dsn ?? env["WORKFLOWD_DSN"], !dsn.isEmpty { s.dsn = dsn }
        s.dataDirectory = dataDirectory(flag: o.dataDir, env: env)
        for (role, flag, flagName, variable) in [
            (TLSFile.Role.ca, o.dbTLSCA, "--db-tls-ca", "WORKFLOWD_DB_TLS_CA"),
            (.cert, o.dbTLSCert, "--db-tls-cert", "WORKFLOWD_DB_TLS_CERT"),
            (.key, o.dbTLSKey, "--db-tls-key", "WORKFLOWD_DB_TLS_KEY"),
        ] {
            if let flag {
                guard !flag.isEmpty else { throw SettingsError(message: "\(flagName): the path is empty") }
                s.tlsFiles.append(TLSFile(role: role, path: flag, source: flagName))
            } else if let value = env[variable], !value.isEmpty {
                s.tlsFiles.append(TLSFile(role: role, path: value, source: variable))
            }
        }
        s.pool.maxOpen = try int(o.poolMaxOpen, env, "WORKFLOWD_POOL_MAX_OPEN", "--pool-max-open", 25, 1...1000)
        s.pool.maxIdle = try int(o.poolMaxIdle, env, "WORKFLOWD_POOL_MAX_IDLE", "--pool-max-idle", 5, 0...1000)
        if s.pool.maxIdle > s.pool.maxOpen { s.pool.maxIdle = s.pool.maxOpen }
        if let text = o.poolMaxLifetime ?? env["WORKFLOWD_POOL_MAX_LIFETIME"] {
            guard let seconds = duration(text), seconds > 0 else {
                throw SettingsError(
                    message: "\(o.poolMaxLifetime != nil ? "--pool-max-lifetime" : "WORKFLOWD_POOL_MAX_LIFETIME"): '\(text)' is not a duration such as 5m, 90s or 300")
            }
            s.pool.maxLifetimeSeconds = seconds
        }
        if let text = o.logLevel ?? env["WORKFLOWD_LOG_LEVEL"] {
            guard let level = Logger.Level(rawValue: text.lowercased()) else {
                throw SettingsError(
                    message: "\(o.logLevel != nil ? "--log-level" : "WORKFLOWD_LOG_LEVEL"): '\(text)' is not one of trace, debug, info, notice, warning, error, critical")
            }
            s.logLevel = level
        }
        return s
    }

    /// Resolves an integer setting with its range, naming the source in errors.
    static func int(
        _ flag: Int?, _ env: [String: String], _ variable: String, _ flagName: String, _ fallback: Int,
        _ range: ClosedRange<Int>
    ) throws -> Int {
        if let flag {
            guard range.contains(flag) else {
                throw SettingsError(message: "\(flagName): \(flag) is not in \(range.lowerBound)...\(range.upperBound)")
            }
            return flag
        }
        guard let text = env[variable], !text.isEmpty else { return fallback }
        guard let v = Int(text.trimmingCharacters(in: .whitespaces)), range.contains(v) else {
            throw SettingsError(message: "\(variable): '\(text)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return v
    }

    /// `--data-dir`, else `WORKFLOWD_DATA_DIR`, else `.workflowd`; absolute.
    static func dataDirectory(flag: String?, env: [String: String]) -> String {
        var dir = ".workflowd"
        if let d = flag ?? env["WORKFLOWD_DATA_DIR"], !d.isEmpty { dir = d }
        return absolutePath(dir)
    }

    /// The socket `serve` listens on and `health` asks: `--socket`, else `WORKFLOWD_SOCKET`,
    /// else `<data dir>/workflowd.sock`; absolute.
    static func socketPath(flag: String?, dataDirectory: String, env: [String: String]) -> String {
        absolutePath(flag ?? env["WORKFLOWD_SOCKET"].flatMap { $0.isEmpty ? nil : $0 } ?? dataDirectory + "/workflowd.sock")
    }

    /// The configured DSN, parsed, with the TLS files of the flags and variables applied: a
    /// file the DSN names itself (`tls-ca`, `tls-cert`, `tls-key`) wins, because the DSN is the
    /// more specific of the two. nil without a DSN (the embedded server, over its Unix socket).
    ///
    /// TLS files without TLS turned on in the DSN are an error rather than silently ignored (a
    /// CA alone must not look like TLS is in use); so is a certificate without its key, and a
    /// file that cannot be read.
    func databaseConfiguration() throws -> MariaDBConfiguration? {
        guard let dsn else {
            if let first = tlsFiles.first {
                throw SettingsError(
                    message: "\(first.source): TLS files need a DSN with tls=true (WORKFLOWD_DSN / --dsn); the embedded MariaDB is reached over its Unix socket")
            }
            return nil
        }
        var config: MariaDBConfiguration
        do {
            config = try MariaDBConfiguration(dsn: dsn)
        } catch {
            throw SettingsError(message: "WORKFLOWD_DSN / --dsn: \(error.message)")
        }
        var sources: [TLSFile.Role: String] = [:]
        for file in tlsFiles {
            switch file.role {
            case .ca where config.tlsCA == nil: config.tlsCA = file.path
            case .cert where config.tlsCert == nil: config.tlsCert = file.path
            case .key where config.tlsKey == nil: config.tlsKey = file.path
            case .ca, .cert, .key: continue  // the DSN's own parameter wins
            }
            sources[file.role] = file.source
        }
        if !sources.isEmpty, config.tls == .disabled {
            let names = tlsFiles.filter { sources[$0.role] != nil }.map(\.source).joined(separator: ", ")
            throw SettingsError(
                message: "\(names) set, but the DSN does not turn TLS on: add ?tls=true (certificate verified) or ?tls=skip-verify to WORKFLOWD_DSN / --dsn")
        }
        if (config.tlsCert == nil) != (config.tlsKey == nil) {
            throw SettingsError(
                message: "a client certificate needs both a certificate and a key (WORKFLOWD_DB_TLS_CERT and WORKFLOWD_DB_TLS_KEY, or the DSN's tls-cert and tls-key)")
        }
        for (role, path) in [(TLSFile.Role.ca, config.tlsCA), (.cert, config.tlsCert), (.key, config.tlsKey)] {
            guard let path else { continue }
            let source = sources[role] ?? "WORKFLOWD_DSN / --dsn parameter " + (role == .ca ? "tls-ca" : role == .cert ? "tls-cert" : "tls-key")
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw SettingsError(message: "\(source): cannot read '\(path)'")
            }
        }
        guard !config.database.isEmpty else {
            throw SettingsError(message: "WORKFLOWD_DSN / --dsn: the DSN names no database (…/dbname)")
        }
        return config
    }

    /// `300`, `90s`, `5m`, `1h`, `30d`, `500ms` → seconds.
    static func duration(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let v = Double(t) { return v }
        for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86_400.0)] where t.hasSuffix(suffix) {
            if let v = Double(t.dropLast(suffix.count)) { return v * factor }
        }
        return nil
    }

    /// A positive duration setting (`30d`, `12h`, `90m`) in milliseconds, from the flag or else
    /// the variable; nil when neither is set. Errors name the flag or variable.
    static func milliseconds(
        _ flag: String?, _ env: [String: String], _ variable: String?, _ flagName: String, minimum: Int64 = 1
    ) throws -> Int64? {
        let text: String
        let source: String
        if let flag {
            (text, source) = (flag, flagName)
        } else if let variable, let value = env[variable], !value.isEmpty {
            (text, source) = (value, variable)
        } else {
            return nil
        }
        guard let seconds = duration(text), seconds.isFinite, seconds * 1000 >= Double(minimum), seconds < 1e12 else {
            throw SettingsError(message: "\(source): '\(text)' is not a duration of at least \(minimum) ms such as 30d, 12h, 90m or 45s")
        }
        return Int64((seconds * 1000).rounded())
    }

    /// A yes/no setting: the flag when given, else the variable (`1`/`true`/`yes`, `0`/`false`/`no`).
    static func bool(_ flag: Bool, _ env: [String: String], _ variable: String) throws -> Bool {
        if flag { return true }
        guard let text = env[variable]?.trimmingCharacters(in: .whitespaces).lowercased(), !text.isEmpty else { return false }
        switch text {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw SettingsError(message: "\(variable): '\(text)' is not one of 1, true, yes, 0, false, no")
        }
    }

    static func absolutePath(_ p: String) -> String {
        if p.hasPrefix("/") { return p }
        let cwd = FileManager.default.currentDirectoryPath
        return URL(fileURLWithPath: cwd).appendingPathComponent(p).standardizedFileURL.path
    }

    func makeLogger(label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = logLevel
        return logger
    }
}

/// The database a command works on: the configured DSN, or the private server in the data
/// folder (started here, stopped by `close()` only if this process started it).
final class DatabaseHandle {
    let configuration: MariaDBConfiguration
    let pool: MariaDBPool
    /// What the server is (a Galera node or not) and how its settings were checked.
    let cluster: ClusterCheck
    private let embedded: PrivateMariaDB?
    private let startedEmbedded: Bool
    let logger: Logger

    /// The name of the database workflowd uses inside the embedded server.
    static let embeddedDatabaseName = "workflowd"

    init(settings: Settings, logger: Logger) async throws {
        self.logger = logger
        var configuration: MariaDBConfiguration
        if let configured = try settings.databaseConfiguration() {
            configuration = configured
            embedded = nil
            startedEmbedded = false
            var metadata: Logger.Metadata = ["db": "\(configuration)"]
            if let ca = configuration.tlsCA { metadata["tls.ca"] = "\(ca)" }
            if let cert = configuration.tlsCert { metadata["tls.cert"] = "\(cert)" }
            logger.info("using MariaDB", metadata: metadata)
        } else {
            let server = PrivateMariaDB(directory: settings.dataDirectory + "/mariadb")
            let wasRunning = server.isRunning
            logger.info("starting the embedded MariaDB", metadata: ["dir": "\(server.directory)"])
            _ = try await Blocking.run { try server.start() }
            embedded = server
            startedEmbedded = !wasRunning
            var base = try MariaDBConfiguration(dsn: server.dsn)
            let admin = MariaDBPool(configuration: base, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: logger)
            try await admin.withConnection {
                try $0.executeText(
                    "CREATE DATABASE IF NOT EXISTS \(Self.embeddedDatabaseName) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            }
            await admin.shutdownOffThread()
            base.database = Self.embeddedDatabaseName
            configuration = base
        }
        // Is it a Galera node, and are its settings safe? (One query over the pool's first
        // connection; on a cluster the pool is made again with the cluster's settings.)
        var pool = MariaDBPool(configuration: configuration, pool: settings.pool, logger: logger)
        let cluster: ClusterCheck
        do {
            cluster = try await pool.withConnection { try ClusterCheck.probe($0) }
            try cluster.requireSafe()
        } catch {
            await pool.shutdownOffThread()
            throw error
        }
        if cluster.galera {
            let (c, p) = cluster.adjusted(configuration, settings.pool)
            await pool.shutdownOffThread()
            configuration = c
            pool = MariaDBPool(configuration: c, pool: p, logger: logger)
            logger.info(
                "MariaDB is a node of a Galera cluster",
                metadata: [
                    "cluster.size": "\(cluster.clusterSize.map(String.init) ?? "?")",
                    "wsrep_sync_wait": "\(c.syncWait ?? 0)", "transaction.attempts": "\(p.transactionAttempts)",
                ])
        }
        self.configuration = configuration
        self.cluster = cluster
        self.pool = pool
    }

    /// Creates the database named in `dsn` if it is missing (for `migrate --create-database`).
    static func createDatabase(settings: Settings, logger: Logger) async throws {
        guard var config = try settings.databaseConfiguration() else { return }
        let name = config.database
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw SettingsError(message: "--create-database: the database name must be letters, digits and _ only")
        }
        config.database = ""
        let admin = MariaDBPool(
            configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: logger)
        do {
            try await admin.withConnection {
                try $0.executeText("CREATE DATABASE IF NOT EXISTS `\(name)` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            }
        } catch {
            await admin.shutdownOffThread()
            throw error
        }
        await admin.shutdownOffThread()
    }

    /// A one-line hint for humans on how to look at the tables.
    var sqlHint: String {
        if let embedded {
            return "mariadb --no-defaults -S \(embedded.socketPath) -uroot \(Self.embeddedDatabaseName)"
        }
        return "mariadb (connect as in your DSN) \(configuration.database)"
    }

    /// Closes the pool and stops an embedded server this process started (both block, so they
    /// run off the cooperative pool).
    func close() async {
        await pool.shutdownOffThread()
        if let embedded, startedEmbedded {
            do {
                try await Blocking.run { try embedded.stop() }
            } catch {
                logger.warning("could not stop the embedded MariaDB", metadata: ["error": "\(error)"])
            }
        }
    }
}

extension MariaDBPool {
    /// `shutdown()` waits for the database threads; do that waiting on a thread of its own.
    func shutdownOffThread() async {
        _ = try? await Blocking.run { self.shutdown() }
    }
}
