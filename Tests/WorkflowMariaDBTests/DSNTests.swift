import Testing
@testable import WorkflowMariaDB

/// DSN parsing: every accepted form gives exact fields; every bad form is an error naming the
/// wrong part, and no message and no `description` ever contains the password.
@Suite("DSN parsing", .timeLimit(.minutes(1)))
struct DSNTests {
    /// A password nobody would type by accident: if it shows up in a message, it leaked.
    static let secret = "Zq7-Secr3t-Pw"

    // MARK: - Accepted forms

    @Test func theSeedsGoStyleTCPDSN() throws {
        let c = try MariaDBConfiguration(
            dsn: "workflow_user:workflow_pass@tcp(localhost:3306)/workflow_db?parseTime=true&charset=utf8mb4")
        #expect(c.endpoint == .tcp(host: "localhost", port: 3306))
        #expect(c.user == "workflow_user")
        #expect(c.password == "workflow_pass")
        #expect(c.database == "workflow_db")
        #expect(c.charset == "utf8mb4")
        #expect(c.collation == "utf8mb4_unicode_ci")
        #expect(c.tls == .disabled)
        #expect(c.connectTimeout == 10 && c.readTimeout == 30 && c.writeTimeout == 30)
    }

    @Test func goTCPWithCollationParseTimeAndLoc() throws {
        let c = try MariaDBConfiguration(
            dsn: "app:\(Self.secret)@tcp(db.internal:3307)/orders?parseTime=true&charset=utf8mb4&collation=utf8mb4_bin&loc=UTC")
        #expect(c.endpoint == .tcp(host: "db.internal", port: 3307))
        #expect(c.user == "app")
        #expect(c.password == Self.secret)
        #expect(c.database == "orders")
        #expect(c.charset == "utf8mb4")
        #expect(c.collation == "utf8mb4_bin")
    }

    @Test func goTCPWithoutPortUses3306() throws {
        let c = try MariaDBConfiguration(dsn: "app@tcp(db.internal)/orders")
        #expect(c.endpoint == .tcp(host: "db.internal", port: 3306))
        #expect(c.password == nil)
    }

    @Test func goUnixSocket() throws {
        let c = try MariaDBConfiguration(dsn: "root@unix(/tmp/mdb/mysqld.sock)/")
        #expect(c.endpoint == .unix(path: "/tmp/mdb/mysqld.sock"))
        #expect(c.user == "root")
        #expect(c.password == nil)
        #expect(c.database == "")
        let d = try MariaDBConfiguration(dsn: "app:\(Self.secret)@unix(/run/mysqld/mysqld.sock)/workflow_db?charset=utf8mb4")
        #expect(d.endpoint == .unix(path: "/run/mysqld/mysqld.sock"))
        #expect(d.password == Self.secret)
        #expect(d.database == "workflow_db")
    }

    @Test(arguments: [
        ("tls=true", MariaDBConfiguration.TLSMode.verify),
        ("tls=skip-verify", .skipVerify),
        ("tls=preferred", .preferred),
        ("tls=false", .disabled),
        ("ssl=true", .verify),
    ])
    func tlsModes(_ parameter: String, _ mode: MariaDBConfiguration.TLSMode) throws {
        let c = try MariaDBConfiguration(dsn: "app:\(Self.secret)@tcp(db:3306)/wf?\(parameter)")
        #expect(c.tls == mode)
        let u = try MariaDBConfiguration(dsn: "mariadb://app:\(Self.secret)@db:3306/wf?\(parameter)")
        #expect(u.tls == mode)
    }

    @Test func tlsFiles() throws {
        let c = try MariaDBConfiguration(
            dsn: "app@tcp(db:3306)/wf?tls=true&tls-ca=/etc/ssl/ca.pem&tls-cert=/etc/ssl/c.pem&tls-key=/etc/ssl/k.pem")
        #expect(c.tls == .verify)
        #expect(c.tlsCA == "/etc/ssl/ca.pem")
        #expect(c.tlsCert == "/etc/ssl/c.pem")
        #expect(c.tlsKey == "/etc/ssl/k.pem")
    }

