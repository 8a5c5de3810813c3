import Foundation
import Topology

/// Where the bench runs: by default two namespaces joined by one veth pair (no bridge), the generator and
/// sink on one end and the forwarder under test on the other, which sends frames back out the same
/// interface to the sink. With real interfaces (`--generator-interface`, `--director-interface`) the
/// namespaces are not used and nothing is created.
final class BenchTopology: @unchecked Sendable {
    static let vip = "198.18.1.10"           // RFC 2544 benchmarking range
    static let generatorAddress = "198.18.0.1"
    static let directorAddress = "198.18.0.2"
    static let realServers = ["198.18.0.11", "198.18.0.12"]
    static let realMACs = ["02:00:c6:12:00:0b", "02:00:c6:12:00:0c"]

    let generatorNamespace: String?
    let directorNamespace: String?
    let generatorInterface: String
    let directorInterface: String
    let queues: Int
    private(set) var generatorMAC: [UInt8] = []
    private(set) var directorMAC: [UInt8] = []
    private let created: Bool

    /// Builds the veth lab with `queues` queues on each end.
    init(queues: Int) throws {
        let prefix = "xdb" + String(format: "%05x", UInt32.random(in: 0..<0xFFFFF))
        generatorNamespace = "\(prefix)-gen"
        directorNamespace = "\(prefix)-dir"
        generatorInterface = "\(prefix)g"
        directorInterface = "\(prefix)d"
        self.queues = queues
        created = true
        do { try build() } catch {
            teardown()
            throw error
        }
    }

    /// Uses existing interfaces in the current namespace.
    init(generatorInterface: String, directorInterface: String, queues: Int) throws {
        generatorNamespace = nil
        directorNamespace = nil
        self.generatorInterface = generatorInterface
        self.directorInterface = directorInterface
        self.queues = queues
        created = false
        try readMACs()
        try addNeighbours()
    }

    private func build() throws {
        guard let gen = generatorNamespace, let dir = directorNamespace else { return }
        for namespace in [gen, dir] {
            try Topology.run(["ip", "netns", "add", namespace])
            try Topology.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        }
        let q = ["numrxqueues", "\(queues)", "numtxqueues", "\(queues)"]
        try Topology.run(["ip", "-n", gen, "link", "add", generatorInterface] + q
            + ["type", "veth", "peer", "name", directorInterface] + q + ["netns", dir])
        for (namespace, device, address) in [(gen, generatorInterface, Self.generatorAddress), (dir, directorInterface, Self.directorAddress)] {
            // Room for a tunnel header on 1500-byte frames.
            try Topology.run(["ip", "-n", namespace, "link", "set", device, "mtu", "1600", "up"])
            try Topology.run(["ip", "-n", namespace, "addr", "add", "\(address)/24", "dev", device])
            // The XDP programs see whole frames with their checksums in place.
            try exec(namespace, ["ethtool", "-K", device, "tx", "off", "tso", "off", "gso", "off"])
        }
        try Topology.run(["ip", "-n", dir, "addr", "add", "\(Self.vip)/32", "dev", "lo"])
        try readMACs()
        try addNeighbours()
    }

    private func readMACs() throws {
        func mac(_ namespace: String?, _ device: String) throws -> [UInt8] {
            let text = try exec(namespace, ["cat", "/sys/class/net/\(device)/address"])
            guard let value = parseMAC(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw BenchError("cannot read the MAC address of \(device)")
            }
            return value
        }
        generatorMAC = try mac(generatorNamespace, generatorInterface)
        directorMAC = try mac(directorNamespace, directorInterface)
    }

    /// The real servers exist only as permanent neighbour entries: the director resolves their MACs from
    /// the kernel's table, and the sink checks frames carry them.
    private func addNeighbours() throws {
        for (address, mac) in zip(Self.realServers, Self.realMACs) {
            try exec(directorNamespace, ["ip", "neigh", "replace", address, "lladdr", mac, "dev", directorInterface, "nud", "permanent"])
        }
    }

    /// The command line that runs `arguments` in `namespace` (or here, without one).
    static func command(in namespace: String?, _ arguments: [String]) -> [String] {
        namespace.map { ["ip", "netns", "exec", $0] + arguments } ?? arguments
    }

    @discardableResult
    func exec(_ namespace: String?, _ arguments: [String]) throws -> String {
        try Topology.run(Self.command(in: namespace, arguments))
    }

    /// Deletes the namespaces (their veths go with them). Safe to call twice.
    func teardown() {
        guard created else { return }
        for namespace in [generatorNamespace, directorNamespace].compactMap({ $0 }) {
            _ = try? Topology.run(["ip", "netns", "del", namespace], check: false)
        }
    }
}

func formatMAC(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined(separator: ":") }
