import Foundation
import Logging
import WorkflowMariaDB

#if canImport(Glibc)
import Glibc
#endif

let quietLogger: Logger = {
    var l = Logger(label: "workflowd-bench")
    l.logLevel = .warning
    return l
}()

/// The MariaDB the benchmark uses: a DSN given, WORKFLOWD_TEST_DSN, or a private server in /tmp.
struct BenchDatabaseServer: Sendable {
    let base: MariaDBConfiguration
    /// Set when the bench started a private server (stopped at the end).
    let started: PrivateMariaDB?

    static func open(dsn: String?) throws -> BenchDatabaseServer {
        if let dsn, !dsn.isEmpty {
            return BenchDatabaseServer(base: try MariaDBConfiguration(dsn: dsn), started: nil)
        }
        if let dsn = ProcessInfo.processInfo.environment["WORKFLOWD_TEST_DSN"], !dsn.isEmpty {
            return BenchDatabaseServer(base: try MariaDBConfiguration(dsn: dsn), started: nil)
        }
        let server = PrivateMariaDB(directory: "/tmp/wfbench-\(getuid())")
        let wasRunning = server.isRunning
        progress("starting a private MariaDB in \(server.directory)")
        try server.start()
        return BenchDatabaseServer(base: try MariaDBConfiguration(dsn: server.dsn), started: wasRunning ? nil : server)
    }

    /// The mariadbd pid when the bench runs its own private server (for its CPU per order).
    var privatePid: Int32? {
        guard let started, let text = try? String(contentsOfFile: started.pidFilePath, encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    static let statusNames = [
        "Questions", "Com_stmt_execute", "Com_commit", "Com_begin", "Com_rollback", "Innodb_data_fsyncs",
        "Created_tmp_tables", "Created_tmp_disk_tables",
    ]

    /// Server-wide counters (SHOW GLOBAL STATUS); on a shared server they include other clients.
    func globalStatus() async -> [String: Int] {
        var config = base
        config.database = ""
        let pool = MariaDBPool(
            configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60),
            logger: quietLogger)
        defer { pool.shutdown() }
        let list = Self.statusNames.map { "'\($0)'" }.joined(separator: ", ")
        let rows = (try? await pool.withConnection { try $0.queryText("SHOW GLOBAL STATUS WHERE Variable_name IN (\(list))") }) ?? []
        var out: [String: Int] = [:]
        for r in rows where r.count >= 2 {
            if let k = r[0], let v = r[1].flatMap({ Int($0) }) { out[k] = v }
        }
        return out
    }

    func close() {
        if let started {
            progress("stopping the private MariaDB")
            try? started.stop()
        }
    }

    /// A fresh database with the schema applied.
    func createDatabase(tag: String) async throws -> BenchDatabase {
        var config = base
        let name = "wfbench_\(tag)_\(UInt32.random(in: 0...UInt32.max))"
        config.database = ""
        let admin = MariaDBPool(
            configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60),
            logger: quietLogger)
        defer { admin.shutdown() }
        try await admin.withConnection { try $0.executeText("CREATE DATABASE \(name)") }
        config.database = name
        let pool = MariaDBPool(
            configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60),
            logger: quietLogger)
        defer { pool.shutdown() }
        _ = try await SchemaMigrator(pool: pool, logger: quietLogger).migrate()
        return BenchDatabase(configuration: config)
    }
}

struct BenchDatabase: Sendable {
    let configuration: MariaDBConfiguration

    /// The DSN in the Go form workflowd accepts.
    var dsn: String {
        let c = configuration
        let auth = c.password.map { "\(c.user):\($0)" } ?? c.user
        switch c.endpoint {
        case .unix(let path): return "\(auth)@unix(\(path))/\(c.database)"
        case .tcp(let host, let port): return "\(auth)@tcp(\(host):\(port))/\(c.database)"
        }
    }

