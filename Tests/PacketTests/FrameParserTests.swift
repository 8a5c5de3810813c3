import Packet
import XCTest
import XDirectorTestSupport

/// What a successful parse must report.
private struct Expected {
    var key: FlowKey
    var l3Offset: Int
    var l4Offset: Int
    var ipPacketLength: Int
    var tcpFlags: UInt8
}

/// A parser fixture: description, input frame, expected status, and for `.ok` the expected fields.
private struct ParseCase {
    var description: String
    var frame: [UInt8]
    var status: ParseStatus
    var expected: Expected?

    init(_ description: String, _ frame: [UInt8], _ status: ParseStatus, _ expected: Expected? = nil) {
        self.description = description
        self.frame = frame
        self.status = status
        self.expected = expected
    }
}

private func key(_ source: String, _ sourcePort: UInt16, _ destination: String, _ destinationPort: UInt16,
                 _ proto: UInt8) -> FlowKey {
    FlowKey(source: IPAddress(source)!, sourcePort: sourcePort, destination: IPAddress(destination)!,
            destinationPort: destinationPort, proto: proto)
}

private let tcp = IPProtocolNumber.tcp
private let udp = IPProtocolNumber.udp

/// Builds a frame from `builder` after letting `edit` change it.
private func frame(_ builder: PacketBuilder, _ edit: (inout PacketBuilder) -> Void = { _ in }) -> [UInt8] {
    with(builder, edit).build()
}

/// Edits the bytes of a built frame; `fixChecksum` recomputes the IPv4 header checksum afterwards.
private func edited(_ bytes: [UInt8], fixChecksum: Bool = false, _ edit: (inout [UInt8]) -> Void) -> [UInt8] {
    var bytes = bytes
    edit(&bytes)
    if fixChecksum { recomputeIPv4HeaderChecksum(in: &bytes) }
    return bytes
}

private let v4TCP = PacketBuilder.tcp("192.0.2.1", 40000, "198.51.100.10", 80, flags: TCPFlags.syn)
private let v4UDP = PacketBuilder.udp("192.0.2.1", 5353, "198.51.100.10", 53, payload: Array("query".utf8))
private let v6TCP = PacketBuilder.tcp("2001:db8::1", 40000, "2001:db8:ffff::80", 443,
                                      flags: TCPFlags.syn | TCPFlags.ack)
private let v6UDP = PacketBuilder.udp("2001:db8::1", 1234, "2001:db8::53", 53, payload: [1, 2, 3])

