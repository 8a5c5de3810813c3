import ArgumentParser
import Foundation
import Packet

/// A UDP echo for real servers in labs: answers each datagram with its own name, from the address the
/// datagram was sent to (one socket per `--bind` address, so a DR/TUN answer leaves from the VIP); with
/// `--echo`, as long as the datagram (the name, a newline, then the datagram's bytes), so a large request
/// gets a large, fragmented answer.
struct BackendUDPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backend-udp",
        abstract: "Answer UDP datagrams with the real server's name (for labs).",
        shouldDisplay: false
    )

    @Option(help: "Name returned in each answer.")
    var name: String

    @Option(help: "UDP port to listen on.")
    var port: UInt16 = 53

    @Option(help: "Addresses to listen on, each with its own socket.")
    var bind: [String]

    @Flag(help: "Answer with as many bytes as the datagram had (the name first).")
    var echo = false

    func run() throws {
        var sockets: [pollfd] = []
        for text in bind {
            guard let address = IPAddress(text) else { throw failure("--bind \(text): not an address") }
            let fd = try LabSocket.udp(bound: address, port: port)
            sockets.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
        }
        print("backend-udp \(name): listening on port \(port)")
        fflush(nil)
        var buffer = [UInt8](repeating: 0, count: 65536)
        let named = Array((name + "\n").utf8)
        var answer = named
        while true {
            guard poll(&sockets, nfds_t(sockets.count), -1) > 0 else { continue }
            for entry in sockets where entry.revents & Int16(POLLIN) != 0 {
                var peer = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let count = withUnsafeMutablePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(entry.fd, &buffer, buffer.count, 0, $0, &length) }
                }
                guard count >= 0 else { continue }
                if echo { answer = named + buffer[min(named.count, count)..<max(named.count, count)] }
                _ = withUnsafePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(entry.fd, answer, answer.count, 0, $0, length) }
                }
            }
        }
    }
}

/// Sends datagrams to a VIP from `--count` fresh sockets (so each is a new flow) and prints who answered,
/// one name a line ("(none)" after a second without an answer).
struct UDPProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp-probe",
        abstract: "Send UDP datagrams to a service and print who answered (for labs).",
        shouldDisplay: false
    )

    @Option(help: "Service address.")
    var address: String

    @Option(help: "Service port.")
    var port: UInt16

    @Option(help: "Datagrams to send, each from a new socket (a new flow: the sockets stay open until the end, so no port is reused).")
    var count: Int = 10

    @Option(help: "Payload size in bytes.")
    var size: Int = 32

    @Flag(name: .customLong("dont-fragment"), help: "Set DF (path MTU discovery), IPv4.")
    var dontFragment = false

    @Flag(name: .customLong("expect-echo"), help: "Expect answers as long as the datagram (backend-udp --echo): print \"(short N)\" for another length.")
    var expectEcho = false

    func run() throws {
        guard let target = IPAddress(address) else { throw failure("--address \(address): not an address") }
        let payload = [UInt8](repeating: UInt8(ascii: "u"), count: max(size, 1))
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        for _ in 0..<count {
            let fd = try LabSocket.udp(bound: nil, family: target.family, port: 0)
            sockets.append(fd)
            if dontFragment {
                var mode = target.family == .ipv4 ? IP_PMTUDISC_DO : IPV6_PMTUDISC_DO
                setsockopt(fd, target.family == .ipv4 ? Int32(IPPROTO_IP) : Int32(IPPROTO_IPV6),
                           target.family == .ipv4 ? IP_MTU_DISCOVER : IPV6_MTU_DISCOVER, &mode,
                           socklen_t(MemoryLayout<Int32>.size))
            }
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            try LabSocket.withAddress(target, port: port) { address, length in
                _ = sendto(fd, payload, payload.count, 0, address, length)
            }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let received = recv(fd, &buffer, buffer.count, 0)
            if received <= 0 {
                print("(none)")
            } else if expectEcho && received != payload.count {
                print("(short \(received))")
            } else {
                let name = buffer[0..<received].prefix { $0 != UInt8(ascii: "\n") }
                print(String(decoding: name, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        fflush(nil)
    }
}

/// Socket plumbing for the lab commands.
enum LabSocket {
    /// A TCP socket listening on `port` of every IPv4 and IPv6 address.
    static func tcpListener(port: UInt16) throws -> Int32 {
        let listener = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw failure("socket: \(String(cString: strerror(errno)))") }
        var off: Int32 = 0, on: Int32 = 1
        setsockopt(listener, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = port.bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        guard bound == 0, listen(listener, 128) == 0 else {
            throw failure("cannot listen on port \(port): \(String(cString: strerror(errno)))")
        }
        return listener
    }

    static func udp(bound address: IPAddress?, family: IPAddress.Family? = nil, port: UInt16) throws -> Int32 {
        let family = address?.family ?? family ?? .ipv4
        let fd = socket(family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw failure("socket: \(String(cString: strerror(errno)))") }
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        if family == .ipv6 { setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &on, socklen_t(MemoryLayout<Int32>.size)) }
        let bindAddress = address ?? (family == .ipv4 ? IPAddress.v4(0) : IPAddress.v6(hi: 0, lo: 0))
        let result = try withAddress(bindAddress, port: port) { bind(fd, $0, $1) }
        guard result == 0 else { throw failure("bind \(bindAddress) port \(port): \(String(cString: strerror(errno)))") }
        return fd
    }

    static func withAddress<T>(_ address: IPAddress, port: UInt16,
                               _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> T) throws -> T {
        let bytes = address.bytes
        if address.family == .ipv4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: bytes) }
            return try withUnsafePointer(to: &sin) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
        return try withUnsafePointer(to: &sin6) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    }
}
