import CXDP
import Dataplane
import Foundation
import Logging
import Packet
import XCTest
import XDirectorTestSupport

/// The XDP program itself, run by the kernel on fixture frames (BPF_PROG_RUN; nothing is sent): which frames
/// it claims for the workers and which it leaves to the kernel, and the counter each one lands in. No socket
/// is registered, so a frame the program claims meets the "no worker" rule: services and ICMP errors go to
/// the kernel (or are held within the restart grace after a heartbeat), replies are dropped. Needs root.
final class XDPProgramTests: XCTestCase {
    private let vip = "203.0.113.10", client = "198.51.100.1", real = "198.51.100.11", local = "198.51.100.3"
    /// The director host's own address (health checks leave from it).
    private let host = "198.51.100.2"
    private var program: XDPProgram!

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("loading an XDP program needs root") }
        program = try XDPProgram(interface: try NetworkInterface(name: "lo"), instance: "xdtest-\(getpid())",
                                 logger: Logger(label: "test"))
        try program.setService(ServiceKey(proto: .tcp, address: IPAddress(vip)!, port: 80), index: 0)
        try program.setService(ServiceKey(proto: .udp, address: IPAddress("2001:db8:10::10")!, port: 53), index: 1)
        try program.setNATReal(ServiceKey(proto: .tcp, address: IPAddress(real)!, port: 8080))
        try program.setLocalAddress(IPAddress(local)!)
        try program.setHostAddress(IPAddress(host)!)
        try program.setFragmentAddress(FragmentAddress(address: IPAddress(vip)!, proto: .tcp, role: .toService))
        try program.setFragmentAddress(FragmentAddress(address: IPAddress("2001:db8:10::10")!, proto: .udp, role: .toService))
        try program.setFragmentAddress(FragmentAddress(address: IPAddress(real)!, proto: .tcp, role: .fromNATReal))
    }

    override func tearDown() {
        program?.close()
        program = nil
    }

    /// Runs `frame` and returns the action and the counters that moved (besides `rx`).
    private func run(_ frame: [UInt8]) throws -> (action: UInt32, moved: [String: UInt64]) {
        let before = program.counters()
        let action = try program.run(frame: frame)
        let after = program.counters()
        var moved: [String: UInt64] = [:]
        for (index, name) in XDPProgram.counterNames.enumerated() where name != "rx" && after[index] != before[index] {
            moved[name] = after[index] - before[index]
        }
        XCTAssertEqual(after[0] - before[0], 1, "rx counts every frame")
        return (action, moved)
    }

    func testEachFrameGoesWhereItBelongsWithItsCounter() throws {
        let toService = PacketBuilder.tcp(client, 40000, vip, 80, flags: TCPFlags.syn)
        var fragment = PacketBuilder.udp(client, 40000, vip, 80, payload: [1, 2, 3])
        fragment.ipv4.moreFragments = true
        let truncated = Array(toService.build().prefix(14 + 20 + 2))  // the TCP header cut after the source port
        let cases: [(String, [UInt8], UInt32, [String: UInt64])] = [
            ("a service (no worker: to the kernel)", toService.build(), UInt32(XDP_PASS.rawValue),
             ["redirected": 0, "pass_no_socket": 1]),
            ("an IPv6 service", PacketBuilder.udp("2001:db8:1::1", 5353, "2001:db8:10::10", 53).build(), UInt32(XDP_PASS.rawValue),
             ["pass_no_socket": 1]),
            ("not a service (another port)", PacketBuilder.tcp(client, 40000, vip, 81).build(), UInt32(XDP_PASS.rawValue),
             ["pass_not_service": 1]),
            ("a NAT real server's reply (never to the kernel untranslated)",
             PacketBuilder.tcp(real, 8080, client, 40000).build(), UInt32(XDP_DROP.rawValue), ["drop_reply_no_worker": 1]),
            ("a NAT real server answering the host itself (a health check): the kernel's",
             PacketBuilder.tcp(real, 8080, host, 51000, flags: TCPFlags.syn | TCPFlags.ack).build(), UInt32(XDP_PASS.rawValue),
             ["pass_not_service": 1]),
            ("an ICMP error to the host about its own packet to a NAT real server",
             PacketBuilder.icmpError(real, host, type: 3, code: 3, quoting: PacketBuilder.tcp(host, 51000, real, 8080)).build(),
             UInt32(XDP_PASS.rawValue), ["pass_other_l4": 1]),
            ("a reply to a FULLNAT local address", PacketBuilder.tcp(real, 80, local, 2000).build(), UInt32(XDP_DROP.rawValue),
             ["drop_reply_no_worker": 1]),
            ("an ICMP error quoting a reply from the service",
             PacketBuilder.icmpError("192.0.2.77", client, type: 3, code: 4, rest: 1400,
                                     quoting: PacketBuilder.tcp(vip, 80, client, 40000)).build(),
             UInt32(XDP_PASS.rawValue), ["pass_no_socket": 1]),
            ("an ICMP error about another flow", PacketBuilder.icmpError("192.0.2.77", client, type: 3, code: 4,
                                                                         quoting: PacketBuilder.tcp(client, 1, "192.0.2.9", 22)).build(),
             UInt32(XDP_PASS.rawValue), ["pass_other_l4": 1]),
            ("a fragment", fragment.build(), UInt32(XDP_PASS.rawValue), ["pass_fragment": 1]),
            ("a truncated header", truncated, UInt32(XDP_PASS.rawValue), ["pass_malformed": 1]),
            ("ARP", PacketBuilder(network: .other(etherType: 0x0806, payload: [UInt8](repeating: 0, count: 28)),
                                  transport: .other(proto: 0, payload: [])).build(),
             UInt32(XDP_PASS.rawValue), ["pass_not_ip": 1]),
        ]
        for (name, frame, action, counters) in cases {
            let (got, moved) = try run(frame)
            XCTAssertEqual(got, action, name)
            XCTAssertEqual(moved, counters.filter { $0.value != 0 }, name)
        }
    }

    /// A whole, consistent TCP or UDP packet to a service or from a NAT real server comes with the program's
    /// description (`FrameMetadata`): exactly what `FrameMetadata.describe` writes, which the engine benchmark
    /// and the engine tests use in the kernel's place. Every other frame the program claims gets sixteen zero
    /// bytes (so no UMEM frame keeps an earlier frame's description), and the parser refuses the inconsistent
    /// ones as it always did; frames the program leaves to the kernel get none.
    func testWholePacketsForTheWorkersComeWithTheirDescription() throws {
        try program.setService(ServiceKey(proto: .udp, address: IPAddress(vip)!, port: 80), index: 2)
        func expected(_ frame: [UInt8], service: Int?) -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: FrameMetadata.size) + frame
            let written = buffer.withUnsafeMutableBytes {
                FrameMetadata.describe($0.baseAddress! + FrameMetadata.size, length: frame.count, service: service)
            }
            XCTAssertTrue(written)
            return Array(buffer.prefix(FrameMetadata.size))
        }
        var tagged = PacketBuilder.tcp(client, 40001, vip, 80, flags: TCPFlags.syn, payload: [1, 2, 3])
        tagged.vlanTCI = 7
        var withOptions = PacketBuilder.udp(client, 40002, vip, 80, payload: [4, 5])
        withOptions.ipv4.options = [1, 1, 1, 0]
        var tcpOptions = PacketBuilder.tcp(client, 40003, vip, 80, flags: TCPFlags.syn)
        tcpOptions.tcp.options = [2, 4, 5, 0xb4]  // MSS
        var padded = PacketBuilder.tcp(client, 40004, vip, 80)
        padded.trailer = [UInt8](repeating: 0, count: 6)  // Ethernet padding: the IP packet is shorter than the frame
        let described: [(String, [UInt8], Int?)] = [
            ("a SYN to a service", PacketBuilder.tcp(client, 40000, vip, 80, flags: TCPFlags.syn).build(), 0),
            ("behind a VLAN tag, with a payload", tagged.build(), 0),
            ("IPv4 options", withOptions.build(), 2),
            ("TCP options", tcpOptions.build(), 0),
            ("Ethernet padding", padded.build(), 0),
            ("an IPv6 datagram to a service", PacketBuilder.udp("2001:db8:1::1", 5353, "2001:db8:10::10", 53).build(), 1),
            ("a NAT real server's reply", PacketBuilder.tcp(real, 8080, client, 40000).build(), nil),
            ("a reply to a FULLNAT local address", PacketBuilder.udp(real, 80, local, 2000, payload: [9]).build(), nil),
        ]
        for (name, frame, service) in described {
            let (_, metadata) = try program.runShowingMetadata(frame: frame)
            XCTAssertEqual(metadata, expected(frame, service: service), name)
        }
        // Still the workers', but each without a description; the parser refuses the inconsistent ones too.
        var badOffset = PacketBuilder.tcp(client, 40000, vip, 80).build()
        badOffset[14 + 20 + 12] = 0x40  // data offset 4 words
        var longerThanFrame = PacketBuilder.tcp(client, 40000, vip, 80).build()
        longerThanFrame[14 + 3] &+= 8   // IPv4 total length past the frame's end
        var shorterThanHeader = PacketBuilder.tcp(client, 40000, vip, 80).build()
        shorterThanHeader[14 + 2] = 0; shorterThanHeader[14 + 3] = 16  // IPv4 total length below the header's
        var badUDPLength = PacketBuilder.udp(client, 40000, vip, 80, payload: [1, 2]).build()
        badUDPLength[14 + 20 + 5] = 20  // UDP length longer than the segment
        var v6LongerThanFrame = PacketBuilder.udp("2001:db8:1::1", 5353, "2001:db8:10::10", 53).build()
        v6LongerThanFrame[14 + 5] &+= 8  // IPv6 payload length past the frame's end
        var fragment = PacketBuilder.tcp(client, 40000, vip, 80, payload: [1, 2, 3])
        fragment.ipv4.moreFragments = true
        let inconsistent: [(String, [UInt8])] = [
            ("a TCP data offset below 5", badOffset), ("an IPv4 length past the frame", longerThanFrame),
            ("an IPv4 length below its header's", shorterThanHeader), ("a UDP length past the segment", badUDPLength),
            ("an IPv6 length past the frame", v6LongerThanFrame),
        ]
        let blank = [UInt8](repeating: 0, count: FrameMetadata.size)
        for (name, frame) in inconsistent {
            XCTAssertEqual(try program.runShowingMetadata(frame: frame).metadata, blank, name)
            var parsed = ParsedFrame()
            let status = frame.withUnsafeBytes { FrameParser.parse($0.baseAddress!, length: frame.count, into: &parsed) }
            XCTAssertNotEqual(status, .ok, "\(name): the parser refuses it too")
        }
        let otherKinds: [(String, [UInt8])] = [
            ("a fragment", fragment.build()),
            ("an ICMP error", PacketBuilder.icmpError("192.0.2.77", client, type: 3, code: 4, rest: 1400,
                                                      quoting: PacketBuilder.tcp(vip, 80, client, 40000)).build()),
        ]
        for (name, frame) in otherKinds {
            XCTAssertEqual(try program.runShowingMetadata(frame: frame).metadata, blank, name)
        }
        XCTAssertEqual(try program.runShowingMetadata(frame: PacketBuilder.tcp(client, 40000, vip, 81).build()).metadata, [],
                       "not a service: the kernel's, no metadata")
    }

    /// Fragments go by address (later ones have no ports): to a VIP of a service of their protocol, from a NAT
    /// real server's address, to a local address; with no worker, as whole packets of their kind would.
    func testFragmentsOfServicesAndRepliesAreClaimedByAddress() throws {
        let pass = UInt32(XDP_PASS.rawValue), drop = UInt32(XDP_DROP.rawValue)
        let request = PacketBuilder.tcp(client, 40000, vip, 80, payload: [UInt8](repeating: 7, count: 40))
            .fragments(dataPerFragment: 24, identification: 99)
        let otherPort = PacketBuilder.tcp(client, 40000, vip, 8443, payload: [UInt8](repeating: 7, count: 40))
            .fragments(dataPerFragment: 24, identification: 98)
        let reply = PacketBuilder.tcp(real, 8080, client, 40000, payload: [UInt8](repeating: 7, count: 40))
            .fragments(dataPerFragment: 24, identification: 97)
        let toHost = PacketBuilder.tcp(real, 8080, host, 51000, payload: [UInt8](repeating: 7, count: 40))
            .fragments(dataPerFragment: 24, identification: 96)
        let toLocal = PacketBuilder.udp(real, 80, local, 2000, payload: [UInt8](repeating: 7, count: 40))
            .fragments(dataPerFragment: 24, identification: 95)
        let v6 = PacketBuilder.udp("2001:db8:1::1", 5353, "2001:db8:10::10", 53, payload: [UInt8](repeating: 7, count: 40))
            .fragments(dataPerFragment: 24, identification: 0xfeed_f00d)
        let v6Other = PacketBuilder.udp("2001:db8:1::1", 5353, "2001:db8:10::11", 53, payload: [UInt8](repeating: 7, count: 40))
            .fragments(dataPerFragment: 24, identification: 1)
        let cases: [(String, [UInt8], UInt32, [String: UInt64])] = [
            ("a first fragment to a VIP", request[0], pass, ["pass_no_socket": 1]),
            ("a later fragment to a VIP", request[1], pass, ["pass_no_socket": 1]),
            ("a later fragment to a VIP's port without a service (the address decides)", otherPort[2], pass,
             ["pass_no_socket": 1]),
            ("a NAT real server's later fragment (never to the kernel untranslated)", reply[1], drop,
             ["drop_reply_no_worker": 1]),
            ("a NAT real server's fragment to the host: the kernel's", toHost[1], pass, ["pass_fragment": 1]),
            ("a later fragment to a local address", toLocal[1], drop, ["drop_reply_no_worker": 1]),
            ("an IPv6 first fragment to a VIP", v6[0], pass, ["pass_no_socket": 1]),
            ("an IPv6 later fragment to a VIP", v6[1], pass, ["pass_no_socket": 1]),
            ("an IPv6 fragment to another address", v6Other[1], pass, ["pass_fragment": 1]),
        ]
        for (name, frame, action, counters) in cases {
            let (got, moved) = try run(frame)
            XCTAssertEqual(got, action, name)
            XCTAssertEqual(moved, counters, name)
        }
    }

    /// After the workers' last heartbeat the program holds their queue's frames for the restart grace: a
    /// restarted director resumes the connections, so the kernel must not reset them meanwhile.
    func testFramesAreHeldWithinTheRestartGraceAfterAHeartbeat() throws {
        let frame = PacketBuilder.tcp(client, 40000, vip, 80).build()
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let beat = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        program.heartbeat(queue: 0).pointee.store(beat, ordering: .relaxed)
        try program.setOwner(.current, restartGrace: 30)
        XCTAssertEqual(try run(frame).action, UInt32(XDP_DROP.rawValue))
        XCTAssertEqual(try run(frame).moved, ["held_no_worker": 1])
        // A beat older than the grace: the kernel's again.
        program.heartbeat(queue: 0).pointee.store(beat - 31_000_000_000, ordering: .relaxed)
        XCTAssertEqual(try run(frame).moved, ["pass_no_socket": 1])
        // A grace of 0 holds nothing.
        program.heartbeat(queue: 0).pointee.store(beat, ordering: .relaxed)
        try program.setOwner(.current, restartGrace: 0)
        XCTAssertEqual(try run(frame).moved, ["pass_no_socket": 1])
    }
}
