import Foundation
import Packet

/// What the director needs to know about the interface it serves, read from the kernel.
public struct NetworkInterface: Sendable {
    public let name: String
    public let index: UInt32
    public let mac: MACAddress
    public let mtu: Int
    /// Number of receive queues (`/sys/class/net/IF/queues/rx-*`).
    public let rxQueueCount: Int

    public init(name: String) throws(DataplaneError) {
        guard !name.isEmpty, name.count < Int(IF_NAMESIZE), !name.contains("/") else {
            throw DataplaneError("invalid interface name '\(name)'")
        }
        let index = if_nametoindex(name)
        guard index != 0 else { throw DataplaneError("interface \(name) does not exist", errno: errno) }
        let sysfs = "/sys/class/net/\(name)"
        guard let macText = Self.read("\(sysfs)/address"), let mac = MACAddress(macText) else {
            throw DataplaneError("interface \(name) has no Ethernet address")
        }
        let queues = (try? FileManager.default.contentsOfDirectory(atPath: "\(sysfs)/queues"))?
            .filter { $0.hasPrefix("rx-") }.count ?? 1
        self.name = name
        self.index = index
        self.mac = mac
        self.mtu = Self.read("\(sysfs)/mtu").flatMap { Int($0) } ?? 1500
        self.rxQueueCount = max(queues, 1)
    }

    private static func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
