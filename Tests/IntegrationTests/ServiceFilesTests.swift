import Foundation
import Testing
import WorkflowTestSupport
import WorkflowMariaDB

/// contrib/workflowd.service and contrib/workflowd.env.example: the unit is checked by
/// `systemd-analyze verify` (with ExecStart pointing at the workflowd just built) where systemd's
/// tools are installed, and its settings are read either way.
@Suite("Service files")
struct ServiceFilesTests {
    static func read(_ path: String) throws -> String {
        try String(contentsOfFile: repositoryRoot + "/" + path, encoding: .utf8)
    }

    /// `[section] key=value` pairs of a unit file, in order (keys may repeat).
    static func unitEntries(_ text: String) -> [(section: String, key: String, value: String)] {
        var section = ""
        var out: [(String, String, String)] = []
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
                continue
            }
            guard let eq = line.firstIndex(of: "=") else {
                out.append((section, line, "<no '='>"))
                continue
            }
            out.append((section, String(line[..<eq]), String(line[line.index(after: eq)...])))
        }
        return out
    }

    @Test func theSystemdUnitIsValidAndRunsServeUnprivilegedWithASocketInItsRuntimeDirectory() async throws {
        let unit = try Self.read("contrib/workflowd.service")
        let entries = Self.unitEntries(unit)
        func value(_ section: String, _ key: String) -> String? { entries.last { $0.section == section && $0.key == key }?.value }
        #expect(entries.allSatisfy { $0.value != "<no '='>" }, "a line without '=': \(entries.filter { $0.value == "<no '='>" })")
        #expect(Set(entries.map(\.section)) == ["Unit", "Service", "Install"])
        #expect(value("Service", "ExecStart") == "/usr/local/bin/workflowd serve")
        #expect(value("Service", "User") == "workflowd")
        #expect(value("Service", "RuntimeDirectory") == "workflowd")
        #expect(value("Service", "EnvironmentFile") == "/etc/workflowd/workflowd.env")
        #expect(value("Service", "Restart") == "on-failure")
        #expect(value("Service", "KillSignal") == "SIGTERM")
        #expect(value("Install", "WantedBy") == "multi-user.target")
        let environment = entries.filter { $0.section == "Service" && $0.key == "Environment" }.map(\.value)
        #expect(environment.contains("WORKFLOWD_SOCKET=/run/workflowd/workflowd.sock"), "the socket in RuntimeDirectory")
        // The drain (10 s by default) fits in the stop timeout.
        let stop = try #require(value("Service", "TimeoutStopSec"))
        #expect((Int(stop.dropLast()) ?? 0) > 10, "TimeoutStopSec \(stop)")

        let analyzer = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let analyzer else {
            print("SERVICE-FILES: systemd-analyze is not installed here; the unit's settings were checked, its syntax by systemd was not")
            return
        }
        let folder = NSTemporaryDirectory() + "wfunit-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let copy = folder + "/workflowd.service"
        try unit.replacingOccurrences(of: "/usr/local/bin/workflowd", with: ServerProcess.binary)
            .write(toFile: copy, atomically: true, encoding: .utf8)
        let r = try await runProgram(analyzer, ["verify", copy], stdin: nil, deadline: 60)
        print("SERVICE-FILES: systemd-analyze verify exited \(r.status.map(String.init) ?? "killed"): \(r.stdout + r.stderr)")
        #expect(r.status == 0)
        #expect((r.stdout + r.stderr).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "systemd-analyze complained")
    }

    @Test func theEnvironmentFileExampleHoldsAValidDSNAndSaysToKeepItPrivate() throws {
        let text = try Self.read("contrib/workflowd.env.example")
        #expect(text.contains("0600"))
        let assignments = text.split(separator: "\n").filter { !$0.hasPrefix("#") && $0.contains("=") }
        let dsn = try #require(assignments.first { $0.hasPrefix("WORKFLOWD_DSN=") }).dropFirst("WORKFLOWD_DSN=".count)
        let config = try MariaDBConfiguration(dsn: String(dsn))
        #expect(config.database == "workflow_db")
        // systemd takes the line as it is: no quotes that would become part of the value.
        #expect(!dsn.hasPrefix("\"") && !dsn.hasPrefix("'"))
    }
}
