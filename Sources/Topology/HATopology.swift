import Foundation
import Packet

/// Several directors behind a router that spreads flows over them by ECMP, as large operators run L4
/// balancing (Maglev, Katran, GLB, Unimog), in network namespaces:
///
///     client ── router ──┬── bridge ──┬── director 1..N   XDirector + BIRD, peering over BGP with the router
///      (BIRD, ECMP, L4 hash)          └── rs1..M          VIP on lo, arp_ignore (DR); default route: the router
///
/// Each director announces the VIP through its own BIRD (`run --bird-socket --bird-include`); the router's
/// BIRD merges the equal routes into one multipath route, hashed on addresses and ports. Directors send to
/// the real servers by MAC on the shared segment; the real servers answer the client through the router.
public final class HATopology: @unchecked Sendable {
    public static let vip = IPAddress("203.0.113.10")!
    public static let clientAddress = IPAddress("192.0.2.1")!
    /// The router on the client's link and on the directors' segment.
    public static let routerClientSide = IPAddress("192.0.2.254")!
    public static let routerAddress = IPAddress("198.51.100.254")!
    public static func directorAddress(_ index: Int) -> IPAddress { IPAddress("198.51.100.\(2 + index)")! }
    public static func realAddress(_ index: Int) -> IPAddress { IPAddress("198.51.100.\(11 + index)")! }
    public static let routerAS = 65000, directorAS = 65001

    public let lab: NamespaceLab
    public var prefix: String { lab.prefix }
    public let realCount: Int
    public private(set) var directorCount = 0
    public var client: String { "\(prefix)-cl" }
    public var router: String { "\(prefix)-rt" }
    public var bridgeNamespace: String { "\(prefix)-sw" }
    public func director(_ index: Int) -> String { "\(prefix)-d\(index + 1)" }
    public func real(_ index: Int) -> String { "\(prefix)-rs\(index + 1)" }
    /// Director `index`'s interface: unique names, as BPF pins may share one bpffs.
    public func directorInterface(_ index: Int) -> String { "\(prefix)d\(index)" }
    /// Where the lab keeps its BIRD configurations, control sockets and include files.
    public let directory: String
    public var routerSocket: String { "\(directory)/router.ctl" }
    public func birdSocket(_ index: Int) -> String { "\(directory)/d\(index + 1).ctl" }
    public func birdInclude(_ index: Int) -> String { "\(directory)/d\(index + 1).vips" }

    /// Builds the client, the router (its BIRD started), the bridge and `realCount` real servers; add
    /// directors with `addDirector()`.
    public init(realCount: Int = 3) throws {
        lab = NamespaceLab(prefix: "xh")
        self.realCount = realCount
        directory = NSTemporaryDirectory() + "\(lab.prefix)-ha"
        do { try build() } catch {
            teardown()
            throw error
        }
    }

    deinit { teardown() }

