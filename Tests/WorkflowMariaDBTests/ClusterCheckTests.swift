import Testing
import WorkflowEngine

@testable import WorkflowMariaDB

/// What workflowd checks about its server at start (the cluster itself: Tests/GaleraTests).
@Suite("Cluster check")
struct ClusterCheckTests {
    @Test func aStandaloneServerIsNoCluster() async throws {
        try await TestDatabase.with { _, pool in
            let check = try await pool.withConnection { try ClusterCheck.probe($0) }
            #expect(!check.galera)
            #expect(check.clusterSize == nil)
            #expect(!check.binlogFormat.isEmpty)
            try check.requireSafe()
            // Nothing changes for a standalone server.
            let (c, p) = check.adjusted(pool.configuration, PoolConfiguration())
            #expect(c.syncWait == nil)
            #expect(p.transactionAttempts == PoolConfiguration().transactionAttempts)
            // workflowd's tables all have primary keys.
            #expect(try await pool.withConnection { try ClusterCheck.tablesWithoutPrimaryKey($0) }.isEmpty)
        }
    }

    @Test func onAClusterReadsWaitAndTransactionsGetMoreAttempts() throws {
        let check = ClusterCheck(galera: true, binlogFormat: "ROW", clusterSize: 3, serverSyncWait: 0)
        try check.requireSafe()
        let dsn = try MariaDBConfiguration(dsn: "app@tcp(db1:3306)/orders")
        let (c, p) = check.adjusted(dsn, PoolConfiguration())
        #expect(c.syncWait == 1)
        #expect(p.transactionAttempts == 10)
        // The DSN's own choice wins.
        let chosen = try MariaDBConfiguration(dsn: "app@tcp(db1:3306)/orders?wsrep_sync_wait=0")
        #expect(check.adjusted(chosen, PoolConfiguration()).0.syncWait == 0)
    }

    @Test(arguments: ["STATEMENT", "MIXED"])
    func aClusterWithoutRowBinlogIsRefused(format: String) {
        let check = ClusterCheck(galera: true, binlogFormat: format, clusterSize: 3, serverSyncWait: 0)
        #expect {
            try check.requireSafe()
        } throws: { error in
            let e = error as? MariaDBError
            return e?.kind == .configuration && e?.message.contains("binlog_format=ROW") == true
        }
    }

    /// A table without a primary key is found (and, on a cluster, a workflowd one is refused).
    @Test func tablesWithoutPrimaryKeyAreFound() async throws {
        try await TestDatabase.with { _, pool in
            try await pool.withConnection { try $0.executeText("CREATE TABLE notes (body TEXT)") }
            #expect(try await pool.withConnection { try ClusterCheck.tablesWithoutPrimaryKey($0) } == ["notes"])
            try await pool.withConnection { try $0.executeText("CREATE TABLE workflow_scratch (body TEXT)") }
            let cluster = ClusterCheck(galera: true, binlogFormat: "ROW", clusterSize: 3, serverSyncWait: 0)
            await #expect(throws: MariaDBError.self) { try await cluster.checkTables(pool, logger: TestDatabase.logger) }
            // Standalone: no check.
            try await ClusterCheck(galera: false, binlogFormat: "MIXED", clusterSize: nil, serverSyncWait: nil)
                .checkTables(pool, logger: TestDatabase.logger)
        }
    }
}
