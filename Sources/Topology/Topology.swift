import Foundation
import Packet

/// A throw-away LVS lab in network namespaces: a client, a director and real servers joined by a bridge
/// (itself in a namespace), with documentation-range addresses that exist nowhere else. Every name carries
/// a unique prefix, so labs never collide; `teardown()` removes everything, and is safe to call twice.
///
///     client ──┐
///     director ┼── bridge (switch namespace)
///     rs1..N ──┘      VIPs on the real servers' lo, arp_ignore=1 / arp_announce=2 (DR)
public final class Topology: @unchecked Sendable {
    public static let vip4 = IPAddress("203.0.113.10")!
    public static let vip6 = IPAddress("2001:db8:10::10")!
    public static let clientAddress4 = IPAddress("198.51.100.1")!
    public static let clientAddress6 = IPAddress("2001:db8:1::1")!
    public static let directorAddress4 = IPAddress("198.51.100.2")!
    public static let directorAddress6 = IPAddress("2001:db8:1::2")!
    /// FULLNAT local addresses: on the director's interface, so the kernel answers ARP/ND for them.
    public static let localAddress4 = IPAddress("198.51.100.3")!
    public static let localAddress6 = IPAddress("2001:db8:1::3")!
    /// The UDP port the labs' GUE decapsulation listens on.
    public static let guePort: UInt16 = 6080
    public static func realAddress4(_ index: Int) -> IPAddress { IPAddress("198.51.100.\(11 + index)")! }
    public static func realAddress6(_ index: Int) -> IPAddress { IPAddress("2001:db8:1::\(String(0x11 + index, radix: 16))")! }

    public let prefix: String
    public let realCount: Int
    public var client: String { "\(prefix)-cl" }
    public var director: String { "\(prefix)-dir" }
    public var bridgeNamespace: String { "\(prefix)-sw" }
    public func real(_ index: Int) -> String { "\(prefix)-rs\(index + 1)" }
    /// The director's interface: named uniquely, because BPF pins live in one bpffs for all namespaces.
    public var directorInterface: String { "\(prefix)d0" }
    /// The client's interface (to the bridge).
    public var clientInterface: String { "\(prefix)c0" }
    private var namespaces: [String] { [client, director, bridgeNamespace] + (0..<realCount).map(real) }
    /// The namespaces and the processes started in them.
    private let lab: NamespaceLab

    /// Builds the lab. `directorQueues` > 1 gives the director's veth that many RX/TX queues.
    public init(realCount: Int = 2, directorQueues: Int = 1) throws {
        lab = NamespaceLab(prefix: "xd")
        prefix = lab.prefix
        self.realCount = realCount
        do { try build(directorQueues: directorQueues) } catch {
            teardown()
            throw error
        }
    }

    deinit { teardown() }

