import Logging
import WorkflowEngine

/// Applies the schema idempotently and records its version in `workflow_schema_version`.
///
/// Every statement of `schema.sql` is idempotent (`CREATE TABLE IF NOT EXISTS`, `INSERT IGNORE`,
/// `ALTER TABLE … ADD … IF NOT EXISTS` / `DROP … IF EXISTS`), so a second run changes nothing.
/// Several instances starting at once on one server serialise on a named lock. On a Galera
/// cluster that lock is only the node's own (`GET_LOCK` is not replicated), so instances on
/// different nodes may migrate at the same moment: the DDL is applied in one total order across
/// the cluster, each statement finds the previous one's work done, and a statement aborted by
/// the other node's DDL or certification (1213) is run again.
/// Migrations only go forward: a database whose version is newer than this build is refused.
///
/// A schema that is already current needs no DDL: `migrate()` then only reads the version, so a
/// user with SELECT, INSERT, UPDATE and DELETE on the tables can run it. Where DDL is needed and
/// the user may not do it, the error says to run `workflowd migrate` with an admin user.
public struct SchemaMigrator: Sendable {
    public let pool: MariaDBPool
    public let logger: Logger

    public init(pool: MariaDBPool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    public static var currentVersion: Int { Schema.currentVersion }

    /// The statements of `schema.sql`, without comments, in order.
    public static var statements: [String] { split(Schema.sql) }

    static func split(_ sql: String) -> [String] {
        var statements: [String] = []
        var current = ""
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop(while: { $0 == " " })
            if trimmed.hasPrefix("--") || trimmed.isEmpty { continue }
            current += line + "\n"
            if trimmed.hasSuffix(";") {
                statements.append(String(current.dropLast(2)))  // drop ";\n"
                current = ""
            }
        }
        if !current.trimmingWhitespace.isEmpty { statements.append(current) }
        return statements
    }

    /// Brings the schema up to `currentVersion`. Returns the version found before (0 if none).
    @discardableResult
    public func migrate() async throws -> Int {
        let statements = Self.statements
        let target = Self.currentVersion
        let found = try await pool.withConnection { c -> Int in
            // Named after the database: instances migrating other databases on the same server
            // do not wait for each other.
            let lock = try c.query("SELECT GET_LOCK(CONCAT('workflowd_schema.', DATABASE()), 30)")
            guard try lock.first?.optionalInt(0) == 1 else {
                throw MariaDBError(kind: .unavailable, message: "timed out waiting for the schema lock")
            }
            defer { _ = try? c.query("SELECT RELEASE_LOCK(CONCAT('workflowd_schema.', DATABASE()))") }
            let before = try Self.version(c)
            if before > target {
                throw MariaDBError(
                    kind: .configuration,
                    message: "the database has schema version \(before), newer than this build's \(target); upgrade workflowd")
            }
            if before < target {
                do {
                    for s in statements { try Self.execute(c, s) }
                } catch let e as MariaDBError where Self.isPermissionDenied(e) {
                    throw Self.needsAdmin(found: before, cause: e)
                }
            }
            return before
        }
        if found < target {
            logger.info("schema migrated", metadata: ["schema.from": "\(found)", "schema.to": "\(target)"])
        } else {
            logger.debug("schema up to date", metadata: ["schema.version": "\(found)"])
        }
        return found
    }

    /// Checks without changing anything that the schema is at `currentVersion`; throws the same
    /// clear errors as `migrate()` when it is older (run `workflowd migrate`) or newer.
    public func verify() async throws {
        let found = try await version()
        let target = Self.currentVersion
        if found > target {
            throw MariaDBError(
                kind: .configuration,
                message: "the database has schema version \(found), newer than this build's \(target); upgrade workflowd")
        }
        if found < target { throw Self.needsAdmin(found: found, cause: nil) }
        logger.debug("schema up to date", metadata: ["schema.version": "\(found)"])
    }

    /// Runs one idempotent schema statement, again after a deadlock or lock wait (on Galera: a
    /// concurrent migration on another node, or a certification failure), up to 10 times with
    /// jittered back-off.
    static func execute(_ c: MariaDBConnection, _ sql: String) throws(MariaDBError) {
        var attempt = 1
        while true {
            let failure: MariaDBError
            do {
                try c.executeText(sql)
                return
            } catch {
                failure = error
            }
            guard failure.kind == .retryableConflict, attempt < 10 else { throw failure }
            MariaDBPool.backOff(attempt: attempt)
            attempt += 1
        }
    }

    /// 1142 table, 1044 database, 1227 specific privilege denied.
    static func isPermissionDenied(_ e: MariaDBError) -> Bool {
        e.errno == 1142 || e.errno == 1044 || e.errno == 1227
    }

    static func needsAdmin(found: Int, cause: MariaDBError?) -> MariaDBError {
        let have = found == 0 ? "has no workflowd schema" : "has schema version \(found)"
        var message = "the database \(have) and this build needs version \(currentVersion)"
        if let cause { message += ", which this user may not create (\(cause.message))" }
        message += "; run `workflowd migrate` with an admin user (one allowed to CREATE tables), then start again"
        return MariaDBError(kind: .configuration, errno: cause?.errno ?? 0, sqlState: cause?.sqlState ?? "HY000", message: message)
    }

    /// The version recorded in the database (0 when the table does not exist yet).
    public func version() async throws -> Int {
        try await pool.withConnection { try Self.version($0) }
    }

    static func version(_ c: MariaDBConnection) throws -> Int {
        let exists = try c.query(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'workflow_schema_version'"
        )
        guard try exists.first?.int(0) == 1 else { return 0 }
        let rows = try c.query("SELECT COALESCE(MAX(version), 0) FROM workflow_schema_version")
        return Int(try rows.first?.int(0) ?? 0)
    }
}

extension String {
    var trimmingWhitespace: Substring {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return s
    }
}
