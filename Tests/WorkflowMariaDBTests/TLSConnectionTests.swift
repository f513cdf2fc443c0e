import Foundation
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

#if canImport(Glibc)
import Glibc
#endif

/// TLS to MariaDB against a real server: certificates made with `openssl` (a test CA, a server
/// certificate for 127.0.0.1, and a second CA that signed nothing), a private MariaDB on
/// 127.0.0.1 with `--ssl-ca/--ssl-cert/--ssl-key`, and a user that the server only admits over
/// TLS (`REQUIRE SSL`). Then `workflowd migrate` and `serve` as real processes, with the CA
/// given in `WORKFLOWD_DB_TLS_CA`.
@Suite("MariaDB over TLS", .timeLimit(.minutes(4)))
struct TLSConnectionTests {
    static let password = "Tl5-Secret-pw9"

    @Test func verifiedSkipVerifyWrongCAPlainTextAndWorkflowdOverTLS() async throws {
        let port = Int.random(in: 33_001...43_000)
        let dir = "/tmp/wf-tls-\(getpid())-\(port)"
        try FileManager.default.createDirectory(atPath: dir + "/certs", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certs = try await offThread { try TestCertificates(directory: dir + "/certs") }

        var config = PrivateMariaDB.Configuration()
        config.extraServerArguments = [
            "--skip-networking=0", "--bind-address=127.0.0.1", "--port=\(port)",
            "--ssl-ca=\(certs.caPath)", "--ssl-cert=\(certs.serverCertPath)", "--ssl-key=\(certs.serverKeyPath)",
        ]
        let server = PrivateMariaDB(directory: dir + "/db", configuration: config)
        _ = try await offThread { try server.start() }
        defer { try? server.stop() }  // (a defer cannot await; stopping takes well under a second)
        let admin = MariaDBPool(
            configuration: try MariaDBConfiguration(dsn: server.dsn),
            pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: TestDatabase.logger)
        try await admin.withConnection { c in
            try c.executeText("CREATE DATABASE tls_db")
            try c.executeText("CREATE USER 'tls_user'@'127.0.0.1' IDENTIFIED BY '\(Self.password)' REQUIRE SSL")
            try c.executeText("GRANT ALL ON tls_db.* TO 'tls_user'@'127.0.0.1'")
            try c.executeText("CREATE USER 'x509_user'@'127.0.0.1' IDENTIFIED BY '\(Self.password)' REQUIRE X509")
            try c.executeText("GRANT ALL ON tls_db.* TO 'x509_user'@'127.0.0.1'")
        }
        await offThreadShutdown(admin)
        let base = "tls_user:\(Self.password)@tcp(127.0.0.1:\(port))/tls_db?timeout=5s"

        // (1) tls=true with the right CA: connected, and the session is encrypted.
        let verified = try await sessionTLS(base + "&tls=true&tls-ca=\(certs.caPath)")
        print("TLS-VERIFY: Ssl_version=\(verified.version) Ssl_cipher=\(verified.cipher)")
        #expect(!verified.cipher.isEmpty && verified.version.hasPrefix("TLS"), "\(verified)")

        // (2) tls=skip-verify without any CA: encrypted all the same.
        let skipped = try await sessionTLS(base + "&tls=skip-verify")
        print("TLS-SKIP-VERIFY: Ssl_version=\(skipped.version) Ssl_cipher=\(skipped.cipher)")
        #expect(!skipped.cipher.isEmpty, "\(skipped)")

        // (3) tls=true with a CA that did not sign the server's certificate, and with none (the
        // system's CAs do not know the test CA): refused, a TLS error, never the password.
        for (label, dsn) in [("wrong CA", base + "&tls=true&tls-ca=\(certs.otherCAPath)"), ("no CA", base + "&tls=true")] {
            let error = try await connectionError(dsn)
            print("TLS-REFUSED (\(label)): \(error)")
            #expect(error.kind == .unavailable, "\(label): \(error)")
            #expect(error.errno == 2026, "\(label): \(error)")
            let text = "\(error)"
            #expect(["TLS", "SSL", "certificate"].contains { text.localizedCaseInsensitiveContains($0) }, "\(label): \(text)")
            #expect(!text.contains(Self.password))
        }

        // (4) Plain text for a REQUIRE SSL user: the server says access denied (the same user and
        // password connected over TLS in (1) and (2), so TLS is what is missing).
        let plain = try await connectionError(base + "&tls=false")
        print("TLS-PLAINTEXT-REFUSED: \(plain)")
        #expect(plain.errno == 1045 && plain.kind == .configuration, "\(plain)")
        #expect(!"\(plain)".contains(Self.password))

        // (5) workflowd itself, as real processes: the DSN says tls=true, the CA comes from
        // WORKFLOWD_DB_TLS_CA.
        let dsn = "tls_user:\(Self.password)@tcp(127.0.0.1:\(port))/tls_db?tls=true&timeout=5s"
        let tlsEnv = ["WORKFLOWD_DSN": dsn, "WORKFLOWD_DB_TLS_CA": certs.caPath]
        let withoutCA = try await offThread { try Tool.run(["migrate"], env: ["WORKFLOWD_DSN": dsn]) }
        print("TLS-MIGRATE-WITHOUT-CA: exit \(withoutCA.status): \(withoutCA.stderr.suffix(300))")
        #expect(withoutCA.status != 0, "\(withoutCA)")
        #expect(withoutCA.stderr.contains("TLS/SSL") || withoutCA.stderr.contains("certificate"), "\(withoutCA)")
        #expect(!(withoutCA.stdout + withoutCA.stderr).contains(Self.password))

        let migrated = try await offThread { try Tool.run(["migrate"], env: tlsEnv) }
        print("TLS-MIGRATE: exit \(migrated.status): \(migrated.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        #expect(migrated.status == 0, "\(migrated)")
        #expect(migrated.stdout.contains("schema migrated from version 0"), "\(migrated)")
        #expect(!(migrated.stdout + migrated.stderr).contains(Self.password))

        // The DSN's own tls-ca wins over the variable (here a CA that would be refused).
        let dsnWins = try await offThread {
            try Tool.run(["migrate"], env: ["WORKFLOWD_DSN": dsn + "&tls-ca=\(certs.caPath)", "WORKFLOWD_DB_TLS_CA": certs.otherCAPath])
        }
        #expect(dsnWins.status == 0 && dsnWins.stdout.contains("nothing to do"), "\(dsnWins)")
        // Settings that cannot work stop the command with a message naming the variable.
        let noTLS = try await offThread {
            try Tool.run(["migrate"], env: ["WORKFLOWD_DSN": base, "WORKFLOWD_DB_TLS_CA": certs.caPath])
        }
        print("TLS-CA-WITHOUT-TLS: exit \(noTLS.status): \(noTLS.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        #expect(noTLS.status != 0 && noTLS.stderr.contains("WORKFLOWD_DB_TLS_CA set, but the DSN does not turn TLS on"), "\(noTLS)")
        let missing = try await offThread {
            try Tool.run(["migrate"], env: ["WORKFLOWD_DSN": dsn, "WORKFLOWD_DB_TLS_CA": dir + "/certs/missing.pem"])
        }
        #expect(missing.status != 0 && missing.stderr.contains("WORKFLOWD_DB_TLS_CA: cannot read"), "\(missing)")
        let halfPair = try await offThread {
            try Tool.run(["migrate"], env: tlsEnv.merging(["WORKFLOWD_DB_TLS_CERT": certs.serverCertPath]) { $1 })
        }
        #expect(halfPair.status != 0 && halfPair.stderr.contains("needs both a certificate and a key"), "\(halfPair)")
        // A client certificate from WORKFLOWD_DB_TLS_CERT / _KEY, for a REQUIRE X509 user: without
        // it the server refuses, with it `migrate` connects.
        let x509DSN = "x509_user:\(Self.password)@tcp(127.0.0.1:\(port))/tls_db?tls=true&timeout=5s"
        let noCert = try await offThread {
            try Tool.run(["migrate"], env: ["WORKFLOWD_DSN": x509DSN, "WORKFLOWD_DB_TLS_CA": certs.caPath])
        }
        #expect(noCert.status != 0 && noCert.stderr.contains("1045"), "\(noCert)")
        let withCert = try await offThread {
            try Tool.run(["migrate"], env: [
                "WORKFLOWD_DSN": x509DSN, "WORKFLOWD_DB_TLS_CA": certs.caPath,
                "WORKFLOWD_DB_TLS_CERT": certs.clientCertPath, "WORKFLOWD_DB_TLS_KEY": certs.clientKeyPath,
            ])
        }
        print("TLS-CLIENT-CERT: without exit \(noCert.status), with exit \(withCert.status): \(withCert.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        #expect(withCert.status == 0 && withCert.stdout.contains("nothing to do"), "\(withCert)")
        for r in [dsnWins, noTLS, missing, halfPair, noCert, withCert] { #expect(!(r.stdout + r.stderr).contains(Self.password)) }

        let socket = dir + "/s.sock"
        let serve = try Tool.start(
            ["serve", "--socket", socket, "--data-dir", dir + "/data", "--pool-max-open", "4"],
            env: tlsEnv.merging(["WORKFLOWD_LOG_LEVEL": "info"]) { $1 }, log: dir + "/serve.log")
        defer { Tool.kill(serve) }
        var health = Tool.Result(status: -1, stdout: "", stderr: "")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, serve.isRunning {
            health = try await offThread { try Tool.run(["health", "--socket", socket, "--timeout", "20s"]) }
            if health.status == 0 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let serveLog = (try? String(contentsOfFile: dir + "/serve.log", encoding: .utf8)) ?? ""
        print("TLS-SERVE-HEALTH: exit \(health.status)\n\(health.stdout)")
        #expect(health.status == 0, "health: \(health)\nserve log:\n\(serveLog.suffix(3000))")
        #expect(health.stdout.contains("database") && health.stdout.hasSuffix("healthy\n"), "\(health)")
        // The server's sessions are tls_user's, which the server admits only over TLS.
        let sessions = try await adminQuery(server, "SELECT COUNT(*) FROM information_schema.processlist WHERE USER = 'tls_user'")
        #expect((Int(sessions[0][0] ?? "") ?? 0) > 0, "\(sessions)")
        #expect(serveLog.contains("tls=true") && serveLog.contains(certs.caPath), "\(serveLog.suffix(2000))")

        kill(serve.processIdentifier, SIGTERM)
        let stopDeadline = Date().addingTimeInterval(60)
        while serve.isRunning, Date() < stopDeadline { try await Task.sleep(for: .milliseconds(50)) }
        let stopped = serve.isRunning ? -1 : serve.terminationStatus
        let fullLog = (try? String(contentsOfFile: dir + "/serve.log", encoding: .utf8)) ?? ""
        #expect(stopped == 0, "\(fullLog.suffix(2000))")
        #expect(!fullLog.contains(Self.password))
    }

    /// `Ssl_version` and `Ssl_cipher` of a fresh session opened with `dsn`.
    func sessionTLS(_ dsn: String) async throws -> (version: String, cipher: String) {
        let configuration = try MariaDBConfiguration(dsn: dsn)
        let rows = try await offThread { () -> [[String?]] in
            let c = try MariaDBConnection(configuration: configuration)
            defer { c.close() }
            return try c.queryText("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
        }
        let values = Dictionary(rows.map { ($0[0] ?? "", $0[1] ?? "") }) { a, _ in a }
        return (values["Ssl_version"] ?? "", values["Ssl_cipher"] ?? "")
    }

    /// The error of connecting with `dsn`; fails the test if it connects.
    func connectionError(_ dsn: String) async throws -> MariaDBError {
        let configuration = try MariaDBConfiguration(dsn: dsn)
        let outcome = try await offThread { () -> MariaDBError? in
            do {
                let c = try MariaDBConnection(configuration: configuration)
                c.close()
                return nil
            } catch let error as MariaDBError {
                return error
            }
        }
        guard let outcome else {
            Issue.record("connected: \(configuration)")
            return MariaDBError(kind: .other, message: "connected")
        }
        return outcome
    }

    func adminQuery(_ server: PrivateMariaDB, _ sql: String) async throws -> [[String?]] {
        let configuration = try MariaDBConfiguration(dsn: server.dsn)
        return try await offThread {
            let c = try MariaDBConnection(configuration: configuration)
            defer { c.close() }
            return try c.queryText(sql)
        }
    }

    func offThreadShutdown(_ pool: MariaDBPool) async {
        _ = try? await offThread { pool.shutdown() }
    }
}

/// A test CA, a server certificate it signed for 127.0.0.1 (CN and IP SAN), a client
/// certificate it signed, and a second CA that signed nothing. Made with the `openssl` command (scripts/install-deps.sh installs it);
/// blocking, so call it off the cooperative pool.
struct TestCertificates: Sendable {
    let caPath: String
    let serverCertPath: String
    let serverKeyPath: String
    let otherCAPath: String
    let clientCertPath: String
    let clientKeyPath: String

    init(directory: String) throws {
        caPath = directory + "/ca.pem"
        serverCertPath = directory + "/server.pem"
        serverKeyPath = directory + "/server.key"
        otherCAPath = directory + "/other-ca.pem"
        clientCertPath = directory + "/client.pem"
        clientKeyPath = directory + "/client.key"
        let caExtensions = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        try Self.openssl(
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2", "-subj", "/CN=workflowd test CA",
             "-keyout", directory + "/ca.key", "-out", caPath] + caExtensions, in: directory)
        try Self.openssl(
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2", "-subj", "/CN=workflowd other CA",
             "-keyout", directory + "/other-ca.key", "-out", otherCAPath] + caExtensions, in: directory)
        try Self.openssl(
            ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=127.0.0.1",
             "-keyout", serverKeyPath, "-out", directory + "/server.csr"], in: directory)
        try "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            .write(toFile: directory + "/server.ext", atomically: true, encoding: .utf8)
        try Self.openssl(
            ["x509", "-req", "-sha256", "-days", "2", "-in", directory + "/server.csr", "-CA", caPath,
             "-CAkey", directory + "/ca.key", "-CAcreateserial", "-extfile", directory + "/server.ext", "-out", serverCertPath],
            in: directory)
        try Self.openssl(
            ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=workflowd test client",
             "-keyout", clientKeyPath, "-out", directory + "/client.csr"], in: directory)
        try "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
            .write(toFile: directory + "/client.ext", atomically: true, encoding: .utf8)
        try Self.openssl(
            ["x509", "-req", "-sha256", "-days", "2", "-in", directory + "/client.csr", "-CA", caPath,
             "-CAkey", directory + "/ca.key", "-CAcreateserial", "-extfile", directory + "/client.ext", "-out", clientCertPath],
            in: directory)
    }

    static func openssl(_ arguments: [String], in directory: String) throws {
        guard let path = ["/usr/bin/openssl", "/usr/local/bin/openssl", "/bin/openssl"].first(where: {
            FileManager.default.isExecutableFile(atPath: $0)
        }) else {
            throw MariaDBError(kind: .configuration, message: "openssl is not installed (scripts/install-deps.sh installs it)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw MariaDBError(kind: .other, message: "openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(text)")
        }
    }
}

/// The built `workflowd` (next to the test bundle, or `WORKFLOWD_BIN`) as a child process.
/// Blocking calls: use them off the cooperative pool.
enum Tool {
    struct Result: Sendable, CustomStringConvertible {
        var status: Int32
        var stdout: String
        var stderr: String
        var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
    }

    static var binary: String {
        if let bin = ProcessInfo.processInfo.environment["WORKFLOWD_BIN"], !bin.isEmpty { return bin }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("workflowd").path
    }

    static func environment(_ env: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        for key in environment.keys where key.hasPrefix("WORKFLOWD_") && key != "WORKFLOWD_BIN" {
            environment.removeValue(forKey: key)
        }
        environment["WORKFLOWD_LOG_LEVEL"] = "warning"
        for (k, v) in env { environment[k] = v }
        return environment
    }

    /// Runs `workflowd arguments…` to completion.
    static func run(_ arguments: [String], env: [String: String] = [:]) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw MariaDBError(kind: .configuration, message: "\(binary) is missing: run `swift build --build-tests` first")
        }
        let dir = NSTemporaryDirectory() + "wftool-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments
        p.environment = environment(env)
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: dir + "/out")!
        p.standardError = FileHandle(forWritingAtPath: dir + "/err")!
        try p.run()
        p.waitUntilExit()
        return Result(
            status: p.terminationStatus,
            stdout: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
    }

    /// Starts `workflowd arguments…` with stdout and stderr in `log`.
    static func start(_ arguments: [String], env: [String: String], log: String) throws -> Process {
        FileManager.default.createFile(atPath: log, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments
        p.environment = environment(env)
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: log)!
        p.standardError = FileHandle(forWritingAtPath: log)!
        try p.run()
        return p
    }

    /// SIGKILL if still running (a test that fails half-way leaves no server behind).
    static func kill(_ p: Process) {
        if p.isRunning {
            Glibc.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
    }
}
