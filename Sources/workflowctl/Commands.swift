import ArgumentParser
import WorkflowClient
import WorkflowWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a run (the latest run of a foreign id, or --run-id).")
    @OptionGroup var target: RunOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.withConnection { c in
            let reply = try c.request("get", target.members)
            printOut(global.json ? reply.line : Output.run(reply.json["run"]), terminator: global.json ? "\n" : "")
        }
    }
}

struct History: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a run's events in seq order.")
    @OptionGroup var target: RunOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.withConnection { c in
            let reply = try c.request("history", target.members)
            if global.json { printOut(reply.line); return }
            guard case .array(let events)? = reply.json["events"] else { return }
            let rows = events.map { e in
                ["seq", "version", "status", "run_state", "at", "reason"].map { Output.text(e[$0]) }
            }
            printOut(Output.table(["SEQ", "VERSION", "STATUS", "RUN_STATE", "AT", "REASON"], rows), terminator: "")
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List runs as a table (newest last; --order desc for newest first).",
        discussion: "Prints one page; with more, the next cursor goes to stderr. --all follows every page.")
    @Option(help: "The workflow.") var workflow: String?
    @Option(name: .customLong("status"), help: "Only runs at this status (name or code; repeatable).")
    var statuses: [String] = []
    @Option(name: .customLong("run-state"), help: "Only runs in this run state (name or code; repeatable).")
    var runStates: [String] = []
    @Option(name: .customLong("foreign-id"), help: "Only runs of this foreign id (repeatable).")
    var foreignIDs: [String] = []
    @Option(name: .customLong("created-after"), help: "RFC 3339 time, inclusive.") var createdAfter: String?
    @Option(name: .customLong("created-before"), help: "RFC 3339 time, exclusive.") var createdBefore: String?
    @Option(help: "asc or desc (by creation).") var order: String?
    @Option(help: "Runs per page, 1...1000 (server default 25).") var limit: Int?
    @Option(help: "Continue after this next_cursor.") var cursor: String?
    @Flag(help: "Follow next_cursor through every page.") var all = false
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let order, order != "asc", order != "desc" { throw ValidationError("--order must be asc or desc") }
    }

    func run() throws {
        try global.withConnection { c in
            var cursor = self.cursor
            var rows: [[String]] = []
            repeat {
                var args: [JSON.Member] = []
                if let workflow { args.append(.init("workflow", .string(workflow))) }
                if !statuses.isEmpty { args.append(.init("status", .array(statuses.map(nameOrCode)))) }
                if !runStates.isEmpty { args.append(.init("run_state", .array(runStates.map(nameOrCode)))) }
                if !foreignIDs.isEmpty { args.append(.init("foreign_id", .array(foreignIDs.map { .string($0) }))) }
                if let createdAfter { args.append(.init("created_after", .string(createdAfter))) }
                if let createdBefore { args.append(.init("created_before", .string(createdBefore))) }
                if let order { args.append(.init("order", .string(order))) }
                if let limit { args.append(.init("limit", .number(String(limit)))) }
                if let cursor { args.append(.init("cursor", .string(cursor))) }
                let reply = try c.request("list", args)
                if global.json { printOut(reply.line) }
                if case .array(let runs)? = reply.json["runs"] {
                    for r in runs {
                        rows.append(
                            ["foreign_id", "run_id", "status", "run_state", "version", "created_at", "updated_at"].map {
                                Output.text(r[$0])
                            })
                    }
                }
                cursor = reply.json["next_cursor"]?.stringValue
            } while all && cursor != nil
            if global.json { return }
            printOut(
                Output.table(["FOREIGN_ID", "RUN_ID", "STATUS", "RUN_STATE", "VERSION", "CREATED_AT", "UPDATED_AT"], rows),
                terminator: "")
            if let cursor { printError("next cursor: \(cursor)") }
        }
    }
}

