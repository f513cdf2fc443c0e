import Foundation
import Testing

@testable import WorkflowMariaDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Starts real `mariadbd` processes in private folders under /tmp (short paths: Unix sockets
/// allow 107 bytes). Serialized: each server takes a second of CPU to start on a 2-core machine.
@Suite(.serialized)
struct PrivateMariaDBTests {
    @Test(.timeLimit(.minutes(2)))
    func startAnswersOnTheSocketAndStopRemovesIt() async throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let server = PrivateMariaDB(directory: folder.path + "/db")
        #expect(!server.isRunning)

        let socket = try await offThread { try server.start() }
        defer { try? server.stop() }
        #expect(socket == folder.path + "/db/mysqld.sock")
        #expect(socket == server.socketPath)
        #expect(server.isRunning)
        #expect(server.dsn == "\(server.user)@unix(\(socket))/")

        let answer = try await queryOffThread(socket: socket, user: server.user, "SELECT 1")
        #expect(answer == "1")
        let settings = try await queryOffThread(
            socket: socket, user: server.user,
            "SELECT @@character_set_server, @@collation_server, @@max_connections, @@skip_networking")
        #expect(settings == "utf8mb4\tutf8mb4_unicode_ci\t500\t1")

        let pid = try #require(readPid(server.pidFilePath))
        try await offThread { try server.stop() }
        #expect(!server.isRunning)
        #expect(!FileManager.default.fileExists(atPath: socket))
        #expect(!FileManager.default.fileExists(atPath: server.pidFilePath))
        #expect(!processExists(pid), "mariadbd (pid \(pid)) still runs after stop()")
        await #expect(throws: (any Error).self) { try await queryOffThread(socket: socket, user: server.user, "SELECT 1") }

        // Stopping a stopped server is a no-op.
        try await offThread { try server.stop() }
    }

    @Test(.timeLimit(.minutes(2)))
    func secondStartReusesTheRunningServerAndARestartKeepsTheData() async throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let server = PrivateMariaDB(directory: folder.path + "/db")
        defer { try? server.stop() }

        try await offThread { try server.start() }
        let firstPid = try #require(readPid(server.pidFilePath))
        _ = try await queryOffThread(socket: server.socketPath, user: server.user, "CREATE DATABASE kept_across_restarts")

        // Another handle on the same folder (as another process would have) reuses the server.
        let again = try await offThread { try PrivateMariaDB(directory: folder.path + "/db").start() }
        #expect(again == server.socketPath)
        #expect(readPid(server.pidFilePath) == firstPid)

        try await offThread { try server.stop() }
        #expect(!processExists(firstPid))
        try await offThread { try server.start() }
        let secondPid = try #require(readPid(server.pidFilePath))
        #expect(secondPid != firstPid)
        let databases = try await queryOffThread(
            socket: server.socketPath, user: server.user,
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'kept_across_restarts'")
        #expect(databases == "1")
        try await offThread { try server.stop() }
        #expect(!server.isRunning)
    }

    @Test(.timeLimit(.minutes(2)))
    func aStalePidFileAndSocketFromACrashAreCleared() async throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let server = PrivateMariaDB(directory: folder.path + "/db")
        defer { try? server.stop() }
        try await offThread { try server.start() }
        let pid = try #require(readPid(server.pidFilePath))

        // Simulate a crash: the server dies without removing its pid file and socket.
        kill(pid, SIGKILL)
        var waited = 0
        while processExists(pid) && waited < 500 {
            usleep(10_000)
            waited += 1
        }
        #expect(!processExists(pid))
        #expect(FileManager.default.fileExists(atPath: server.pidFilePath))
        #expect(!server.isRunning)

        try await offThread { try server.start() }
        #expect(readPid(server.pidFilePath) != pid)
        #expect(try await queryOffThread(socket: server.socketPath, user: server.user, "SELECT 1") == "1")
        try await offThread { try server.stop() }
    }

    @Test(.timeLimit(.minutes(2)))
    func aSocketPathThatDoesNotFitIsAClearError() async throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let deep = folder.path + "/" + String(repeating: "d", count: 120)
        let server = PrivateMariaDB(directory: deep)
        let error = try #require(throws: PrivateMariaDBError.self) { try server.start() }
        #expect(error.code == .socketPathTooLong)
        #expect(error.message.contains("107"))
        // Nothing was created or started.
        #expect(!FileManager.default.fileExists(atPath: deep))
    }

    @Test(.timeLimit(.minutes(2)))
    func aServerThatCannotStartReportsItsErrorLog() async throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var configuration = PrivateMariaDB.Configuration()
        configuration.extraServerArguments = ["--no-such-option-for-this-test"]
        let server = PrivateMariaDB(directory: folder.path + "/db", configuration: configuration)
        defer { try? server.stop() }
        let error = try #require(throws: PrivateMariaDBError.self) { try server.start() }
        #expect(error.code == .startFailed)
        #expect(error.message.contains("no-such-option-for-this-test"), "\(error.message)")
    }
}

// MARK: - Helpers

/// A fresh folder under /tmp with a short name.
private struct TemporaryFolder {
    let path: String

    init() throws {
        var template = Array("/tmp/wfd-pm-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard created != nil else { throw CocoaError(.fileWriteUnknown) }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

private struct ClientFailed: Error, CustomStringConvertible {
    var description: String
}

/// Runs one statement with the `mariadb` command-line client over the socket; returns its
/// batch output (tab-separated, no column names), trimmed.
private func queryOffThread(socket: String, user: String, _ sql: String) async throws -> String {
    try await offThread { try query(socket: socket, user: user, sql) }
}

private func query(socket: String, user: String, _ sql: String) throws -> String {
    let client = ["/usr/bin/mariadb", "/usr/local/bin/mariadb", "/usr/bin/mysql"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    guard let client else { throw ClientFailed(description: "the mariadb client is not installed") }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: client)
    process.arguments = ["--no-defaults", "-S", socket, "-u\(user)", "--batch", "-N", "-e", sql]
    let output = Pipe()
    let errors = Pipe()
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    // The output is a few bytes; reading to the end before waiting cannot fill the pipe.
    let stdout = output.fileHandleForReading.readDataToEndOfFile()
    let stderr = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ClientFailed(
            description: "mariadb exited with \(process.terminationStatus): "
                + String(decoding: stderr, as: UTF8.self))
    }
    return String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

private func readPid(_ path: String) -> pid_t? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// Whether a process with this pid exists and has not exited (zombies count as gone).
private func processExists(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return true }
    let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
    return state != "Z" && state != "X"
}