/// Valid frames of every shape, with the fields the parser must report.
private let validCases: [ParseCase] = [
    ParseCase("IPv4 TCP SYN", frame(v4TCP), .ok,
              Expected(key: key("192.0.2.1", 40000, "198.51.100.10", 80, tcp), l3Offset: 14, l4Offset: 34,
                       ipPacketLength: 40, tcpFlags: 0x02)),
    ParseCase("IPv4 TCP PSH|ACK with MSS option and payload",
              frame(v4TCP) { $0.tcp.flags = TCPFlags.psh | TCPFlags.ack; $0.tcp.options = [2, 4, 0x05, 0xB4]
                  $0.tcp.payload = Array("hello".utf8) }, .ok,
              Expected(key: key("192.0.2.1", 40000, "198.51.100.10", 80, tcp), l3Offset: 14, l4Offset: 34,
                       ipPacketLength: 20 + 24 + 5, tcpFlags: 0x18)),
    ParseCase("IPv4 TCP FIN|RST|URG and ECE/CWR bits reported as the whole byte",
              frame(v4TCP) { $0.tcp.flags = 0xC0 | TCPFlags.fin | TCPFlags.rst | TCPFlags.urg }, .ok,
              Expected(key: key("192.0.2.1", 40000, "198.51.100.10", 80, tcp), l3Offset: 14, l4Offset: 34,
                       ipPacketLength: 40, tcpFlags: 0xE5)),
    ParseCase("IPv4 UDP", frame(v4UDP), .ok,
              Expected(key: key("192.0.2.1", 5353, "198.51.100.10", 53, udp), l3Offset: 14, l4Offset: 34,
                       ipPacketLength: 33, tcpFlags: 0)),
    ParseCase("IPv4 UDP without DF, empty payload, checksum 0", edited(frame(v4UDP) {
                  $0.ipv4.dontFragment = false; $0.udp.payload = [] }) { $0.writeUInt16(0, at: 40) }, .ok,
              Expected(key: key("192.0.2.1", 5353, "198.51.100.10", 53, udp), l3Offset: 14, l4Offset: 34,
                       ipPacketLength: 28, tcpFlags: 0)),
    ParseCase("IPv4 with 8 bytes of options (record route + NOP)",
              frame(v4UDP) { $0.ipv4.options = [7, 7, 4, 0, 0, 0, 0, 1] }, .ok,
              Expected(key: key("192.0.2.1", 5353, "198.51.100.10", 53, udp), l3Offset: 14, l4Offset: 42,
                       ipPacketLength: 41, tcpFlags: 0)),
    ParseCase("IPv4 with 40 bytes of options (IHL 15)",
              frame(v4TCP) { $0.ipv4.options = [UInt8](repeating: 1, count: 40) }, .ok,
              Expected(key: key("192.0.2.1", 40000, "198.51.100.10", 80, tcp), l3Offset: 14, l4Offset: 74,
                       ipPacketLength: 80, tcpFlags: 0x02)),
    ParseCase("IPv6 TCP", frame(v6TCP), .ok,
              Expected(key: key("2001:db8::1", 40000, "2001:db8:ffff::80", 443, tcp), l3Offset: 14, l4Offset: 54,
                       ipPacketLength: 60, tcpFlags: 0x12)),
    ParseCase("IPv6 UDP", frame(v6UDP), .ok,
              Expected(key: key("2001:db8::1", 1234, "2001:db8::53", 53, udp), l3Offset: 14, l4Offset: 54,
                       ipPacketLength: 51, tcpFlags: 0)),
    ParseCase("VLAN-tagged IPv4 TCP", frame(v4TCP) { $0.vlanTCI = 0x2064 }, .ok,
              Expected(key: key("192.0.2.1", 40000, "198.51.100.10", 80, tcp), l3Offset: 18, l4Offset: 38,
                       ipPacketLength: 40, tcpFlags: 0x02)),
    ParseCase("VLAN-tagged IPv4 UDP with options", frame(v4UDP) { $0.vlanTCI = 7; $0.ipv4.options = [1, 1, 1, 1] },
              .ok, Expected(key: key("192.0.2.1", 5353, "198.51.100.10", 53, udp), l3Offset: 18, l4Offset: 42,
                            ipPacketLength: 37, tcpFlags: 0)),
    ParseCase("VLAN-tagged IPv6 UDP", frame(v6UDP) { $0.vlanTCI = 4094 }, .ok,
              Expected(key: key("2001:db8::1", 1234, "2001:db8::53", 53, udp), l3Offset: 18, l4Offset: 58,
                       ipPacketLength: 51, tcpFlags: 0)),
    ParseCase("IPv4 TCP SYN padded to the 60-byte Ethernet minimum",
              frame(v4TCP) { $0.trailer = [UInt8](repeating: 0, count: 6) }, .ok,
              Expected(key: key("192.0.2.1", 40000, "198.51.100.10", 80, tcp), l3Offset: 14, l4Offset: 34,
                       ipPacketLength: 40, tcpFlags: 0x02)),
    ParseCase("IPv6 UDP with a non-zero trailer after the packet",
              frame(v6UDP) { $0.trailer = [0xde, 0xad, 0xbe, 0xef] }, .ok,
              Expected(key: key("2001:db8::1", 1234, "2001:db8::53", 53, udp), l3Offset: 14, l4Offset: 54,
                       ipPacketLength: 51, tcpFlags: 0)),
    ParseCase("IPv4 UDP whose UDP length is shorter than the IP payload",
              edited(frame(v4UDP)) { $0.writeUInt16(9, at: 38); recomputeL4Checksum(in: &$0) }, .ok,
              Expected(key: key("192.0.2.1", 5353, "198.51.100.10", 53, udp), l3Offset: 14, l4Offset: 34,
                       ipPacketLength: 33, tcpFlags: 0)),
]