    private func build(directorQueues: Int) throws {
        for namespace in namespaces { try lab.add(namespace) }
        let sw = bridgeNamespace
        try exec(sw, ["ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        try exec(sw, ["ip", "link", "set", "br0", "up"])
        // A switch forwards what it gets: with br_netfilter loaded, the bridge would check IP headers itself
        // and drop the malformed frames the director must see (and count). Absent without br_netfilter.
        try exec(sw, ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0"],
                 check: false)

        func attach(_ namespace: String, port: String, inside: String, queues: Int = 1) throws {
            let q = ["numrxqueues", "\(queues)", "numtxqueues", "\(queues)"]
            try exec(sw, ["ip", "link", "add", port] + q + ["type", "veth", "peer", "name", inside] + q + ["netns", namespace])
            try exec(sw, ["ip", "link", "set", port, "master", "br0", "up"])
            try exec(namespace, ["ip", "link", "set", inside, "up"])
        }
        func address(_ namespace: String, _ device: String, _ v4: IPAddress, _ v6: IPAddress) throws {
            try exec(namespace, ["ip", "addr", "add", "\(v4)/24", "dev", device])
            try exec(namespace, ["ip", "-6", "addr", "add", "\(v6)/64", "dev", device, "nodad"])
        }

        try attach(client, port: "\(prefix)c", inside: clientInterface)
        try address(client, clientInterface, Self.clientAddress4, Self.clientAddress6)
        // Frames the director's XDP program sees must carry full checksums and be MTU-sized.
        try exec(client, ["ethtool", "-K", clientInterface, "tx", "off", "tso", "off", "gso", "off"])
        try exec(client, ["ip", "route", "add", "\(Self.vip4)/32", "via", "\(Self.directorAddress4)"])
        try exec(client, ["ip", "-6", "route", "add", "\(Self.vip6)/128", "via", "\(Self.directorAddress6)"])

        try attach(director, port: "\(prefix)d", inside: directorInterface, queues: directorQueues)
        try address(director, directorInterface, Self.directorAddress4, Self.directorAddress6)
        try exec(director, ["ip", "addr", "add", "\(Self.vip4)/32", "dev", "lo"])
        try exec(director, ["ip", "-6", "addr", "add", "\(Self.vip6)/128", "dev", "lo"])

        for index in 0..<realCount {
            let namespace = real(index), device = "\(prefix)r\(index)"
            try attach(namespace, port: "\(prefix)p\(index)", inside: device)
            try address(namespace, device, Self.realAddress4(index), Self.realAddress6(index))
            // DR: the VIP is local on every real server, but only the director may answer ARP for it.
            try exec(namespace, ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"])
            try exec(namespace, ["ip", "addr", "add", "\(Self.vip4)/32", "dev", "lo"])
            try exec(namespace, ["ip", "-6", "addr", "add", "\(Self.vip6)/128", "dev", "lo"])
        }
    }

    /// NAT: the real servers reach the client through the director (their gateway), so replies pass it.
    /// Their own offloads go off too: their frames now cross the director's XDP program.
    public func routeClientThroughDirector() throws {
        for index in 0..<realCount {
            try exec(real(index), ["ip", "route", "add", "\(Self.clientAddress4)/32", "via", "\(Self.directorAddress4)"])
            try exec(real(index), ["ip", "-6", "route", "add", "\(Self.clientAddress6)/128", "via", "\(Self.directorAddress6)"])
            try exec(real(index), ["ethtool", "-K", "\(prefix)r\(index)", "tx", "off", "tso", "off", "gso", "off"])
        }
    }

    /// FULLNAT: the local addresses on the director's interface; the real servers' frames cross its XDP
    /// program, so their offloads go off.
    public func addLocalAddresses() throws {
        try exec(director, ["ip", "addr", "add", "\(Self.localAddress4)/24", "dev", directorInterface])
        try exec(director, ["ip", "-6", "addr", "add", "\(Self.localAddress6)/64", "dev", directorInterface, "nodad"])
        for index in 0..<realCount {
            try exec(real(index), ["ethtool", "-K", "\(prefix)r\(index)", "tx", "off", "tso", "off", "gso", "off"])
        }
    }

    /// TUN: each real server decapsulates IPIP, GUE (UDP port `guePort`) and GRE with the labs' XDP program,
    /// standing in for the kernel's tunnel devices.
    public func attachDecapsulation() throws {
        for index in 0..<realCount { try attachDecapsulation(real(index), interface: "\(prefix)r\(index)") }
    }

    /// Attaches the labs' decapsulation program to `interface` in `namespace` (also: a program that is not the
    /// director's, for the tests of refusals).
    public func attachDecapsulation(_ namespace: String, interface: String) throws {
        guard let object = Data(base64Encoded: EmbeddedBPFObjects.lab_decap) else {
            throw TopologyError(command: ["decapsulation"], status: 1, stderr: "the embedded program is corrupt")
        }
        let path = NSTemporaryDirectory() + "\(prefix)-\(interface)-decap.o"
        try object.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try exec(namespace, ["ip", "link", "set", "dev", interface, "xdp", "obj", path, "sec", "xdp"])
    }

    /// Stops the processes started in the lab and deletes its namespaces (their veths go with them).
    public func teardown() { lab.teardown() }

    /// Runs a command in a namespace and returns its standard output; throws on a non-zero exit.
    @discardableResult
    public func exec(_ namespace: String, _ arguments: [String], check: Bool = true) throws -> String {
        try lab.exec(namespace, arguments, check: check)
    }

    /// Starts a long-running command in a namespace; it is stopped by `teardown()` if still running.
    public func spawn(_ namespace: String, _ arguments: [String], output: Pipe? = nil) throws -> Process {
        try lab.spawn(namespace, arguments, output: output)
    }

    /// Runs a command, bounded to `timeout` seconds; returns its standard output (stderr in the error).
    @discardableResult
    public static func run(_ arguments: [String], check: Bool = true, timeout: TimeInterval = 60) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read while it runs, so a chatty command cannot fill the pipe and stall.
        let output = DataBox(), errors = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { output.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errors.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        wait(process, seconds: timeout)
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        group.wait()
        let text = String(decoding: output.data, as: UTF8.self)
        if check && process.terminationStatus != 0 {
            throw TopologyError(command: arguments, status: process.terminationStatus,
                                stderr: String(decoding: errors.data, as: UTF8.self))
        }
        return text
    }

    /// Waits for a process to end, at most `seconds`.
    public static func wait(_ process: Process, seconds: TimeInterval) {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
    }
}

public struct TopologyError: Error, CustomStringConvertible {
    public let command: [String]
    public let status: Int32
    public let stderr: String
    public var description: String {
        "`\(command.joined(separator: " "))` exited with \(status): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
    }
}

/// Holds what a reader thread collected; read only after the group it belongs to has finished.
private final class DataBox: @unchecked Sendable {
    var data = Data()
}
