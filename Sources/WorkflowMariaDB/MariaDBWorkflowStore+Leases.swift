import WorkflowEngine

extension MariaDBWorkflowStore {
    public func cursor(_ name: String) async throws -> Int64 {
        try await read("cursor") { c in
            try c.query("SELECT seq FROM workflow_cursors WHERE name = ?", [.text(name)]).first?.int(0) ?? 0
        }
    }

    public func setCursor(_ name: String, to seq: Int64) async throws {
        let now = SystemClock().now()
        // One idempotent statement: autocommit, a third of the round trips of a transaction.
        _ = try await writeOne("set cursor") { c in
            try c.execute(
                """
                INSERT INTO workflow_cursors (name, seq, updated_at) VALUES (?, ?, ?)
                ON DUPLICATE KEY UPDATE seq = VALUES(seq), updated_at = VALUES(updated_at)
                """, [.text(name), .int(seq), .timestamp(now)])
        }
    }

    public func acquireLease(_ name: String, holder: String, now: Timestamp, ttlMilliseconds: Int64) async throws -> Lease? {
        let expires = now.adding(milliseconds: ttlMilliseconds)
        return try await write("acquire lease") { c in
            // Renew our own lease or take an expired one. One conditional UPDATE: two contenders
            // for an expired lease serialise on the row lock, and the second no longer matches.
            // (Assignments run left to right, so `generation` is computed from the old holder.)
            let taken = try c.execute(
                """
                UPDATE workflow_leases SET generation = IF(holder = ?, generation, generation + 1),
                  holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at <= ?)
                """, [.text(holder), .text(holder), .timestamp(expires), .text(name), .text(holder), .timestamp(now)])
            if taken.affectedRows == 0 {
                let inserted = try c.execute(
                    "INSERT IGNORE INTO workflow_leases (name, holder, expires_at, generation) VALUES (?, ?, ?, 1)",
                    [.text(name), .text(holder), .timestamp(expires)])
                if inserted.affectedRows == 0 { return nil }
            }
            return try Self.lease(c, name)
        }
    }

    public func releaseLease(_ name: String, holder: String) async throws -> Bool {
        try await write("release lease") { c in
            // Expire it now rather than delete it, so the generation keeps counting.
            try c.execute(
                "UPDATE workflow_leases SET expires_at = '1970-01-01 00:00:00.000' WHERE name = ? AND holder = ?",
                [.text(name), .text(holder)]
            ).affectedRows == 1
        }
    }

    public func leases() async throws -> [Lease] {
        try await read("leases") { c in
            try c.query("SELECT name, holder, expires_at, generation FROM workflow_leases ORDER BY name").map(Self.decodeLease)
        }
    }

    public func acquireLeases(_ names: [String], holder: String, now: Timestamp, ttlMilliseconds: Int64) async throws
        -> Set<String>
    {
        guard !names.isEmpty else { return [] }
        let expires = now.adding(milliseconds: ttlMilliseconds)
        // Each statement is conditional and atomic on its own (autocommit): renew ours or take
        // expired ones; insert the names that have no row yet; read back what is ours. When the
        // update matched every name — the steady state, renewing — the round ends there.
        return try await writeOne("acquire leases") { c in
            let (list, values) = Self.inList(names.map { .text($0) })
            let matched = try c.execute(
                """
                UPDATE workflow_leases SET generation = IF(holder = ?, generation, generation + 1),
                  holder = ?, expires_at = ? WHERE name IN \(list) AND (holder = ? OR expires_at <= ?)
                """, [.text(holder), .text(holder), .timestamp(expires)] + values + [.text(holder), .timestamp(now)])
            if matched.affectedRows == names.count { return Set(names) }
            try Self.insertRows(
                c, prefix: "INSERT IGNORE INTO workflow_leases (name, holder, expires_at, generation)", tuple: "(?, ?, ?, 1)",
                rows: names.map { [.text($0), .text(holder), .timestamp(expires)] })
            return Set(
                try c.query(
                    "SELECT name FROM workflow_leases WHERE name IN \(list) AND holder = ? AND expires_at = ?",
                    values + [.text(holder), .timestamp(expires)]
                ).map { try $0.string(0) })
        }
    }

    public func releaseLeases(_ names: [String], holder: String) async throws {
        guard !names.isEmpty else { return }
        _ = try await writeOne("release leases") { c in
            let (list, values) = Self.inList(names.map { .text($0) })
            return try c.execute(
                "UPDATE workflow_leases SET expires_at = '1970-01-01 00:00:00.000' WHERE name IN \(list) AND holder = ?",
                values + [.text(holder)]
            ).affectedRows
        }
    }

    public func lease(_ name: String) async throws -> Lease? {
        try await read("lease") { c in try Self.lease(c, name) }
    }

    static func lease(_ c: MariaDBConnection, _ name: String) throws -> Lease? {
        try c.query("SELECT name, holder, expires_at, generation FROM workflow_leases WHERE name = ?", [.text(name)])
            .first.map(decodeLease)
    }

    static func decodeLease(_ r: SQLRow) throws -> Lease {
        Lease(name: try r.string(0), holder: try r.string(1), expiresAt: try r.timestamp(2), generation: try r.int(3))
    }
}