/// Frames that must be refused, one per reason.
private let invalidCases: [ParseCase] = [
    ParseCase("empty frame", [], .truncated),
    ParseCase("13 bytes", [UInt8](repeating: 0, count: 13), .truncated),
    ParseCase("VLAN tag cut short", Array(frame(v4TCP) { $0.vlanTCI = 1 }.prefix(17)), .truncated),
    ParseCase("ARP", PacketBuilder(network: .other(etherType: EtherType.arp, payload: [UInt8](repeating: 0, count: 28)),
                                   transport: .other(proto: 0, payload: [])).build(), .notIP),
    ParseCase("ARP behind a VLAN tag",
              frame(PacketBuilder(network: .other(etherType: EtherType.arp, payload: [UInt8](repeating: 0, count: 28)),
                                  transport: .other(proto: 0, payload: []))) { $0.vlanTCI = 5 },
              .notIP),
    ParseCase("two VLAN tags (QinQ with 0x8100 inside)", edited(frame(v4TCP) { $0.vlanTCI = 1 }) {
                  $0.insert(contentsOf: [0x81, 0x00, 0x00, 0x02], at: 16) }, .notIP),
    ParseCase("802.1ad S-tag", edited(frame(v4TCP) { $0.vlanTCI = 1 }) { $0.writeUInt16(0x88A8, at: 12) }, .notIP),
    ParseCase("IPv4 ethertype, version 6 in the header", edited(frame(v4TCP), fixChecksum: true) { $0[14] = 0x65 },
              .malformed),
    ParseCase("IPv4 ethertype, version 5", edited(frame(v4TCP), fixChecksum: true) { $0[14] = 0x55 }, .malformed),
    ParseCase("IPv6 ethertype, version 4 in the header", edited(frame(v6TCP)) { $0[14] = 0x40 }, .malformed),
    ParseCase("IPv4 IHL 4", edited(frame(v4TCP)) { $0[14] = 0x44 }, .malformed),
    ParseCase("IPv4 IHL 0", edited(frame(v4TCP)) { $0[14] = 0x40 }, .malformed),
    ParseCase("IPv4 IHL 15 on a 40-byte packet", edited(frame(v4TCP)) { $0[14] = 0x4F }, .truncated),
    ParseCase("IPv4 IHL larger than the total length",
              edited(frame(v4UDP) { $0.udp.payload = []; $0.trailer = [0, 0, 0, 0] }, fixChecksum: true) {
                  $0[14] = 0x48 },
              .malformed),
    ParseCase("IPv4 total length 19 (< header)", edited(frame(v4TCP), fixChecksum: true) { $0.writeUInt16(19, at: 16) },
              .malformed),
    ParseCase("IPv4 total length 0", edited(frame(v4TCP), fixChecksum: true) { $0.writeUInt16(0, at: 16) }, .malformed),
    // ICMP has no TCP/UDP header check behind the IP one to catch this.
    ParseCase("IPv4 ICMP, total length 19 (< header)",
              edited(PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: IPProtocolNumber.icmp,
                                      payload: [3, 4, 0, 0, 0, 0, 0, 0]).build(), fixChecksum: true) {
                  $0.writeUInt16(19, at: 16) },
              .malformed),
    ParseCase("IPv4 total length one byte past the frame",
              edited(frame(v4TCP), fixChecksum: true) { $0.writeUInt16(41, at: 16) }, .truncated),
    ParseCase("IPv4 total length 0xFFFF", edited(frame(v4TCP), fixChecksum: true) { $0.writeUInt16(0xFFFF, at: 16) },
              .truncated),
    ParseCase("IPv4 total length too small for the UDP header",
              edited(frame(v4UDP), fixChecksum: true) { $0.writeUInt16(27, at: 16) }, .malformed),
    ParseCase("IPv4 total length too small for the TCP header",
              edited(frame(v4TCP), fixChecksum: true) { $0.writeUInt16(39, at: 16) }, .malformed),
    ParseCase("IPv4 header checksum off by one", edited(frame(v4TCP)) { $0[25] ^= 0x01 }, .badIPv4Checksum),
    ParseCase("IPv4 TTL changed without a checksum update", edited(frame(v4TCP)) { $0[22] -= 1 }, .badIPv4Checksum),
    ParseCase("IPv4 option byte changed without a checksum update",
              edited(frame(v4UDP) { $0.ipv4.options = [1, 1, 1, 1] }) { $0[35] = 0 }, .badIPv4Checksum),
    ParseCase("IPv4 first fragment (MF)", frame(v4UDP) { $0.ipv4.dontFragment = false; $0.ipv4.moreFragments = true },
              .firstFragment),
    ParseCase("IPv4 last fragment (offset 185)",
              frame(v4UDP) { $0.ipv4.dontFragment = false; $0.ipv4.fragmentOffset = 185 }, .fragment),
    ParseCase("IPv4 middle fragment (MF, offset 1)",
              frame(v4TCP) { $0.ipv4.moreFragments = true; $0.ipv4.fragmentOffset = 1 }, .fragment),
    ParseCase("IPv4 fragment offset 0x1FFF",
              frame(v4TCP) { $0.ipv4.dontFragment = false; $0.ipv4.fragmentOffset = 0x1FFF }, .fragment),
    ParseCase("IPv4 later fragment of ICMP",
              frame(PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: IPProtocolNumber.icmp, payload: [0, 0, 0, 0])) {
                  $0.ipv4.dontFragment = false; $0.ipv4.fragmentOffset = 3 }, .unsupportedProtocol),
    ParseCase("IPv4 first fragment too short for the TCP header (RFC 1858)",
              v4TCP.fragments(dataPerFragment: 8, identification: 7)[0], .malformed),
    ParseCase("IPv6 first fragment of UDP",
              PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPv6NextHeader.fragment,
                               payload: [17, 0, 0, 1, 0, 0, 0, 42] + [0x04, 0xd2, 0, 53, 0, 200, 0, 0]).build(),
              .firstFragment),
    ParseCase("IPv6 later fragment of UDP",
              PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPv6NextHeader.fragment,
                               payload: [17, 0, 0, 8, 0, 0, 0, 42] + [UInt8](repeating: 0, count: 16)).build(),
              .fragment),
    ParseCase("IPv6 fragment of ICMPv6",
              PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPv6NextHeader.fragment,
                               payload: [58, 0, 0, 1, 0, 0, 0, 42] + [128, 0, 0, 0, 0, 0, 0, 0]).build(),
              .unsupportedProtocol),
    ParseCase("IPv6 fragment header cut short",
              PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPv6NextHeader.fragment,
                               payload: [17, 0, 0, 1]).build(), .malformed),
    ParseCase("ICMP echo", PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: IPProtocolNumber.icmp,
                                            payload: [8, 0, 0xf7, 0xff, 0, 0, 0, 0]).build(), .unsupportedProtocol),
    ParseCase("ICMPv6 echo", PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPProtocolNumber.icmpv6,
                                              payload: [128, 0, 0, 0, 0, 0, 0, 0]).build(), .unsupportedProtocol),
    ParseCase("GRE over IPv4", PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: 47, payload: [0, 0, 8, 0]).build(),
              .unsupportedProtocol),
    ParseCase("IPv6 hop-by-hop header before TCP",
              PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPv6NextHeader.hopByHop,
                               payload: [6, 0, 1, 4, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 20)).build(),
              .unsupportedProtocol),
    ParseCase("IPv6 routing header before UDP",
              PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPv6NextHeader.routing,
                               payload: [17, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 8)).build(),
              .unsupportedProtocol),
    ParseCase("IPv6 payload length one byte past the frame", edited(frame(v6TCP)) { $0.writeUInt16(21, at: 18) },
              .truncated),
    ParseCase("IPv6 payload length too small for the TCP header", edited(frame(v6TCP)) { $0.writeUInt16(19, at: 18) },
              .malformed),
    ParseCase("IPv6 payload length 0 with UDP", edited(frame(v6UDP)) { $0.writeUInt16(0, at: 18) }, .malformed),
    ParseCase("TCP data offset 4", edited(frame(v4TCP)) { $0[46] = 0x40 }, .malformed),
    ParseCase("TCP data offset 0", edited(frame(v6TCP)) { $0[66] = 0x00 }, .malformed),
    ParseCase("TCP data offset 6 on a 20-byte segment", edited(frame(v4TCP)) { $0[46] = 0x60 }, .malformed),
    ParseCase("TCP segment of 10 bytes",
              PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: IPProtocolNumber.tcp,
                               payload: [UInt8](repeating: 0x50, count: 10)).build(), .malformed),
    ParseCase("UDP segment of 7 bytes", PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPProtocolNumber.udp,
                                                         payload: [0, 1, 0, 2, 0, 7, 0]).build(), .malformed),
    ParseCase("UDP length 7", edited(frame(v4UDP)) { $0.writeUInt16(7, at: 38) }, .malformed),
    ParseCase("UDP length past the IP payload", edited(frame(v6UDP)) { $0.writeUInt16(12, at: 58) }, .malformed),
]