struct Await: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until a run is at, or has passed through, a status (default: any terminal one).",
        discussion: "Exit 4 on TIMEOUT, 5 on UNREACHABLE (the run as it is is printed either way).")
    @OptionGroup var target: RunOptions
    @Option(name: .customLong("status"), help: "A status to wait for (name or code; repeatable).")
    var statuses: [String] = []
    @Option(name: .customLong("timeout-ms"), help: "How long to wait, 0...3600000 ms (server default 30000).")
    var timeoutMilliseconds: Int?
    @OptionGroup var global: GlobalOptions

    func run() throws {
        var args = target.members
        if !statuses.isEmpty { args.append(.init("status", .array(statuses.map(nameOrCode)))) }
        if let timeoutMilliseconds { args.append(.init("timeout_ms", .number(String(timeoutMilliseconds)))) }
        do {
            let connection = try WorkflowConnection(path: global.socketPath)
            defer { connection.close() }
            let reply = try connection.request("await", args)
            printOut(global.json ? reply.line + "\n" : Output.run(reply.json["run"]), terminator: "")
        } catch {
            if !global.json, let run = error.run { printOut(Output.run(run), terminator: "") }
            throw global.report(error)
        }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream events, one line each, until interrupted (or --count events).",
        discussion: """
            Lines: seq, time, foreign id, status, run state, version, reason; coloured by status when
            stdout is a terminal. After an interruption, --from with the last seq resumes.
            """)
    @Option(help: "now (default), earliest, or a seq: events after it.") var from: String = "now"
    @Option(help: "The workflow.") var workflow: String?
    @Option(name: .customLong("foreign-id"), help: "Only this foreign id.") var foreignID: String?
    @Option(name: .customLong("run-id"), help: "Only this run.") var runID: String?
    @Option(name: .customLong("status"), help: "Only these statuses (name or code; repeatable).")
    var statuses: [String] = []
    @Option(name: .customLong("run-state"), help: "Only these run states (name or code; repeatable).")
    var runStates: [String] = []
    @Option(help: "Stop after this many events.") var count: Int?
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if from != "now", from != "earliest", Int64(from) == nil {
            throw ValidationError("--from takes now, earliest or a seq")
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        var args: [JSON.Member] = [.init("from", Int64(from).map { .number(String($0)) } ?? .string(from))]
        if let workflow { args.append(.init("workflow", .string(workflow))) }
        if let foreignID { args.append(.init("foreign_id", .string(foreignID))) }
        if let runID { args.append(.init("run_id", .string(runID))) }
        if !statuses.isEmpty { args.append(.init("status", .array(statuses.map(nameOrCode)))) }
        if !runStates.isEmpty { args.append(.init("run_state", .array(runStates.map(nameOrCode)))) }
        try global.withConnection { c in
            let reply = try c.request("subscribe", args)
            if global.json { printOut(reply.line) } else {
                printError("watching (head is seq \(Output.text(reply.json["head"])))")
            }
            let sub = reply.json["sub"]?.int64Value
            var printed = 0
            while count.map({ printed < $0 }) ?? true {
                let frame = try c.nextFrame()
                guard frame.sub == sub else { continue }
                if global.json {
                    printOut(frame.message.line)
                } else {
                    let e = frame.event
                    let status = Output.text(e["status"])
                    let state = Output.text(e["run_state"])
                    var line = "\(Output.text(e["seq"]))  \(Output.text(e["at"]))  \(Output.text(e["foreign_id"]))  "
                    line += Output.coloured("\(status) \(state)", for: status, runState: state)
                    line += "  v\(Output.text(e["version"]))"
                    if let reason = e["reason"]?.stringValue { line += "  \(reason)" }
                    printOut(line)
                }
                printed += 1
            }
        }
    }
}

/// pause, resume, cancel, delete-data.
protocol ControlCommandProtocol: ParsableCommand {
    static var op: String { get }
    var target: RunOptions { get }
    var reason: String? { get }
    var global: GlobalOptions { get }
}

extension ControlCommandProtocol {
    func run() throws {
        var args = target.members
        if let reason { args.append(.init("reason", .string(reason))) }
        try global.withConnection { c in
            let reply = try c.request(Self.op, args)
            printOut(global.json ? reply.line + "\n" : Output.run(reply.json["run"]), terminator: "")
        }
    }
}

