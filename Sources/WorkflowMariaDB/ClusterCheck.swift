import Logging

/// What workflowd needs to know about the server before it uses it: whether it is a node of a
/// Galera cluster, and whether that cluster's settings keep the guarantees.
///
/// On a cluster workflowd (a) makes reads wait for the writes the cluster committed before them
/// (`wsrep_sync_wait = 1`, unless the DSN sets it), so a `get` on one node finds a run submitted
/// on another; (b) tries a transaction up to 10 times, since a certification failure at COMMIT
/// (1213) only means another node's conflicting write was first; (c) refuses `binlog_format`
/// other than ROW (Galera replicates row events; with STATEMENT or MIXED its nodes can diverge)
/// and a workflowd table without a primary key (Galera cannot certify or apply its rows
/// reliably), and warns about other tables without one.
public struct ClusterCheck: Sendable, Equatable {
    /// `wsrep_on` is ON: the server is a Galera node.
    public var galera: Bool
    public var binlogFormat: String
    /// `wsrep_cluster_size` (nil when not a cluster).
    public var clusterSize: Int?
    /// `wsrep_sync_wait` of a session as the server sets it.
    public var serverSyncWait: Int?

    public init(galera: Bool, binlogFormat: String, clusterSize: Int?, serverSyncWait: Int?) {
        self.galera = galera
        self.binlogFormat = binlogFormat
        self.clusterSize = clusterSize
        self.serverSyncWait = serverSyncWait
    }

    /// Reads the settings over one connection (statements that work on any MariaDB or MySQL).
    public static func probe(_ c: MariaDBConnection) throws -> ClusterCheck {
        var variables: [String: String] = [:]
        for row in try c.queryText(
            "SHOW VARIABLES WHERE Variable_name IN ('wsrep_on', 'binlog_format', 'wsrep_sync_wait')")
        where row.count == 2 {
            if let name = row[0] { variables[name.lowercased()] = row[1] ?? "" }
        }
        let galera = variables["wsrep_on"]?.uppercased() == "ON"
        var size: Int?
        if galera {
            size = try c.queryText("SHOW STATUS LIKE 'wsrep_cluster_size'").first.flatMap { $0.count == 2 ? Int($0[1] ?? "") : nil }
        }
        return ClusterCheck(
            galera: galera, binlogFormat: variables["binlog_format"]?.uppercased() ?? "",
            clusterSize: size, serverSyncWait: variables["wsrep_sync_wait"].flatMap { Int($0) })
    }

    /// Refuses settings that break the guarantees on a cluster.
    public func requireSafe() throws(MariaDBError) {
        guard galera else { return }
        guard binlogFormat == "ROW" else {
            throw MariaDBError(
                kind: .configuration,
                message: "this MariaDB is a Galera node with binlog_format=\(binlogFormat); Galera needs binlog_format=ROW (set it on every node)")
        }
    }

    /// The configuration and pool settings to use on this server: on a cluster, reads wait for
    /// causality unless the DSN chose a `wsrep_sync_wait`, and transactions get 10 attempts.
    public func adjusted(
        _ configuration: MariaDBConfiguration, _ pool: PoolConfiguration
    ) -> (MariaDBConfiguration, PoolConfiguration) {
        guard galera else { return (configuration, pool) }
        var c = configuration
        var p = pool
        if c.syncWait == nil { c.syncWait = 1 }
        p.transactionAttempts = max(p.transactionAttempts, 10)
        return (c, p)
    }

    /// Tables of the current database without a primary key: workflowd's own are an error on a
    /// cluster, others a warning (Galera replicates their rows unreliably).
    public static func tablesWithoutPrimaryKey(_ c: MariaDBConnection) throws -> [String] {
        try c.query(
            """
            SELECT t.table_name FROM information_schema.tables t
            LEFT JOIN information_schema.table_constraints k
              ON k.table_schema = t.table_schema AND k.table_name = t.table_name AND k.constraint_type = 'PRIMARY KEY'
            WHERE t.table_schema = DATABASE() AND t.table_type = 'BASE TABLE' AND k.constraint_name IS NULL
            ORDER BY t.table_name
            """
        ).compactMap { try $0.optionalString(0) }
    }

    /// After the schema is in place: refuses a workflowd table without a primary key on a
    /// cluster and warns about the others.
    public func checkTables(_ pool: MariaDBPool, logger: Logger) async throws {
        guard galera else { return }
        let missing = try await pool.withConnection { try Self.tablesWithoutPrimaryKey($0) }
        let ours = missing.filter { $0.hasPrefix("workflow_") }
        if !ours.isEmpty {
            throw MariaDBError(
                kind: .configuration,
                message: "on a Galera cluster every table needs a primary key; these have none: \(ours.joined(separator: ", "))")
        }
        if !missing.isEmpty {
            logger.warning(
                "tables without a primary key in workflowd's database: Galera replicates their rows unreliably",
                metadata: ["tables": "\(missing.joined(separator: ", "))"])
        }
    }
}