final class FrameParserTests: XCTestCase {
    func testValidFrames() {
        for testCase in validCases {
            check(testCase)
        }
    }

    func testInvalidFrames() {
        for testCase in invalidCases { check(testCase) }
    }

    /// Every status has at least one fixture.
    func testEveryStatusIsCovered() {
        let covered = Set((validCases + invalidCases).map(\.status))
        XCTAssertEqual(covered, Set(ParseStatus.allCases))
    }

    /// The fixtures are what they claim to be, by the independent checker.
    func testValidFixturesHaveCorrectChecksums() {
        for testCase in validCases {
            let layout = FrameLayout(testCase.frame)
            XCTAssertNotNil(layout, testCase.description)
            if layout?.family == 4 {
                XCTAssertTrue(verifyIPv4HeaderChecksum(testCase.frame), testCase.description)
            }
            XCTAssertTrue(verifyL4Checksum(testCase.frame), testCase.description)
        }
    }

    /// Every strict prefix of a valid, unpadded frame is `.truncated`: each header boundary (Ethernet, VLAN,
    /// IP, IP options, L4, payload) is crossed by some prefix. Buffers are exactly the prefix's length.
    func testEveryPrefixIsTruncated() {
        let frames = [
            frame(v4TCP), frame(v4UDP), frame(v6TCP), frame(v6UDP),
            frame(v4TCP) { $0.vlanTCI = 10; $0.ipv4.options = [1, 1, 1, 1, 1, 1, 1, 1]; $0.tcp.options = [1, 1, 1, 1] },
            frame(v6UDP) { $0.vlanTCI = 10 },
            frame(v4TCP) { $0.ipv4.moreFragments = true },
            PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPProtocolNumber.icmpv6,
                             payload: [128, 0, 0, 0]).build(),
        ]
        for full in frames {
            for length in 0..<full.count {
                let (status, _) = parse(Array(full.prefix(length)))
                XCTAssertEqual(status, .truncated, "prefix \(length) of\n\(HexDump.format(full))")
            }
            XCTAssertNotEqual(parse(full).0, .truncated)
        }
    }

    /// Prefixes of a padded frame that still hold the whole IP packet parse as the whole frame does.
    func testPaddingMayBeCutAnywhere() {
        let full = frame(v4TCP) { $0.trailer = [UInt8](repeating: 0, count: 10) }
        for length in 54...full.count {
            let (status, parsed) = parse(Array(full.prefix(length)))
            XCTAssertEqual(status, .ok)
            XCTAssertEqual(parsed.ipPacketLength, 40)
        }
    }

    /// Random corruption of valid frames never traps, never reads out of bounds (exact-size buffers), and
    /// whatever is `.ok` is self-consistent and agrees with the independent layout.
    func testCorruptedFramesNeverTrap() {
        var random = SeededGenerator(seed: 0x5EED_0001)
        let seeds = validCases.map(\.frame)
        var statuses: [ParseStatus: Int] = [:]
        for _ in 0..<4000 {
            var bytes = seeds.randomElement(using: &random)!
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                // Mostly header bytes, where the decisions are.
                let index = Int.random(in: 0..<min(bytes.count, 80), using: &random)
                bytes[index] = UInt8.random(in: 0...255, using: &random)
            }
            if Bool.random(using: &random) {
                bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &random)))
            }
            let (status, parsed) = parse(bytes)
            statuses[status, default: 0] += 1
            guard status == .ok else { continue }
            XCTAssertLessThanOrEqual(parsed.l3Offset + parsed.ipPacketLength, bytes.count)
            XCTAssertGreaterThanOrEqual(parsed.l4Length, parsed.key.proto == tcp ? 20 : 8)
            let layout = FrameLayout(bytes)
            XCTAssertEqual(layout?.l4Offset, parsed.l4Offset)
            XCTAssertEqual(layout?.ipPacketLength, parsed.ipPacketLength)
            XCTAssertEqual(layout?.proto, parsed.key.proto)
            if layout?.family == 4 { XCTAssertTrue(verifyIPv4HeaderChecksum(bytes)) }
        }
        // The corruption reached the interesting outcomes.
        for status in [ParseStatus.ok, .truncated, .notIP, .malformed, .badIPv4Checksum, .unsupportedProtocol] {
            XCTAssertGreaterThan(statuses[status] ?? 0, 0, "\(status) never produced")
        }
    }

    /// Random bytes, any length: no trap.
    func testRandomBytesNeverTrap() {
        var random = SeededGenerator(seed: 0x5EED_0002)
        for _ in 0..<2000 {
            var bytes = random.bytes(Int.random(in: 0...120, using: &random))
            if bytes.count >= 14 && Bool.random(using: &random) {
                bytes.writeUInt16(Bool.random(using: &random) ? EtherType.ipv4 : EtherType.ipv6, at: 12)
            }
            _ = parse(bytes)
        }
    }

    /// A UDP datagram fragmented as a kernel does (IPv4 and IPv6): the first fragment has the ports and the
    /// datagram's UDP length (longer than the fragment), the others only addresses, protocol and the
    /// identification; offsets say where each fragment's data starts.
    func testFragmentsReportTheirDatagram() {
        let payload = [UInt8](repeating: 0xab, count: 3000)
        for (builder, id, l4, isIPv4) in [
            (PacketBuilder.udp("192.0.2.1", 5353, "198.51.100.10", 53, payload: payload), UInt32(0x1234), 34, true),
            (PacketBuilder.udp("2001:db8::1", 1234, "2001:db8::53", 53, payload: payload), 0xdead_beef, 62, false),
        ] {
            let pieces = builder.fragments(dataPerFragment: 1480, identification: id)
            XCTAssertEqual(pieces.count, 3)
            var parsed = ParsedFrame()
            for (index, piece) in pieces.enumerated() {
                let status = withExactBuffer(piece) { FrameParser.parse(UnsafeRawPointer($0), length: $1, into: &parsed) }.0
                XCTAssertEqual(status, index == 0 ? .firstFragment : .fragment, "fragment \(index)")
                XCTAssertEqual(parsed.fragmentID, isIPv4 ? id & 0xFFFF : id)
                XCTAssertEqual(parsed.l4Offset, l4)
                XCTAssertEqual(parsed.ipPacketLength, piece.count - 14)
                XCTAssertEqual(parsed.key.proto, udp)
                XCTAssertEqual(parsed.key.srcPort, index == 0 ? builder.udp.sourcePort : 0)
                XCTAssertEqual(parsed.key.dstPort, index == 0 ? 53 : 0)
                XCTAssertEqual(parsed.key.destination, isIPv4 ? builder.ipv4.destination : builder.ipv6.destination)
                XCTAssertEqual(parsed.isIPv4, isIPv4)
            }
        }
        // An IPv6 atomic fragment (offset 0, M clear) is a whole packet.
        let atomic = PacketBuilder.ip("2001:db8::1", "2001:db8::53", proto: IPv6NextHeader.fragment,
                                      payload: [17, 0, 0, 0, 0, 0, 0, 9] + [0x04, 0xd2, 0, 53, 0, 8, 0, 0]).build()
        var parsed = ParsedFrame()
        XCTAssertEqual(withExactBuffer(atomic) { FrameParser.parse(UnsafeRawPointer($0), length: $1, into: &parsed) }.0, .ok)
        XCTAssertEqual(parsed.key, key("2001:db8::1", 1234, "2001:db8::53", 53, udp))
        XCTAssertEqual(parsed.l4Offset, 62)
    }

    /// Rewrites take the parse by value: at 128 bytes the copy is inline, larger ones become memcpy calls.
    func testParsedFrameStaysSmall() {
        XCTAssertLessThanOrEqual(MemoryLayout<ParsedFrame>.size, 128)
    }

    /// The parser does not depend on the struct's previous contents: after an IPv6 TCP frame with a VLAN
    /// tag (every field non-zero), an IPv4 UDP frame reports exactly its own fields (the high address
    /// halves zero, no TCP flags), and after that, an IPv6 UDP frame its own.
    func testParseOverwritesEveryField() {
        var parsed = ParsedFrame()
        func parseInto(_ bytes: [UInt8]) -> ParseStatus {
            withExactBuffer(bytes) { FrameParser.parse(UnsafeRawPointer($0), length: $1, into: &parsed) }.0
        }
        XCTAssertEqual(parseInto(frame(v6TCP) { $0.vlanTCI = 3 }), .ok)
        XCTAssertEqual(parseInto(frame(v4UDP)), .ok)
        XCTAssertEqual(parsed.key, key("192.0.2.1", 5353, "198.51.100.10", 53, udp))
        XCTAssertEqual([parsed.l3Offset, parsed.l4Offset, parsed.ipPacketLength], [14, 34, 33])
        XCTAssertEqual(parsed.tcpFlags, 0)
        XCTAssertFalse(parsed.isICMPError)
        XCTAssertEqual(parseInto(frame(v6UDP)), .ok)
        XCTAssertEqual(parsed.key, key("2001:db8::1", 1234, "2001:db8::53", 53, udp))
        XCTAssertEqual([parsed.l3Offset, parsed.l4Offset, parsed.ipPacketLength], [14, 54, 51])
    }

    private func check(_ testCase: ParseCase, file: StaticString = #filePath, line: UInt = #line) {
        var parsed = ParsedFrame()
        // The parser must leave the bytes alone: the fixture's expected output is its input.
        let fixture = FrameFixture(testCase.description, input: testCase.frame, expected: testCase.status)
        assertFixture(fixture, file: file, line: line) { pointer, length in
            FrameParser.parse(UnsafeRawPointer(pointer), length: length, into: &parsed)
        }
        guard let expected = testCase.expected else { return }
        XCTAssertEqual(parsed.key, expected.key, "\(testCase.description): key", file: file, line: line)
        XCTAssertEqual(parsed.key.source.description, expected.key.source.description, testCase.description)
        XCTAssertEqual(parsed.l3Offset, expected.l3Offset, "\(testCase.description): l3Offset", file: file, line: line)
        XCTAssertEqual(parsed.l4Offset, expected.l4Offset, "\(testCase.description): l4Offset", file: file, line: line)
        XCTAssertEqual(parsed.ipPacketLength, expected.ipPacketLength, "\(testCase.description): ipPacketLength",
                       file: file, line: line)
        XCTAssertEqual(parsed.tcpFlags, expected.tcpFlags, "\(testCase.description): tcpFlags", file: file, line: line)
        XCTAssertEqual(parsed.isIPv4, expected.key.family == 4, testCase.description, file: file, line: line)
    }
}