    public func teardown() {
        lab.teardown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @discardableResult
    public func exec(_ namespace: String, _ arguments: [String], check: Bool = true) throws -> String {
        try lab.exec(namespace, arguments, check: check)
    }

    public func spawn(_ namespace: String, _ arguments: [String], output: Pipe? = nil) throws -> Process {
        try lab.spawn(namespace, arguments, output: output)
    }

    private func build() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for namespace in [client, router, bridgeNamespace] + (0..<realCount).map(real) { try lab.add(namespace) }
        let sw = bridgeNamespace
        try exec(sw, ["ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        try exec(sw, ["ip", "link", "set", "br0", "up"])
        try exec(sw, ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"], check: false)

        // client ── router
        try exec(client, ["ip", "link", "add", "\(prefix)c0", "type", "veth", "peer", "name", "\(prefix)rc", "netns", router])
        try up(client, "\(prefix)c0", "\(Self.clientAddress)/24")
        try up(router, "\(prefix)rc", "\(Self.routerClientSide)/24")
        try exec(client, ["ip", "route", "add", "default", "via", "\(Self.routerClientSide)"])
        // router ── segment; it forwards, hashing flows over equal next hops by addresses and ports.
        try attach(router, "\(prefix)r0", address: "\(Self.routerAddress)/24")
        try exec(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"])
        // Frames the directors' XDP programs see must carry full checksums: offloads off where they are sent.
        try exec(client, ["ethtool", "-K", "\(prefix)c0", "tx", "off", "tso", "off", "gso", "off"])
        try exec(router, ["ethtool", "-K", "\(prefix)r0", "tx", "off", "tso", "off", "gso", "off"])

        for index in 0..<realCount {
            let namespace = real(index), device = "\(prefix)s\(index)"
            try attach(namespace, device, address: "\(Self.realAddress(index))/24")
            try exec(namespace, ["ip", "route", "add", "default", "via", "\(Self.routerAddress)"])
            try exec(namespace, ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"])
            try exec(namespace, ["ip", "addr", "add", "\(Self.vip)/32", "dev", "lo"])
        }

        // The router's BIRD: any director of the segment may peer (dynamic BGP), and equal routes to a VIP
        // become one multipath route in the kernel.
        try """
            router id \(Self.routerAddress);
            protocol device {}
            protocol kernel {
                ipv4 { export all; };
                merge paths on;
            }
            protocol bgp directors {
                local \(Self.routerAddress) as \(Self.routerAS);
                neighbor range 198.51.100.0/24 as \(Self.directorAS);
                dynamic name "director";
                hold time 3; connect delay time 1; connect retry time 1;
                ipv4 { import all; export none; };
            }
            """.write(toFile: "\(directory)/router.conf", atomically: true, encoding: .utf8)
        _ = try spawn(router, ["bird", "-f", "-c", "\(directory)/router.conf", "-s", routerSocket])
    }

    private func up(_ namespace: String, _ device: String, _ address: String) throws {
        try exec(namespace, ["ip", "addr", "add", address, "dev", device])
        try exec(namespace, ["ip", "link", "set", device, "up"])
    }

    /// A veth from the bridge to `device` in `namespace`.
    private func attach(_ namespace: String, _ device: String, address: String, queues: Int = 1) throws {
        let port = "\(device)p", q = ["numrxqueues", "\(queues)", "numtxqueues", "\(queues)"]
        try exec(bridgeNamespace, ["ip", "link", "add", port] + q + ["type", "veth", "peer", "name", device] + q + ["netns", namespace])
        try exec(bridgeNamespace, ["ip", "link", "set", port, "master", "br0", "up"])
        try up(namespace, device, address)
    }

    /// Adds a director namespace on the segment and starts its BIRD, which peers with the router and
    /// exports what the director's include file announces (its static protocols `xdirector_…_4`). Returns
    /// its index.
    public func addDirector(queues: Int = 1) throws -> Int {
        let index = directorCount
        let namespace = director(index), device = directorInterface(index)
        try lab.add(namespace)
        try attach(namespace, device, address: "\(Self.directorAddress(index))/24", queues: queues)
        directorCount += 1
        // The include file exists (empty) before BIRD starts, as on a real director.
        try "".write(toFile: birdInclude(index), atomically: true, encoding: .utf8)
        try """
            router id \(Self.directorAddress(index));
            protocol device {}
            include "\(birdInclude(index))";
            protocol bgp upstream {
                local \(Self.directorAddress(index)) as \(Self.directorAS);
                neighbor \(Self.routerAddress) as \(Self.routerAS);
                hold time 3; connect delay time 1; connect retry time 1;
                ipv4 { import none; export where proto ~ "xdirector_*_4"; };
            }
            """.write(toFile: "\(directory)/d\(index + 1).conf", atomically: true, encoding: .utf8)
        _ = try spawn(namespace, ["bird", "-f", "-c", "\(directory)/d\(index + 1).conf", "-s", birdSocket(index)])
        return index
    }

    /// Director `index`'s control socket.
    public func controlSocket(_ index: Int) -> String { "\(directory)/d\(index + 1).sock" }

    /// Starts `xdirector run` (the binary at `executable`) on director `index` with `rules`, announcing
    /// through its BIRD; its output goes to `output`.
    public func startDirector(_ index: Int, executable: String, rules: String, output: Pipe? = nil,
                              extra: [String] = []) throws -> Process {
        let rulesPath = "\(directory)/d\(index + 1).rules"
        try (rules + "\n").write(toFile: rulesPath, atomically: true, encoding: .utf8)
        return try spawn(director(index), [executable, "run", "--interface", directorInterface(index), "--rules", rulesPath,
                                           "--state-file", "\(directory)/d\(index + 1).state", "--socket", controlSocket(index),
                                           "--bird-socket", birdSocket(index), "--bird-include", birdInclude(index)] + extra,
                         output: output)
    }

    /// Starts the lab's servers on every real server: `backend-session` on `port` (long-lived TCP).
    public func startRealServers(executable: String, port: UInt16) throws {
        for index in 0..<realCount {
            _ = try spawn(real(index), [executable, "backend-session", "--name", "rs\(index + 1)", "--port", "\(port)"])
        }
    }

    /// Waits until the router's route to the VIP has `count` next hops; false after `seconds`.
    public func waitForNextHops(_ count: Int, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if nextHops().count == count { return true }
            usleep(50_000)
        }
        return nextHops().count == count
    }

    /// The router's next hops for the VIP (the directors that announce it), from its kernel's route.
    public func nextHops() -> Set<IPAddress> {
        let route = (try? exec(router, ["ip", "-4", "route", "show", "\(Self.vip)/32"], check: false)) ?? ""
        return Set(route.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
            .compactMap { IPAddress(String($0)) }.filter { $0 != Self.vip })
    }
}
