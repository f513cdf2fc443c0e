import Foundation
import Testing
import WorkflowMariaDB

/// docker-compose.yml is the documented way to run a real MariaDB 11 for workflowd. These tests
/// read it (and README.md) from the repository and check that the credentials, the schema mount
/// and the settings agree with what the README tells users to type.
struct DockerComposeTests {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // WorkflowMariaDBTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repository root

    static func read(_ name: String) throws -> String {
        try String(contentsOf: repository.appendingPathComponent(name), encoding: .utf8)
    }

    static let service = "services.mariadb"

    @Test(.timeLimit(.minutes(2)))
    func theParserReadsTheComposeSubsetWeUse() throws {
        let yaml = try MiniYAML(
            """
            # a comment
            services:
              db:
                image: "mariadb:11"   # trailing comment
                environment:
                  A: 'one'
                  B: two # not part of the value
                command:
                  - --x=1
                  - "--y=2"
                test: ["CMD", "healthcheck.sh", "--connect"]
                ports:
                - "3306:3306"
              other:
                image: x
            volumes:
              data:
            """)
        #expect(yaml.scalars["services.db.image"] == "mariadb:11")
        #expect(yaml.scalars["services.db.environment.A"] == "one")
        #expect(yaml.scalars["services.db.environment.B"] == "two")
        #expect(yaml.lists["services.db.command"] == ["--x=1", "--y=2"])
        #expect(yaml.lists["services.db.test"] == ["CMD", "healthcheck.sh", "--connect"])
        #expect(yaml.lists["services.db.ports"] == ["3306:3306"])
        #expect(yaml.scalars["services.other.image"] == "x")
        #expect(yaml.keys.contains("volumes.data"))
        #expect(!yaml.keys.contains("services.db.data"))
        #expect(throws: MiniYAML.Unsupported.self) { try MiniYAML("services:\n\tdb: x") }
    }

    @Test(.timeLimit(.minutes(2)))
    func theServiceUsesTheSeedNamesAndMariaDB11() throws {
        let compose = try MiniYAML(Self.read("docker-compose.yml"))
        let s = Self.service
        let image = try #require(compose.scalars["\(s).image"])
        #expect(image == "mariadb:11" || image.hasPrefix("mariadb:11."), "image is \(image)")
        #expect(compose.scalars["\(s).container_name"] == "sqlexample-mariadb")
        #expect(compose.scalars["\(s).environment.MARIADB_DATABASE"] == "workflow_db")
        #expect(compose.scalars["\(s).environment.MARIADB_USER"] == "workflow_user")
        #expect(compose.scalars["\(s).environment.MARIADB_PASSWORD"] == "workflow_pass")
        let rootPassword = compose.scalars["\(s).environment.MARIADB_ROOT_PASSWORD"] ?? ""
        #expect(!rootPassword.isEmpty)
        #expect(rootPassword != "workflow_pass", "root must not share the application's password")
        #expect(compose.lists["\(s).ports"]?.contains("3306:3306") == true)
    }

    @Test(.timeLimit(.minutes(2)))
    func theServerUsesUTF8MB4AndHasTheOfficialHealthcheck() throws {
        let compose = try MiniYAML(Self.read("docker-compose.yml"))
        let s = Self.service
        let command = compose.lists["\(s).command"] ?? []
        #expect(command.contains("--character-set-server=utf8mb4"))
        #expect(command.contains("--collation-server=utf8mb4_unicode_ci"))
        let test = compose.lists["\(s).healthcheck.test"] ?? []
        #expect(test.first == "CMD" || test.first == "CMD-SHELL")
        #expect(test.contains("healthcheck.sh"))
        #expect(test.contains("--connect"))
        #expect(test.contains("--innodb_initialized"))
    }

    @Test(.timeLimit(.minutes(2)))
    func theSchemaInTheRepositoryIsMountedForTheFirstStart() throws {
        let compose = try MiniYAML(Self.read("docker-compose.yml"))
        let volumes = compose.lists["\(Self.service).volumes"] ?? []
        let mounts = volumes.map { $0.split(separator: ":").map(String.init) }

        let schemaMount = try #require(
            mounts.first { $0.count >= 2 && $0[1].hasPrefix("/docker-entrypoint-initdb.d/") },
            "no volume mounts a file into /docker-entrypoint-initdb.d/: \(volumes)")
        #expect(schemaMount[0] == "./schema.sql")
        #expect(schemaMount[1].hasSuffix(".sql"))
        let mountedFile = Self.repository.appendingPathComponent(schemaMount[0]).path
        #expect(FileManager.default.fileExists(atPath: mountedFile), "\(mountedFile) is missing")
        let schema = try String(contentsOfFile: mountedFile, encoding: .utf8)
        for table in [
            "workflow_records", "workflow_outbox", "workflow_timeouts", "workflow_events",
            "workflow_cursors", "workflow_leases", "workflow_schema_version",
        ] {
            #expect(schema.contains("CREATE TABLE IF NOT EXISTS \(table)"), "schema.sql lacks \(table)")
        }