    /// Galera: reads that wait for the cluster's earlier writes, set from the DSN.
    @Test func wsrepSyncWait() throws {
        let c = try MariaDBConfiguration(dsn: "app@tcp(db1:3306)/orders?wsrep_sync_wait=1")
        #expect(c.syncWait == 1)
        #expect(c.description.hasSuffix("&wsrep_sync_wait=1"))
        #expect(try MariaDBConfiguration(dsn: "app@tcp(db1:3306)/orders?wsrep_sync_wait=0").syncWait == 0)
        #expect(try MariaDBConfiguration(dsn: "app@tcp(db1:3306)/orders").syncWait == nil)
    }

    @Test func timeoutParameters() throws {
        let c = try MariaDBConfiguration(dsn: "app@tcp(db:3306)/wf?timeout=5s&readTimeout=500ms&writeTimeout=1m30s")
        #expect(c.connectTimeout == 5)
        #expect(c.readTimeout == 1)  // Connector/C takes whole seconds: 500 ms rounds up to 1 s
        #expect(c.writeTimeout == 90)
        let d = try MariaDBConfiguration(dsn: "mariadb://app@db/wf?timeout=7&readTimeout=2m&writeTimeout=1500ms")
        #expect(d.connectTimeout == 7)
        #expect(d.readTimeout == 120)
        #expect(d.writeTimeout == 2)
    }

    @Test func mariadbAndMySQLURLs() throws {
        let c = try MariaDBConfiguration(dsn: "mariadb://app:\(Self.secret)@db.internal:3307/orders?tls=true&charset=utf8mb4")
        #expect(c.endpoint == .tcp(host: "db.internal", port: 3307))
        #expect(c.user == "app")
        #expect(c.password == Self.secret)
        #expect(c.database == "orders")
        #expect(c.tls == .verify)
        let m = try MariaDBConfiguration(dsn: "mysql://app@db.internal/orders")
        #expect(m.endpoint == .tcp(host: "db.internal", port: 3306))
        #expect(m.password == nil)
        #expect(m.database == "orders")
        let upper = try MariaDBConfiguration(dsn: "MariaDB://app@db/orders")
        #expect(upper.endpoint == .tcp(host: "db", port: 3306))
        let noDB = try MariaDBConfiguration(dsn: "mariadb://app@db:3306")
        #expect(noDB.database == "")
        let socket = try MariaDBConfiguration(dsn: "mariadb://app@localhost/orders?socket=/run/mysqld/mysqld.sock")
        #expect(socket.endpoint == .unix(path: "/run/mysqld/mysqld.sock"))
        #expect(socket.database == "orders")
    }

    @Test func percentEncodedPasswordWithAtAndColon() throws {
        let c = try MariaDBConfiguration(dsn: "mariadb://app:p%40ss%3Aw0rd%2F%25@db:3306/orders")
        #expect(c.password == "p@ss:w0rd/%")
        #expect(c.user == "app")
        #expect(c.endpoint == .tcp(host: "db", port: 3306))
        #expect(c.database == "orders")
        let g = try MariaDBConfiguration(dsn: "app:p%40ss%3Aw0rd@tcp(db:3306)/orders")
        #expect(g.password == "p@ss:w0rd")
        // The Go driver's form: a raw '@' and ':' in the password (split at the last '@').
        let raw = try MariaDBConfiguration(dsn: "app:p@ss:w0rd@tcp(db:3306)/orders")
        #expect(raw.user == "app")
        #expect(raw.password == "p@ss:w0rd")
        #expect(raw.endpoint == .tcp(host: "db", port: 3306))
        let encodedUser = try MariaDBConfiguration(dsn: "mariadb://ops%2Bwf:x@db/orders")
        #expect(encodedUser.user == "ops+wf")
    }

