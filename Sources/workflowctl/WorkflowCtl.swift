import ArgumentParser
import WorkflowClient
import WorkflowWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `workflowctl`: the command-line client of workflowd.
@main
struct WorkflowCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workflowctl",
        abstract: "Talk to a running workflowd over its Unix socket.",
        discussion: """
            The socket is --socket, else $WORKFLOWD_SOCKET, else .workflowd/workflowd.sock.
            --json on any command prints the server's reply lines exactly as received.

            EXIT CODES
              0  ok
              1  the server answered with an error (CODE: message on stderr)
              2  usage error
              3  cannot connect to the socket (or the connection was lost)
              4  await: TIMEOUT — the run did not reach the status in time
              5  await: UNREACHABLE — the run finished without reaching the status
            `health` exits 1 when the server reports itself unhealthy.
            """,
        subcommands: [
            Submit.self, Get.self, List.self, History.self, Await.self, Watch.self, Pause.self, Resume.self,
            Cancel.self, DeleteData.self, Stats.self, Graph.self, Health.self, Ping.self, Work.self, Complete.self,
            Fail.self, Extend.self, Callback.self,
        ])

    /// Runs the command and maps every failure to the documented exit codes (swift-argument-parser
    /// would use 64 for usage errors).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as ExitCode {
            terminate(error.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                exit(withError: error)  // --help, --version
            }
            let message = fullMessage(for: error)
            if !message.isEmpty { printError(message) }
            terminate(code == .validationFailure ? ExitStatus.usage : code.rawValue)
        }
    }
}

/// Ends the process (the global `exit`, which ParsableCommand's own `exit(withError:)` hides).
func terminate(_ status: Int32) -> Never {
    exit(status)
}

/// The exit codes scripts can rely on (also in `--help` and docs/workflowctl.md).
enum ExitStatus {
    static let ok: Int32 = 0
    static let serverError: Int32 = 1
    static let usage: Int32 = 2
    static let cannotConnect: Int32 = 3
    static let timeout: Int32 = 4
    static let unreachable: Int32 = 5
}

/// Writes straight to the file descriptor: no buffering, so `watch` lines appear at once even
/// in a pipe (and no shared C `FILE` globals, which Swift 6 rejects).
func writeAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}

func printOut(_ text: String, terminator: String = "\n") {
    writeAll(STDOUT_FILENO, text + terminator)
}

func printError(_ text: String) {
    writeAll(STDERR_FILENO, text.hasSuffix("\n") ? text : text + "\n")
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The server's socket (env WORKFLOWD_SOCKET, default .workflowd/workflowd.sock).")
    var socket: String?

    @Flag(name: .long, help: "Print the server's reply lines as received (JSON) instead of text.")
    var json = false

    var socketPath: String {
        if let socket { return socket }
        if let env = getenv("WORKFLOWD_SOCKET"), !String(cString: env).isEmpty { return String(cString: env) }
        return ".workflowd/workflowd.sock"
    }

    /// Connects, runs `body`, and turns client errors into messages and exit codes.
    func withConnection(_ body: (WorkflowConnection) throws -> Void) throws {
        do {
            let connection = try WorkflowConnection(path: socketPath)
            defer { connection.close() }
            try body(connection)
        } catch let error as WorkflowClientError {
            throw report(error)
        }
    }

    /// Reports `error` (the reply on stdout with --json, the message on stderr) and returns the
    /// exit code for it.
    func report(_ error: WorkflowClientError) -> ExitCode {
        if json, let reply = error.reply { printOut(reply.line) }
        printError("workflowctl: \(error.code.name): \(error.message)")
        if !error.code.fromServer {
            return ExitCode(ExitStatus.cannotConnect)
        }
        switch error.code {
        case .timeout: return ExitCode(ExitStatus.timeout)
        case .unreachable: return ExitCode(ExitStatus.unreachable)
        default: return ExitCode(ExitStatus.serverError)
        }
    }
}

/// Which run a command is about: a foreign id, or --run-id.
struct RunOptions: ParsableArguments {
    @Argument(help: "The foreign id (e.g. the order id); its latest run.")
    var foreignID: String?

    @Option(name: .customLong("run-id"), help: "The run id instead of a foreign id.")
    var runID: String?

    @Option(name: .long, help: "The workflow (default order-processor).")
    var workflow: String?

    func validate() throws {
        if (foreignID == nil) == (runID == nil) {
            throw ValidationError("give a foreign id or --run-id (exactly one)")
        }
    }

    var members: [JSON.Member] {
        var out: [JSON.Member] = []
        if let runID { out.append(.init("run_id", .string(runID))) }
        if let foreignID { out.append(.init("foreign_id", .string(foreignID))) }
        if let workflow { out.append(.init("workflow", .string(workflow))) }
        return out
    }
}

/// A status or run state given by name or code.
func nameOrCode(_ text: String) -> JSON {
    if let n = Int64(text), n >= 0 { return .number(String(n)) }
    return .string(text)
}
