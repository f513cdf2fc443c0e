import Foundation
import Testing
import WorkflowTestSupport

/// docs/operations.md cannot drift from the code: every `--flag`, `WORKFLOWD_*` variable and
/// `workflowd_*` metric it names exists in the sources (or, for a flag, belongs to a named other
/// tool, and `mariadb-dump`'s flags are checked against the real `mariadb-dump --help`).
@Suite("Operations doc")
struct OperationsDocTests {
    /// Flags of other programs that the page uses in its commands, with the program.
    static let otherTools: [String: String] = [
        "--single-transaction": "mariadb-dump", "--quick": "mariadb-dump", "--hex-blob": "mariadb-dump",
        "--default-character-set": "mariadb-dump",
        "--system": "useradd", "--home-dir": "useradd", "--shell": "useradd",
        "--profile": "docker compose", "--build": "docker compose",
        "--product": "swift build", "--now": "systemctl", "--interval": "Dockerfile HEALTHCHECK",
    ]

    /// `workflowd_…` words that are no metric (the compose volume `workflowd_run`).
    static let notMetrics: Set = ["workflowd_run"]

    static var page: String {
        get throws { try String(contentsOfFile: repositoryRoot + "/docs/operations.md", encoding: .utf8) }
    }

    /// Every Swift source under Sources/, concatenated.
    static var sources: String {
        get throws {
            let root = repositoryRoot + "/Sources"
            guard let files = FileManager.default.enumerator(atPath: root) else { throw TestError("no \(root)") }
            var text = ""
            for case let file as String in files where file.hasSuffix(".swift") {
                text += try String(contentsOfFile: root + "/" + file, encoding: .utf8) + "\n"
            }
            return text
        }
    }

    /// Long option names the sources declare: `customLong("x")`, a literal `"--x`, or an
    /// `@Option(name: .long` / `@Flag(name: .long` property (`var fooBar` → `foo-bar`).
    static func declaredFlags(in sources: String) -> Set<String> {
        var flags = Set<String>()
        for m in sources.matches(of: /customLong\("([a-z0-9-]+)"\)/) { flags.insert("--" + m.1) }
        for m in sources.matches(of: /"(--[a-z][a-z0-9-]*)/) { flags.insert(String(m.1)) }
        let lines = sources.split(separator: "\n", omittingEmptySubsequences: false)
        for (i, line) in lines.enumerated() where line.contains("@Option(name: .long") || line.contains("@Flag(name: .long") {
            for next in lines[i...].prefix(3) {
                guard let m = next.firstMatch(of: /var ([a-zA-Z0-9]+)/) else { continue }
                let kebab = m.1.reduce(into: "") { s, c in s += c.isUppercase ? "-" + c.lowercased() : String(c) }
                flags.insert("--" + kebab)
                break
            }
        }
        return flags
    }

    static func words(_ regex: Regex<Substring>, in text: String) -> Set<String> {
        Set(text.matches(of: regex).map { String($0.output) })
    }

    @Test func everyFlagOnThePageExists() async throws {
        let page = try Self.page
        let declared = Self.declaredFlags(in: try Self.sources)
        // A flag is `--` after a space, backtick, parenthesis or line start, not inside a word.
        let named = Set(page.matches(of: /(?:^|[\s`(\[,])(--[a-z][a-z0-9-]*)/.anchorsMatchLineEndings()).map { String($0.1) })
        #expect(named.count >= 20, "found only \(named.sorted())")
        let unknown = named.filter { !declared.contains($0) && Self.otherTools[$0] == nil }
        #expect(unknown.isEmpty, "docs/operations.md names flags no source declares: \(unknown.sorted())")
        // The page's mariadb-dump options, against the real binary.
        let dumpFlags = Self.otherTools.filter { $0.value == "mariadb-dump" }.map(\.key).filter(named.contains)
        #expect(!dumpFlags.isEmpty)
        let help = try await runProgram(try MariaDBClients.find("mariadb-dump"), ["--help"], stdin: nil, deadline: 30)
        for flag in dumpFlags {
            #expect(help.stdout.contains(flag), "mariadb-dump --help does not list \(flag)")
        }
        print("OPS-DOC: \(named.count) flags named; \(named.filter(declared.contains).count) are workflowd's, the rest other tools' (\(dumpFlags.count) checked with mariadb-dump --help)")
    }

    @Test func everyVariableAndMetricOnThePageExists() throws {
        let page = try Self.page
        let sources = try Self.sources
        let variables = Self.words(/WORKFLOWD_[A-Z0-9_]+/, in: page)
        #expect(variables.count >= 10, "found only \(variables.sorted())")
        let inSources = Self.words(/WORKFLOWD_[A-Z0-9_]+/, in: sources)
        let unknownVariables = variables.subtracting(inSources)
        #expect(unknownVariables.isEmpty, "docs/operations.md names variables no source reads: \(unknownVariables.sorted())")
        let metrics = Self.words(/workflowd_[a-z_]+/, in: page).subtracting(Self.notMetrics)
        #expect(metrics.count >= 5, "found only \(metrics.sorted())")
        let unknownMetrics = metrics.filter { !sources.contains("\"\($0)\"") }
        #expect(unknownMetrics.isEmpty, "docs/operations.md names metrics the server does not export: \(unknownMetrics.sorted())")
        print("OPS-DOC: \(variables.count) WORKFLOWD_* variables and \(metrics.count) metrics named, all in the sources")
    }
}