    @Test func ipv6Hosts() throws {
        let c = try MariaDBConfiguration(dsn: "app:\(Self.secret)@tcp([::1]:3307)/orders")
        #expect(c.endpoint == .tcp(host: "::1", port: 3307))
        let d = try MariaDBConfiguration(dsn: "app@tcp([fe80::1:2])/orders")
        #expect(d.endpoint == .tcp(host: "fe80::1:2", port: 3306))
        let u = try MariaDBConfiguration(dsn: "mariadb://app:\(Self.secret)@[2001:db8::7]:3308/orders")
        #expect(u.endpoint == .tcp(host: "2001:db8::7", port: 3308))
        #expect(u.password == Self.secret)
        #expect(u.database == "orders")
    }

    @Test func surroundingSpacesAreIgnoredAndCharsetListTakesTheFirst() throws {
        let c = try MariaDBConfiguration(dsn: "  app@tcp(db:1)/wf?charset=utf8mb4,utf8  ")
        #expect(c.endpoint == .tcp(host: "db", port: 1))
        #expect(c.charset == "utf8mb4")
    }

    @Test func descriptionHidesThePassword() throws {
        let forms = [
            "app:\(Self.secret)@tcp(db:3306)/orders?tls=true",
            "app:\(Self.secret)@unix(/run/mysqld/mysqld.sock)/orders",
            "mariadb://app:\(Self.secret)@db:3306/orders",
            "mariadb://app:\(Self.secret)@[::1]:3306/orders",
        ]
        for form in forms {
            let c = try MariaDBConfiguration(dsn: form)
            #expect(c.password == Self.secret)
            #expect(!c.description.contains(Self.secret), "description leaks the password: \(c.description)")
            #expect(!"\(c)".contains(Self.secret))
            #expect(!String(reflecting: c).contains(Self.secret))
            #expect(c.description.contains("app:***@"), "description should show *** for the password: \(c.description)")
        }
        let tcp = try MariaDBConfiguration(dsn: forms[0])
        #expect(tcp.description == "app:***@tcp(db:3306)/orders?tls=true")
        let unix = try MariaDBConfiguration(dsn: forms[1])
        #expect(unix.description == "app:***@unix(/run/mysqld/mysqld.sock)/orders?tls=false")
        let noPassword = try MariaDBConfiguration(dsn: "root@unix(/tmp/x.sock)/")
        #expect(noPassword.description == "root@unix(/tmp/x.sock)/?tls=false")
    }

    // MARK: - Bad forms

