import ArgumentParser
import Foundation
import Logging
import WorkflowMariaDB

@main
struct WorkflowdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workflowd",
        abstract: "A durable workflow service on MariaDB, serving newline-delimited JSON on a Unix socket.",
        version: WorkflowdVersion.string,
        subcommands: [Serve.self, Migrate.self, Health.self, Prune.self, Demo.self, Version.self],
        defaultSubcommand: Serve.self)
}

enum WorkflowdVersion {
    static let string = "0.1.0"
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version, protocol and schema version.")
    func run() {
        print("workflowd \(WorkflowdVersion.string) (protocol 1, schema \(SchemaMigrator.currentVersion))")
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the tables (idempotent), then exit.",
        discussion: "Run it with an account that may CREATE tables; `serve` then only needs SELECT, INSERT, UPDATE, DELETE.")

    @OptionGroup var database: DatabaseOptions

    @Flag(name: .customLong("create-database"), help: "Create the DSN's database first if it does not exist.")
    var createDatabase = false

    func run() async throws {
        let settings = try Settings.resolve(database, env: ProcessInfo.processInfo.environment)
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = settings.makeLogger(label: "workflowd")
        if createDatabase {
            try await DatabaseHandle.createDatabase(settings: settings, logger: logger)
        }
        let db = try await DatabaseHandle(settings: settings, logger: logger)
        let before: Int
        do {
            before = try await SchemaMigrator(pool: db.pool, logger: logger).migrate()
        } catch {
            await db.close()
            throw error
        }
        await db.close()
        let now = SchemaMigrator.currentVersion
        print(before == now ? "schema is at version \(now); nothing to do" : "schema migrated from version \(before) to \(now)")
    }
}
