// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "XDirector",
    products: [
        .executable(name: "xdirector", targets: ["xdirector"]),
        .executable(name: "xdirector-bench", targets: ["xdirector-bench"]),
        .executable(name: "xdirector-bench-ref", targets: ["xdirector-bench-ref"]),
        .library(name: "XDirectorAllocCount", type: .dynamic, targets: ["XDirectorAllocCount"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
    ],
    targets: [
        // Structs and constants shared by the BPF program and Swift: one definition, two consumers.
        .target(name: "CXDirectorShared"),
        // libxdp/libbpf plus a shim for what Swift cannot import (macros, CPU_SET, netlink constants).
        .target(
            name: "CXDP",
            dependencies: ["CXDirectorShared"],
            linkerSettings: [.linkedLibrary("xdp"), .linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        // Pure Swift: header views, checksums, rewrites, and the names every layer shares (ServiceKey,
        // ForwardingMethod, TunnelType, L4Endpoint). No syscalls.
        .target(name: "Packet"),
        // Pure Swift: schedulers and the connection table. No syscalls.
        .target(name: "Scheduling", dependencies: ["Packet"]),
        // Compiles bpf/xdirector.bpf.c with clang -target bpf and embeds the object in Dataplane.
        .executableTarget(name: "BPFEmbed", path: "Sources/BPFEmbed"),
        .plugin(name: "BPFObjectPlugin", capability: .buildTool(), dependencies: ["BPFEmbed"]),
        // UMEM, rings, sockets, workers, BPF loading with a typed API for every map (the kernel's formats live
        // here and nowhere above), neighbour resolution.
        .target(
            name: "Dataplane",
            dependencies: ["CXDP", "CXDirectorShared", "Packet", "Scheduling", .product(name: "Logging", package: "swift-log")],
            plugins: ["BPFObjectPlugin"]
        ),
        // Configuration model, ipvsadm-syntax rules, the reload planner (pure) and the parts that commit a plan
        // (MapSyncer, CellRegistry, TrafficLedger), the director's lifecycle. Never imports CXDirectorShared.
        .target(
            name: "Control",
            dependencies: ["Dataplane", "Scheduling", "Packet", .product(name: "Logging", package: "swift-log"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")]
        ),
        // The Prometheus exporter and its HTTP endpoint (`run --metrics`). Not named Metrics: swift-metrics has one.
        .target(
            name: "XDirectorMetrics",
            dependencies: ["Control", .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
            path: "Sources/Metrics"
        ),
        // keepalived's semantics as pure logic: keepalived.conf parsed into a DirectorConfig and checker
        // definitions, the checkers' state machine on a virtual clock, and the table health makes of the rules.
        .target(name: "Keepalived", dependencies: ["Control", "Packet"]),
        // Health checkers on a swift-nio event loop (TCP, HTTP, SSL, UDP, DNS, scripts) and the monitor that
        // feeds their results to the state machine and the director.
        .target(
            name: "Health",
            dependencies: ["Keepalived", "Control", "Packet", .product(name: "Logging", package: "swift-log"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "Subprocess", package: "swift-subprocess")]
        ),
        // Network-namespace labs: the demo, the integration tests and the benchmarks build them.
        .target(name: "Topology", dependencies: ["Packet"], plugins: ["BPFObjectPlugin"]),
        .executableTarget(
            name: "xdirector",
            dependencies: ["Control", "XDirectorMetrics", "Keepalived", "Health", "Topology", "Packet", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // Packet builders and topology helpers shared by the tests (and later the benchmarks).
        .target(name: "XDirectorTestSupport", dependencies: ["Packet"]),
        // The benchmark harness (Bench/): generator, sink, reflector and scenarios; embeds Bench/bpf/*.bpf.c.
        .executableTarget(
            name: "xdirector-bench",
            dependencies: ["CXDP", "Topology", "Dataplane", "Packet", "Scheduling", "XDirectorEngineBaseline",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Bench/Sources/xdirector-bench",
            plugins: ["BPFObjectPlugin"]
        ),
        // The benchmark's C AF_XDP MAC-swap reference forwarder.
        .executableTarget(
            name: "xdirector-bench-ref",
            path: "Bench/reference",
            exclude: ["baseline"],
            linkerSettings: [.linkedLibrary("xdp"), .linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        // The C baseline of the engine's per-packet work (`xdirector-bench engine`).
        .target(name: "XDirectorEngineBaseline", path: "Bench/reference/baseline"),
        // LD_PRELOAD allocation counter for the benchmarked workers.
        .target(name: "XDirectorAllocCount", path: "Bench/alloccount", linkerSettings: [.linkedLibrary("dl")]),
        .testTarget(name: "PacketTests", dependencies: ["Packet", "XDirectorTestSupport"]),
        .testTarget(name: "SchedulingTests", dependencies: ["Scheduling", "Packet"]),
        .testTarget(name: "ControlTests", dependencies: ["Control", "Dataplane", "Packet", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "KeepalivedTests", dependencies: ["Keepalived", "Control", "Packet"]),
        .testTarget(name: "HealthTests", dependencies: ["Health", "Keepalived", "Control", "Packet",
                                                     .product(name: "NIOCore", package: "swift-nio"),
                                                     .product(name: "NIOPosix", package: "swift-nio"),
                                                     .product(name: "NIOSSL", package: "swift-nio-ssl")]),
        .testTarget(name: "XDirectorMetricsTests", dependencies: ["XDirectorMetrics", "Control", "Dataplane", "Packet"],
                    path: "Tests/MetricsTests"),
        .testTarget(name: "DataplaneTests", dependencies: ["Dataplane", "CXDirectorShared", "Packet", "Scheduling", "XDirectorTestSupport",
                                                         .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "IntegrationTests", dependencies: ["xdirector", "Topology", "Packet", "Dataplane"]),
        // The bench's pure logic (frames, medians, targets) and its live-frames program (root).
        .testTarget(name: "BenchTests", dependencies: ["xdirector-bench", "CXDP", "Dataplane", "XDirectorTestSupport"], path: "Bench/Tests"),
    ]
)