struct Pause: ControlCommandProtocol {
    static let op = "pause"
    static let configuration = CommandConfiguration(abstract: "Pause a run (Initiated or Running).")
    @OptionGroup var target: RunOptions
    @Option(help: "Why (kept as the run's reason).") var reason: String?
    @OptionGroup var global: GlobalOptions
}

struct Resume: ControlCommandProtocol {
    static let op = "resume"
    static let configuration = CommandConfiguration(abstract: "Resume a paused run.")
    @OptionGroup var target: RunOptions
    @Option(help: "Why.") var reason: String?
    @OptionGroup var global: GlobalOptions
}

struct Cancel: ControlCommandProtocol {
    static let op = "cancel"
    static let configuration = CommandConfiguration(abstract: "Cancel a run.")
    @OptionGroup var target: RunOptions
    @Option(help: "Why (kept as the run's reason).") var reason: String?
    @OptionGroup var global: GlobalOptions
}

struct DeleteData: ControlCommandProtocol {
    static let op = "delete_data"
    static let configuration = CommandConfiguration(
        commandName: "delete-data", abstract: "Erase the personal data of a Completed or Cancelled run.")
    @OptionGroup var target: RunOptions
    @Option(help: "Why.") var reason: String?
    @OptionGroup var global: GlobalOptions
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Counts by status and run state, outbox backlog, event head, consumers' lag.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.withConnection { c in
            let reply = try c.request("stats")
            if global.json { printOut(reply.line); return }
            let j = reply.json
            var out = ""
            for (title, key) in [("statuses", "statuses"), ("run states", "run_states")] {
                if case .object(let workflows)? = j[key] {
                    for w in workflows {
                        out += "\(title) (\(w.key)):\n"
                        if case .object(let counts) = w.value {
                            out += Output.table(["  NAME", "COUNT"], counts.map { ["  " + $0.key, Output.text($0.value)] })
                        }
                    }
                }
            }
            out += "outbox: \(Output.text(j["outbox"]?["pending"])) pending, oldest \(Output.text(j["outbox"]?["oldest_age_ms"])) ms\n"
            out += "event head: \(Output.text(j["head"]))\n"
            if case .array(let consumers)? = j["consumers"] {
                out += Output.table(
                    ["CONSUMER", "CURSOR", "LAG"], consumers.map { [Output.text($0["name"]), Output.text($0["cursor"]), Output.text($0["lag"])] })
            }
            out += "connections: \(Output.text(j["connections"])), subscriptions: \(Output.text(j["subscriptions"])), uptime: \(Output.text(j["uptime_ms"])) ms\n"
            printOut(out, terminator: "")
        }
    }
}

struct Graph: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the workflow as a Mermaid stateDiagram-v2.")
    @Option(help: "The workflow (default order-processor).") var workflow: String?
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.withConnection { c in
            var args: [JSON.Member] = []
            if let workflow { args.append(.init("workflow", .string(workflow))) }
            let reply = try c.request("graph", args)
            printOut(global.json ? reply.line : Output.text(reply.json["mermaid"]))
        }
    }
}

struct Health: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The server's health checks; exit 1 when unhealthy.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        var healthy = false
        try global.withConnection { c in
            let reply = try c.request("health")
            healthy = reply.json["healthy"] == .bool(true)
            if global.json { printOut(reply.line); return }
            printOut(healthy ? "healthy" : "UNHEALTHY")
            if case .object(let checks)? = reply.json["checks"] {
                printOut(
                    Output.table(
                        ["CHECK", "OK", "DETAIL"],
                        checks.map { [$0.key, Output.text($0.value["ok"]), Output.text($0.value["detail"])] }),
                    terminator: "")
            }
        }
        if !healthy { throw ExitCode(ExitStatus.serverError) }
    }
}

struct Ping: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that the server answers.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.withConnection { c in
            let start = ContinuousClock.now
            let reply = try c.request("ping")
            let elapsed = ContinuousClock.now - start
            let (seconds, attoseconds) = elapsed.components
            let microseconds = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
            let ms = "\(microseconds / 1000).\(String(String(microseconds % 1000 + 1000).dropFirst()))"
            printOut(global.json ? reply.line : "pong from \(global.socketPath) in \(ms) ms")
        }
    }
}