        // The data lives in a named volume declared at the top level.
        let dataMount = try #require(mounts.first { $0.count >= 2 && $0[1] == "/var/lib/mysql" })
        #expect(!dataMount[0].hasPrefix(".") && !dataMount[0].hasPrefix("/"), "not a named volume")
        #expect(compose.keys.contains("volumes.\(dataMount[0])"))
    }

    @Test(.timeLimit(.minutes(2)))
    func theReadmeShowsTheSameCredentials() throws {
        let compose = try MiniYAML(Self.read("docker-compose.yml"))
        let readme = try Self.read("README.md")
        let s = Self.service
        let database = try #require(compose.scalars["\(s).environment.MARIADB_DATABASE"])
        let user = try #require(compose.scalars["\(s).environment.MARIADB_USER"])
        let password = try #require(compose.scalars["\(s).environment.MARIADB_PASSWORD"])
        let container = try #require(compose.scalars["\(s).container_name"])
        let hostPort = try #require(compose.lists["\(s).ports"]?.first?.split(separator: ":").first)

        let dsn = "\(user):\(password)@tcp(127.0.0.1:\(hostPort))/\(database)?parseTime=true&charset=utf8mb4"
        // Bools, so a failure names the missing text instead of printing the whole README.
        let showsDSN = readme.contains(dsn)
        #expect(showsDSN, "README.md does not show the DSN \(dsn)")
        let client = "docker exec -it \(container) mariadb -u\(user) -p\(password) \(database)"
        let showsClient = readme.contains(client)
        #expect(showsClient, "README.md does not show `\(client)`")
        let showsUp = readme.contains("docker compose up -d")
        #expect(showsUp, "README.md does not show `docker compose up -d`")
    }

    @Test(.timeLimit(.minutes(2)))
    func theAppProfileRunsWorkflowdNextToMariaDBOnASharedSocketVolume() async throws {
        let compose = try MiniYAML(Self.read("docker-compose.yml"))
        let w = "services.workflowd"
        #expect(compose.lists["\(w).profiles"] == ["app"], "workflowd only with --profile app")
        let dockerfile = try #require(compose.scalars["\(w).build.dockerfile"])
        #expect(compose.scalars["\(w).build.context"] == ".")
        #expect(FileManager.default.fileExists(atPath: Self.repository.appendingPathComponent(dockerfile).path))
        // The DSN reaches the mariadb service with its credentials.
        let dsn = try #require(compose.scalars["\(w).environment.WORKFLOWD_DSN"])
        let config = try MariaDBConfiguration(dsn: dsn)
        #expect(config.user == compose.scalars["\(Self.service).environment.MARIADB_USER"])
        #expect(config.password == compose.scalars["\(Self.service).environment.MARIADB_PASSWORD"])
        #expect(config.database == compose.scalars["\(Self.service).environment.MARIADB_DATABASE"])
        #expect(config.endpoint == .tcp(host: "mariadb", port: 3306))
        #expect(compose.scalars["\(w).depends_on.mariadb.condition"] == "service_healthy")
        // The socket sits in a named volume other services can mount.
        let socket = try #require(compose.scalars["\(w).environment.WORKFLOWD_SOCKET"])
        let mounts = compose.lists["\(w).volumes"] ?? []
        let mount = try #require(mounts.first { $0.hasPrefix("workflowd_run:") }, "\(mounts)")
        let target = String(mount.dropFirst("workflowd_run:".count))
        #expect(socket.hasPrefix(target + "/"), "socket \(socket) outside the shared volume \(target)")
        #expect(compose.keys.contains("volumes.workflowd_run"))

        // The image runs workflowd unprivileged with the same socket path, on the two C libraries.
        let file = try Self.read(dockerfile)
        let instructions = file.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        #expect(instructions.filter { $0.hasPrefix("FROM ") }.count == 2, "a build stage and a runtime stage")
        #expect(file.contains("libmariadb3") && file.contains("libuv1"))
        #expect(file.contains("WORKFLOWD_SOCKET=\(socket)"))
        let user = try #require(instructions.last { $0.hasPrefix("USER ") })
        #expect(!user.contains("root") && user != "USER 0", "\(user)")
        #expect(instructions.last { $0.hasPrefix("CMD ") } == #"CMD ["serve"]"#)
        #expect(instructions.contains { $0.hasPrefix("STOPSIGNAL SIGTERM") })
        // A full YAML parser agrees, where one is installed (PyYAML; docker compose is not here).
        let composePath = Self.repository.appendingPathComponent("docker-compose.yml").path
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") {
            let status = try await offThread { () -> Int32 in
                let python = Process()
                python.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
                python.arguments = [
                    "-c",
                    "import sys\ntry:\n import yaml\nexcept ImportError:\n sys.exit(3)\nd = yaml.safe_load(open(sys.argv[1]))\nassert set(d['services']) == {'mariadb', 'workflowd'}, d['services'].keys()\nassert d['services']['workflowd']['depends_on']['mariadb']['condition'] == 'service_healthy'",
                    composePath,
                ]
                try python.run()
                python.waitUntilExit()
                return python.terminationStatus
            }
            #expect(status == 0 || status == 3, "PyYAML refused docker-compose.yml")
            if status == 3 { print("COMPOSE: PyYAML not installed; the file was checked by the test's own parser only") }
        }
        #expect(instructions.contains { $0.hasPrefix("HEALTHCHECK ") && $0.hasSuffix(#"CMD ["/usr/local/bin/workflowd", "health"]"#) })
    }
}