    /// (DSN, a word the message must contain to name the wrong part). Every DSN carries the
    /// secret password somewhere, so the message is also checked for it.
    static let badForms: [(String, String)] = [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://app:\(secret)@db/orders", "scheme 'ftp'"),
        ("postgres://app:\(secret)@db/orders", "scheme 'postgres'"),
        ("tcp(db:3306)/orders?x=\(secret)", "user@"),
        ("app:\(secret)tcp(db:3306)/orders", "user@"),
        (":\(secret)@tcp(db:3306)/orders", "user name is empty"),
        ("app:\(secret)@udp(db:3306)/orders", "protocol 'udp'"),
        ("app:\(secret)@db:3306/orders", "address"),
        ("app:\(secret)@tcp(db:99999)/orders", "port '99999'"),
        ("app:\(secret)@tcp(db:0)/orders", "port '0'"),
        ("app:\(secret)@tcp(db:abc)/orders", "port 'abc'"),
        ("app:\(secret)@tcp(:3306)/orders", "host is empty"),
        ("app:\(secret)@tcp([::1:3306)/orders", "unclosed '['"),
        ("app:\(secret)@unix(tmp/mysqld.sock)/orders", "socket path must be absolute"),
        ("app:\(secret)@tcp(db:3306)orders", "missing '/'"),
        ("app:\(secret)@tcp(db:3306)/orders?tsl=true", "unknown parameter 'tsl'"),
        ("app:\(secret)@tcp(db:3306)/orders?tls=maybe", "parameter tls"),
        ("app:\(secret)@tcp(db:3306)/orders?timeout=5x", "parameter timeout"),
        ("app:\(secret)@tcp(db:3306)/orders?timeout=0s", "parameter timeout"),
        ("app:\(secret)@tcp(db:3306)/orders?readTimeout=soon", "parameter readTimeout"),
        ("app:\(secret)@tcp(db:3306)/orders?writeTimeout=-5s", "parameter writeTimeout"),
        ("app:\(secret)@tcp(db:3306)/orders?charset=utf8;drop", "parameter charset"),
        ("app:\(secret)@tcp(db:3306)/orders?collation=x%27y", "parameter collation"),
        ("app:\(secret)@tcp(db:3306)/orders?socket=rel.sock", "parameter socket"),
        ("app:\(secret)@tcp(db:3306)/orders?wsrep_sync_wait=16", "parameter wsrep_sync_wait"),
        ("app:\(secret)@tcp(db:3306)/orders?wsrep_sync_wait=yes", "parameter wsrep_sync_wait"),
        ("app:\(secret)@tcp(db:3306)/ord%zzers", "percent-escape in the database"),
        ("app:\(secret)%zz@tcp(db:3306)/orders", "percent-escape in the password"),
        ("app:\(secret)%ff@tcp(db:3306)/orders", "password is not valid UTF-8"),
        ("ap%p:\(secret)@tcp(db:3306)/orders", "percent-escape in the user"),
        ("mariadb://db:3306/orders?x=\(secret)", "user@"),
        ("mariadb://app:\(secret)@:3306/orders", "host is empty"),
        ("mariadb://app:\(secret)@/orders", "missing host"),
        ("mariadb://app:\(secret)@db:70000/orders", "port '70000'"),
        ("mariadb://app:\(secret)@[::1/orders", "unclosed '['"),
        ("mariadb://app:\(secret)%4@db/orders", "percent-escape in the password"),
        ("mariadb://app:\(secret)@db/orders?tls=yes", "parameter tls"),
        // A password with characters the URL form cannot hold raw: refused, never echoed.
        ("mariadb://app:\(secret)/x@db/orders", "user@"),
        ("app:\(secret)(x@tcp(db:3306)/orders", "user@"),
        // A raw '@' and '(' / '/' in the password: the split lands inside it; refused, not echoed.
        ("app:a@\(secret)(x@tcp(db:3306)/orders", "percent-encode"),
        ("mariadb://app:a@\(secret)/x@db/orders", "percent-encode"),
        ("mariadb://app:a@\(secret):1/x@db/orders", "percent-encode"),
        // A password misplaced where a quoted part is: the quote is hidden.
        ("mariadb://app:\(secret)@db:x\(secret)/orders", "port '…'"),
        ("app:\(secret)@tcp(db:3306)/orders?tls=\(secret)", "parameter tls: '…'"),
    ]

    @Test func everyBadFormNamesTheWrongPartAndNeverThePassword() {
        for (dsn, part) in Self.badForms {
            do {
                let c = try MariaDBConfiguration(dsn: dsn)
                Issue.record("accepted a bad DSN (expected an error about \(part)): \(c)")
            } catch {
                let message = error.message
                #expect(message.contains(part), "message for a bad DSN should name \(part): \(message)")
                #expect(!message.contains(Self.secret), "message leaks the password: \(message)")
                #expect(!"\(error)".contains(Self.secret))
                #expect(!String(reflecting: error).contains(Self.secret))
                #expect("\(error)".hasPrefix("invalid DSN: "))
            }
        }
    }

    @Test func aLeakCheckThatCanFail() {
        // The check above would notice a leak: a message built with the password contains it.
        let leaky = MariaDBConfiguration.ParseError(message: "bad password \(Self.secret)")
        #expect("\(leaky)".contains(Self.secret))
    }
}

@Suite("DSN redaction")
struct DSNRedactionTests {
    @Test func dumpNeverShowsThePassword() throws {
        let config = try MariaDBConfiguration(dsn: "app:Sup3r-S3cret!@tcp(127.0.0.1:3306)/db")
        var out = ""
        dump(config, to: &out)
        #expect(!out.contains("Sup3r-S3cret!"))
        #expect(out.contains("***"))
        #expect(!String(reflecting: config).contains("Sup3r-S3cret!"))
    }
}
