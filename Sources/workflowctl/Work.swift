import ArgumentParser
import Foundation
import WorkflowClient
import WorkflowWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `workflowctl work`: a shell command does an external step.
struct Work: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Do an external step with a command: one run of COMMAND per task.",
        discussion: """
            Registers as a worker of STATUS (an external status: see workflowd --external-steps) and, for \
            each task, runs COMMAND with the task (one JSON line) on its standard input and these \
            variables: WORKFLOWD_TASK, WORKFLOWD_RUN_ID, WORKFLOWD_FOREIGN_ID, WORKFLOWD_STATUS, \
            WORKFLOWD_ATTEMPT, WORKFLOWD_IDEMPOTENCY_KEY (pass it to the outside service so a repeat \
            does not charge twice).

            Exit 0: the first line of its output is the next status (a name such as PaymentProcessed), \
            or a JSON object {"status": ..., "object": {...}, "reason": ...}; the task is completed \
            with it. Any other exit: the task is failed (retried later with back-off, paused after \
            the retry limit) with the last line COMMAND wrote to stderr as the error.

            Tasks are done one at a time, in arrival order; with --max-in-flight N the server sends up \
            to N at once and the rest wait their turn. Without COMMAND, each task is printed (one \
            JSON line) and left to `workflowctl complete` / `fail` from elsewhere.

              workflowctl work OrderValidated -- ./charge-card.sh
            """)

    @Argument(help: "The external status to work on (name or code).") var status: String
    @Option(help: "The workflow (default order-processor).") var workflow: String?
    @Option(name: .customLong("max-in-flight"), help: "Unanswered tasks the server may send at once, 1...1000 (default 1).")
    var maxInFlight: Int = 1
    @Option(name: .customLong("lease-ms"), help: "How long each task is yours before it is offered again (default 30000).")
    var leaseMs: Int?
    @Option(help: "Stop after this many tasks.") var count: Int?
    @OptionGroup var global: GlobalOptions
    @Argument(parsing: .postTerminator, help: "The command (after --) and its arguments.") var command: [String] = []

    func validate() throws {
        if !(1...1000).contains(maxInFlight) { throw ValidationError("--max-in-flight must be from 1 to 1000") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        // A parent may have left SIGTERM / SIGINT blocked (a process started from a thread that
        // blocks them): a worker must still stop when told to (the server then offers its
        // tasks again at once).
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        sigprocmask(SIG_UNBLOCK, &signals, nil)
        var args: [JSON.Member] = [.init("status", nameOrCode(status)), .init("max_in_flight", .number(String(maxInFlight)))]
        if let workflow { args.append(.init("workflow", .string(workflow))) }
        if let leaseMs { args.append(.init("lease_ms", .number(String(leaseMs)))) }
        try global.withConnection { c in try work(c, args) }
    }

    private func work(_ c: WorkflowConnection, _ args: [JSON.Member]) throws(WorkflowClientError) {
        let reply = try c.request("work", args)
        let worker = reply.json["worker"]?.int64Value
        if global.json { printOut(reply.line) } else { printError("working on \(status) (worker \(Output.text(reply.json["worker"])))") }
        var done = 0
        while done < (count ?? Int.max) {
            let frame = try c.nextTask()
            guard frame.worker == worker else { continue }
            done += 1
            if command.isEmpty {
                printOut(frame.message.line)
            } else {
                try handle(frame.task, c)
            }
        }
    }

    private func handle(_ task: JSON, _ c: WorkflowConnection) throws(WorkflowClientError) {
        let id = Output.text(task["task"])
        let foreignID = Output.text(task["foreign_id"])
        let request: (String, [JSON.Member])
        switch Self.runCommand(command, task: task) {
        case .complete(let members): request = ("complete", [.init("task", .string(id))] + members)
        case .fail(let error): request = ("fail", [.init("task", .string(id)), .init("error", .string(error))])
        }
        let answer: Result<WorkflowMessage, WorkflowClientError>
        do { answer = .success(try c.request(request.0, request.1)) } catch { answer = .failure(error) }
        switch answer {
        case .success(let r) where request.0 == "complete":
            printError("\(foreignID): \(Output.text(r.json["run"]?["status"]))")
        case .success(let r):
            let next = r.json["paused"] == .bool(true) ? "paused" : "retry at \(Output.text(r.json["retry_at"]))"
            printError("\(foreignID): failed; \(next)")
        case .failure(let e) where e.code.fromServer && request.0 == "complete" && e.code.name == "BAD_REQUEST":
            // The command's answer was refused (a status the step may not go to, an object that is
            // not the run's): fail the task with why, so it is retried, not left to its deadline.
            printError("workflowctl: \(foreignID): the answer was refused (\(e.message)); failing the task")
            _ = try? c.request("fail", [.init("task", .string(id)), .init("error", .string("refused answer: \(e.message)"))])
        case .failure(let e) where e.code.fromServer:
            // The answer no longer applies (CONFLICT: the run moved on): say so, go on.
            printError("workflowctl: \(foreignID): \(e.code.name): \(e.message)")
        case .failure(let e):
            throw e
        }
    }

    enum Outcome {
        case complete([JSON.Member])
        case fail(String)
    }

    /// Runs the command for one task and reads its answer.
    static func runCommand(_ command: [String], task: JSON) -> Outcome {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = command
        var env = ProcessInfo.processInfo.environment
        env["WORKFLOWD_TASK"] = Output.text(task["task"])
        env["WORKFLOWD_RUN_ID"] = Output.text(task["run_id"])
        env["WORKFLOWD_FOREIGN_ID"] = Output.text(task["foreign_id"])
        env["WORKFLOWD_STATUS"] = Output.text(task["status"])
        env["WORKFLOWD_ATTEMPT"] = Output.text(task["attempt"])
        env["WORKFLOWD_IDEMPOTENCY_KEY"] = Output.text(task["idempotency_key"])
        p.environment = env
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = errors
        do {
            try p.run()
        } catch {
            return .fail("cannot run \(command[0]): \(error.localizedDescription)")
        }
        // Read both pipes on their own threads while the command runs, so neither fills.
        let out = Collector.start(output.fileHandleForReading)
        let err = Collector.start(errors.fileHandleForReading)
        input.fileHandleForWriting.write(Data((task.description + "\n").utf8))
        try? input.fileHandleForWriting.close()
        p.waitUntilExit()
        let stdout = out.finish()
        let stderr = err.finish()
        if p.terminationStatus != 0 || p.terminationReason != .exit {
            let last = stderr.split(separator: "\n").last.map(String.init)
            return .fail(last ?? "\(command[0]) exited with status \(p.terminationStatus)")
        }
        let first = stdout.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? ""
        let text = first.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("{") {
            guard case .object(let members)? = try? JSONParser.parse(text) else {
                return .fail("\(command[0]) printed a line that is not a JSON object: \(text.prefix(200))")
            }
            return .complete(members.filter { ["status", "object", "reason"].contains($0.key) })
        }
        guard !text.isEmpty else { return .fail("\(command[0]) printed no next status") }
        return .complete([.init("status", nameOrCode(text))])
    }

    /// Reads a pipe to its end on a thread of its own.
    final class Collector: @unchecked Sendable {  // `data` is written by the reading thread, read after `done` is waited for
        var data = Data()
        let done = DispatchSemaphore(value: 0)

        static func start(_ handle: FileHandle) -> Collector {
            let c = Collector()
            Thread.detachNewThread { c.read(handle) }
            return c
        }

        private func read(_ handle: FileHandle) {
            data = handle.readDataToEndOfFile()
            done.signal()
        }

        func finish() -> String {
            done.wait()
            return String(decoding: data, as: UTF8.self)
        }
    }
}

