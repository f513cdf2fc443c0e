#!/usr/bin/env bash
# Regenerates Sources/WorkflowMariaDB/Schema.swift from schema.sql (SchemaTests fails when the
# two differ). Run after editing schema.sql; bump `currentVersion` there by hand when a new
# version's step is added.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=$(sed -n 's/^-- workflowd schema, version \([0-9]*\)\./\1/p' schema.sql | head -n 1)
[ -n "$version" ] || { echo "gen-schema: no '-- workflowd schema, version N.' line in schema.sql" >&2; exit 1; }
{
    printf '// Generated from /schema.sql by scripts/gen-schema.sh — keep them identical (SchemaTests checks it).\n'
    printf '// The server applies this text at start-up; `docker-compose up` applies the file itself.\n\n'
    printf 'enum Schema {\n    /// The newest schema version this build knows.\n    static let currentVersion = %s\n\n    static let sql = """\n' "$version"
    cat schema.sql
    printf '"""\n}\n'
} >Sources/WorkflowMariaDB/Schema.swift
echo "gen-schema: Schema.swift now holds schema.sql (version $version)"