/// `ipv4HeaderIsValid` (a 20-byte header summed straight, longer ones by the general sum) against the
/// reference checksum, over random headers with and without options, sound and corrupted.
final class IPv4HeaderChecksumTests: XCTestCase {
    func testAgreesWithTheReferenceChecksum() {
        var random = SeededGenerator(seed: 0x1F4)
        for round in 0..<4000 {
            let length = round % 3 == 0 ? 24 + 4 * Int.random(in: 0...9, using: &random) : 20
            var header = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            header[0] = 0x40 | UInt8(length / 4)
            header[10] = 0; header[11] = 0
            let checksum = ReferenceChecksum.checksum(header)
            header[10] = UInt8(checksum >> 8); header[11] = UInt8(checksum & 0xFF)
            if round % 2 == 1 {
                let bit = Int.random(in: 0..<(8 * length), using: &random)
                header[bit / 8] ^= 1 << UInt8(bit % 8)
            }
            let frame = [UInt8](repeating: 0, count: 14) + header
            var parsed = ParsedFrame()
            parsed.key.family = 4
            parsed.l3Offset = 14
            parsed.l4Offset = 14 + length
            let expected = ReferenceChecksum.onesComplementSum(header) == 0xFFFF
            XCTAssertEqual(frame.withUnsafeBytes { FrameParser.ipv4HeaderIsValid($0.baseAddress!, parsed: parsed) },
                           expected, "round \(round), \(length)-byte header")
        }
    }
}