/// `workflowctl complete TASK STATUS`: answer a task by hand.
struct Complete: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Answer a task: move its run on to STATUS.")
    @Argument(help: "The task id (from a task frame).") var task: String
    @Argument(help: "The next status (name or code).") var status: String
    @Option(help: "The run's new object (JSON).") var object: String?
    @Option(help: "Why (kept with the run).") var reason: String?
    @OptionGroup var global: GlobalOptions

    func run() throws {
        var args: [JSON.Member] = [.init("task", .string(task)), .init("status", nameOrCode(status))]
        if let object { args.append(.init("object", try jsonArgument(object, "--object"))) }
        if let reason { args.append(.init("reason", .string(reason))) }
        try global.withConnection { c in
            let reply = try c.request("complete", args)
            printOut(global.json ? reply.line : Output.run(reply.json["run"]), terminator: global.json ? "\n" : "")
        }
    }
}

/// `workflowctl fail TASK ERROR`.
struct Fail: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Fail a task: it is offered again later, or the run is paused at the retry limit.")
    @Argument(help: "The task id.") var task: String
    @Argument(help: "What went wrong (the run's reason if it ends paused).") var error: String
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.withConnection { c in
            let reply = try c.request("fail", ["task": .string(task), "error": .string(error)])
            if global.json { printOut(reply.line); return }
            printOut(reply.json["paused"] == .bool(true) ? "paused" : "retry at \(Output.text(reply.json["retry_at"]))")
        }
    }
}

/// `workflowctl extend TASK`.
struct Extend: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Keep a task longer before it is offered again.")
    @Argument(help: "The task id.") var task: String
    @Option(name: .customLong("lease-ms"), help: "From now (default: the worker's lease).") var leaseMs: Int?
    @OptionGroup var global: GlobalOptions

    func run() throws {
        var args: [JSON.Member] = [.init("task", .string(task))]
        if let leaseMs { args.append(.init("lease_ms", .number(String(leaseMs)))) }
        try global.withConnection { c in
            let reply = try c.request("extend", args)
            printOut(global.json ? reply.line : "deadline \(Output.text(reply.json["deadline"]))")
        }
    }
}

/// `workflowctl callback FOREIGN_ID --status S --next N`.
struct Callback: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move a run waiting in an external status on, without a task (e.g. from a webhook).")
    @OptionGroup var target: RunOptions
    @Option(help: "The external status the run must be in (name or code).") var status: String
    @Option(help: "Where it goes (name or code).") var next: String
    @Option(help: "The run's new object (JSON).") var object: String?
    @Option(help: "Why (kept with the run).") var reason: String?
    @OptionGroup var global: GlobalOptions

    func run() throws {
        var args = target.members + [.init("status", nameOrCode(status)), .init("next", nameOrCode(next))]
        if let object { args.append(.init("object", try jsonArgument(object, "--object"))) }
        if let reason { args.append(.init("reason", .string(reason))) }
        try global.withConnection { c in
            let reply = try c.request("callback", args)
            printOut(global.json ? reply.line : Output.run(reply.json["run"]), terminator: global.json ? "\n" : "")
        }
    }
}

/// A JSON value given on the command line.
func jsonArgument(_ text: String, _ flag: String) throws -> JSON {
    do {
        return try JSONParser.parse(text)
    } catch {
        throw ValidationError("\(flag): not JSON (\(error))")
    }
}