    func drop() async {
        var config = configuration
        let name = config.database
        config.database = ""
        let admin = MariaDBPool(
            configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60),
            logger: quietLogger)
        defer { admin.shutdown() }
        try? await admin.withConnection { try $0.executeText("DROP DATABASE IF EXISTS \(name)") }
    }

    func scalar(_ sql: String) async throws -> Int {
        let pool = MariaDBPool(
            configuration: configuration, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60),
            logger: quietLogger)
        defer { pool.shutdown() }
        let rows = try await pool.withConnection { try $0.queryText(sql) }
        return Int(rows.first?.first??.description ?? "") ?? -1
    }
}

/// CPU and memory of a process, from /proc.
struct ProcSample {
    var cpuSeconds: Double
    var rssMB: Double
    var hwmMB: Double

    static func read(pid: Int32) -> ProcSample? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after "comm)": state is field 3; utime 14, stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let ut = Double(fields[11]), let st = Double(fields[12]) else { return nil }
        let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
        var rss = 0.0
        var hwm = 0.0
        if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") {
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if line.hasPrefix("VmRSS:"), parts.count >= 2 { rss = (Double(parts[1]) ?? 0) / 1024 }
                if line.hasPrefix("VmHWM:"), parts.count >= 2 { hwm = (Double(parts[1]) ?? 0) / 1024 }
            }
        }
        return ProcSample(cpuSeconds: (ut + st) / tick, rssMB: rss, hwmMB: hwm)
    }
}

/// The bench process's own CPU (user + system), to show what the client costs on shared cores.
func selfCPUSeconds() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec)
        + Double(u.ru_stime.tv_usec) / 1e6
}

/// One `workflowd serve` child on a temporary socket.
final class ServerChild: @unchecked Sendable {
    let process = Process()
    let directory: String
    let socketPath: String
    let logPath: String

    init(binary: String, database: BenchDatabase, env: [String: String], extraArguments: [String]) throws {
        directory = "/tmp/wfb-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        socketPath = directory + "/s.sock"
        logPath = directory + "/server.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments =
            ["serve", "--dsn", database.dsn, "--socket", socketPath, "--data-dir", directory, "--log-level", "warning"]
            + extraArguments
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "WORKFLOWD_DSN")
        environment.removeValue(forKey: "WORKFLOWD_SOCKET")
        for (k, v) in env { environment[k] = v }
        process.environment = environment
        let log = FileHandle(forWritingAtPath: logPath)!
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func waitReady(timeout: Double = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else { throw BenchError("workflowd exited early:\n\(log)") }
            if let c = try? LineSocket(path: socketPath) {
                if (try? c.send("{\"op\":\"ping\"}\n")) != nil, let line = try? c.readLine(),
                    String(decoding: line, as: UTF8.self).contains("\"ok\":true")
                {
                    return
                }
            }
            usleep(50_000)
        }
        throw BenchError("workflowd did not become ready:\n\(log)")
    }

    /// SIGTERM, wait (then SIGKILL after `timeout`), remove the folder.
    func stop(timeout: Double = 30) {
        if !process.isRunning {
            // It died during the scenario: keep its log and say how it ended.
            let kept = "/tmp/wfb-server-died-\(pid).log"
            try? FileManager.default.copyItem(atPath: logPath, toPath: kept)
            progress(
                "workflowd (pid \(pid)) had exited during the scenario: \(process.terminationReason == .uncaughtSignal ? "signal" : "exit status") \(process.terminationStatus); log kept in \(kept)")
            for l in log.split(separator: "\n").suffix(8) { progress("  " + l.prefix(300)) }
        }
        if process.isRunning { kill(pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        let problems = log.split(separator: "\n").filter { $0.contains("error") || $0.contains("critical") }
        if !problems.isEmpty {
            progress("server log (\(problems.count) error lines; last 5):")
            for l in problems.suffix(5) { progress("  " + l.prefix(300)) }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Progress lines go to stderr so stdout holds only the table.
func progress(_ s: String) {
    let line = "[bench] " + s + "\n"
    FileHandle.standardError.write(Data(line.utf8))
}