/// The subset of YAML that docker-compose.yml uses, read line by line: nested mappings by
/// indentation (spaces), `key: scalar`, block sequences of scalars (`- item`), flow sequences of
/// scalars (`[a, "b"]`), quotes, and comments. Keys are flattened into dotted paths
/// (`services.mariadb.image`). Anything else is refused, so the test fails instead of guessing.
struct MiniYAML {
    struct Unsupported: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var description: String { "line \(line): unsupported YAML: \(text)" }
    }

    private(set) var scalars: [String: String] = [:]
    private(set) var lists: [String: [String]] = [:]
    private(set) var keys: Set<String> = []

    init(_ text: String) throws {
        var stack: [(indent: Int, key: String)] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = Self.stripComment(String(rawLine))
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            // YAML forbids tabs in indentation; refusing them beats miscounting.
            guard !line.prefix(while: { $0 == " " || $0 == "\t" }).contains("\t") else {
                throw Unsupported(line: index + 1, text: line)
            }
            let indent = line.prefix { $0 == " " }.count
            let content = String(line.dropFirst(indent))

            if content == "-" || content.hasPrefix("- ") {
                // A sequence item belongs to the nearest key indented less or equally
                // (compose files write both `key:\n  - x` and `key:\n- x`).
                while let top = stack.last, top.indent > indent { stack.removeLast() }
                guard !stack.isEmpty else { throw Unsupported(line: index + 1, text: line) }
                let path = stack.map(\.key).joined(separator: ".")
                lists[path, default: []].append(Self.unquote(String(content.dropFirst(2))))
                continue
            }

            while let top = stack.last, top.indent >= indent { stack.removeLast() }
            guard let colon = Self.keySeparator(in: content) else {
                throw Unsupported(line: index + 1, text: line)
            }
            let key = Self.unquote(String(content[..<colon]))
            let value = String(content[content.index(after: colon)...])
                .trimmingCharacters(in: .whitespaces)
            let path = (stack.map(\.key) + [key]).joined(separator: ".")
            keys.insert(path)
            if value.isEmpty {
                stack.append((indent, key))
            } else if value.hasPrefix("[") {
                guard value.hasSuffix("]") else { throw Unsupported(line: index + 1, text: line) }
                lists[path] = value.dropFirst().dropLast()
                    .split(separator: ",")
                    .map { Self.unquote($0.trimmingCharacters(in: .whitespaces)) }
            } else if value.hasPrefix("{") || value.hasPrefix("|") || value.hasPrefix(">")
                || value.hasPrefix("&") || value.hasPrefix("*")
            {
                throw Unsupported(line: index + 1, text: line)
            } else {
                scalars[path] = Self.unquote(value)
            }
        }
    }

    /// The index of the `:` that ends a key (followed by a space or the end of the line).
    private static func keySeparator(in content: String) -> String.Index? {
        var quote: Character?
        var index = content.startIndex
        while index < content.endIndex {
            let character = content[index]
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == ":" {
                let next = content.index(after: index)
                if next == content.endIndex || content[next] == " " { return index }
            }
            index = content.index(after: index)
        }
        return nil
    }

    /// Drops a `#` comment that starts the line or follows a space, outside quotes.
    private static func stripComment(_ line: String) -> String {
        var quote: Character?
        var previous: Character = " "
        for (offset, character) in line.enumerated() {
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "#" && (previous == " " || offset == 0) {
                return String(line.prefix(offset))
            }
            previous = character
        }
        return line
    }

    private static func unquote(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.count >= 2, let first = trimmed.first, first == "\"" || first == "'",
            trimmed.last == first
        {
            return String(trimmed.dropFirst().dropLast())
        }
        return trimmed
    }
}
