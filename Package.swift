// swift-tools-version:6.0
import PackageDescription

let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "workflowd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "workflowd", targets: ["workflowd"]),
        .executable(name: "workflowctl", targets: ["workflowctl"]),
        .library(name: "WorkflowClient", targets: ["WorkflowClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
    ],
    targets: [
        // C system libraries: module maps + shim.h (macros / variadics only, no logic).
        .systemLibrary(
            name: "CLibUV", pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"]), .brew(["libuv"])]),
        .systemLibrary(
            name: "CMariaDB", pkgConfig: "libmariadb",
            providers: [.apt(["libmariadb-dev"]), .brew(["mariadb-connector-c"])]),

        // Protocol: frames, requests, replies, events, error codes. No I/O.
        .target(name: "WorkflowWire", swiftSettings: swift6),
        // Engine: definitions, run-state machine, relay/consumers/poller, store protocols. No C.
        .target(
            name: "WorkflowEngine",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: swift6),
        // The only CMariaDB user: connections, pool, transactions, the stores.
        .target(
            name: "WorkflowMariaDB",
            dependencies: [
                "CMariaDB", "WorkflowEngine",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        // The order processor from the seed, built on the engine.
        .target(
            name: "OrderWorkflow",
            dependencies: ["WorkflowEngine"],
            swiftSettings: swift6),
        // The only CLibUV user: loop, listener, sessions, subscriptions, op dispatch.
        .target(
            name: "WorkflowServer",
            dependencies: [
                "CLibUV", "WorkflowWire", "WorkflowEngine",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        .target(name: "WorkflowClient", dependencies: ["WorkflowWire"], swiftSettings: swift6),
        .executableTarget(
            name: "workflowd",
            dependencies: [
                "WorkflowServer", "WorkflowMariaDB", "WorkflowEngine", "OrderWorkflow", "WorkflowWire", "WorkflowClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swift6),
        .executableTarget(
            name: "workflowctl",
            dependencies: [
                "WorkflowClient", "WorkflowWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swift6),

        // Benchmark: end-to-end vs the database's own ceiling (docs/benchmarks.md). Build -c release.
        .executableTarget(
            name: "workflowd-bench",
            dependencies: [
                "WorkflowMariaDB", "WorkflowEngine", "WorkflowWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swift6),

        .testTarget(name: "WorkflowWireTests", dependencies: ["WorkflowWire"], swiftSettings: swift6),
        .testTarget(name: "WorkflowEngineTests", dependencies: ["WorkflowEngine"], swiftSettings: swift6),
        .testTarget(
            name: "WorkflowMariaDBTests", dependencies: ["WorkflowMariaDB", "WorkflowEngine"],
            swiftSettings: swift6),
        .testTarget(
            name: "OrderWorkflowTests", dependencies: ["OrderWorkflow", "WorkflowEngine"],
            swiftSettings: swift6),
        .testTarget(
            name: "WorkflowServerTests", dependencies: ["WorkflowServer", "WorkflowWire"],
            swiftSettings: swift6),
        // What the end-to-end tests share (a test database, a real server process, a line
        // client); no shipped product depends on it.
        .target(
            name: "WorkflowTestSupport",
            dependencies: [
                "WorkflowMariaDB", "WorkflowEngine", "WorkflowWire", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        // End-to-end: real `workflowd` processes on a real MariaDB, over the real socket.
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "workflowd", "workflowctl", "WorkflowMariaDB", "WorkflowEngine", "WorkflowWire", "OrderWorkflow",
                "WorkflowTestSupport", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        // On a real 3-node Galera cluster (scripts/galera.sh; WORKFLOWD_GALERA_DSNS): skipped
        // without one.
        .testTarget(
            name: "GaleraTests",
            dependencies: [
                "workflowd", "WorkflowMariaDB", "WorkflowEngine", "WorkflowWire", "WorkflowTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
    ]
)
