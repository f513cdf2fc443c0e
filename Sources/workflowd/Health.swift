import ArgumentParser
import Foundation
import WorkflowClient
import WorkflowWire

/// `workflowd health`: a probe for containers and systemd. Asks the running server's socket for
/// `health` and answers with the exit status: 0 healthy, 1 unhealthy (or the server answered
/// with an error, such as DRAINING), 3 the server cannot be reached or did not answer in time —
/// the codes of `workflowctl health`.
struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the running server for its health checks; exit 0 healthy, 1 unhealthy, 3 unreachable.",
        discussion: """
            Prints one line per check (name, ok or FAIL, detail), then healthy or UNHEALTHY. The checks and \
            their limits are set on `serve` (--lag-alert, --relay-alert, --outbox-alert). The socket is \
            resolved as `serve` does: --socket, else WORKFLOWD_SOCKET, else <data dir>/workflowd.sock.

            EXIT CODES
              0  healthy
              1  unhealthy, or the server answered with an error (e.g. DRAINING while it stops)
              3  cannot connect to the socket, the connection was lost, or no reply within --timeout
            """)

    static let healthy: Int32 = 0
    static let unhealthy: Int32 = 1
    static let cannotConnect: Int32 = 3

    @Option(name: .long, help: "Unix socket path (env WORKFLOWD_SOCKET, default <data-dir>/workflowd.sock).")
    var socket: String?

    @Option(name: .customLong("data-dir"), help: "The server's data folder, for the default socket path (env WORKFLOWD_DATA_DIR, default .workflowd).")
    var dataDir: String?

    @Option(name: .long, help: "Longest wait for the connection and the reply, e.g. 10s or 500ms.")
    var timeout: String = "10s"

    @Flag(name: .long, help: "Print the server's reply line exactly as received.")
    var json = false

    func validate() throws {
        guard let seconds = Settings.duration(timeout), seconds > 0, seconds <= 3600 else {
            throw ValidationError("--timeout: '\(timeout)' is not a duration such as 10s or 500ms")
        }
    }

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        let path = Settings.socketPath(flag: socket, dataDirectory: Settings.dataDirectory(flag: dataDir, env: env), env: env)
        let limit = Duration.milliseconds(Int64(((Settings.duration(timeout) ?? 10) * 1000).rounded()))
        let outcome = try await Blocking.run { Self.ask(path: path, timeout: limit) }
        switch outcome {
        case .reply(let message):
            let healthy = message.json["healthy"] == .bool(true)
            print(json ? message.line : Self.render(message.json, socket: path))
            throw ExitCode(healthy ? Self.healthy : Self.unhealthy)
        case .serverError(let error):
            if json, let reply = error.reply { print(reply.line) }
            Self.printError("workflowd health: \(path): \(error.code): \(error.message)")
            throw ExitCode(Self.unhealthy)
        case .unreachable(let error):
            Self.printError("workflowd health: \(error.message)")
            throw ExitCode(Self.cannotConnect)
        }
    }

    enum Outcome: Sendable {
        case reply(WorkflowMessage)
        case serverError(WorkflowClientError)
        case unreachable(WorkflowClientError)
    }

    /// One blocking round trip (run on a thread of its own).
    static func ask(path: String, timeout: Duration) -> Outcome {
        do {
            let connection = try WorkflowConnection(path: path, timeout: timeout)
            defer { connection.close() }
            return .reply(try connection.request("health"))
        } catch {
            if error.code.fromServer { return .serverError(error) }
            if error.code == .io {
                // SO_RCVTIMEO ran out (or the read failed): name the limit, not just errno.
                return .unreachable(WorkflowClientError(.io, "\(path): no reply to health: \(error.message)"))
            }
            return .unreachable(error)
        }
    }

    /// `name  ok|FAIL  detail` per check, aligned, then `healthy` or `UNHEALTHY: names`.
    static func render(_ reply: JSON, socket: String) -> String {
        var rows: [(String, Bool, String)] = []
        if case .object(let checks)? = reply["checks"] {
            for member in checks {
                rows.append((member.key, member.value["ok"] == .bool(true), member.value["detail"]?.stringValue ?? ""))
            }
        }
        let width = rows.map(\.0.count).max() ?? 0
        var lines = rows.map { name, ok, detail in
            name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + (ok ? "ok  " : "FAIL") + "  " + detail
        }
        let failed = rows.filter { !$0.1 }.map(\.0)
        lines.append(reply["healthy"] == .bool(true) && failed.isEmpty ? "healthy" : "UNHEALTHY: " + failed.joined(separator: ", "))
        return lines.joined(separator: "\n")
    }

    static func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
