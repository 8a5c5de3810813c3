import Packet
import XCTest
import XDirectorTestSupport

/// A reply from the virtual service to a client, as the director sent it (NAT), and the same for IPv6.
private let v4Reply = PacketBuilder.tcp("198.51.100.10", 80, "192.0.2.1", 40000, payload: Array("response".utf8))
private let v4UDPReply = PacketBuilder.udp("198.51.100.10", 53, "192.0.2.1", 5353, payload: [1, 2, 3, 4, 5, 6, 7, 8])
private let v6Reply = PacketBuilder.tcp("2001:db8::80", 443, "2001:db8::1", 40000, payload: [9, 9, 9])
private let v6UDPReply = PacketBuilder.udp("2001:db8::53", 53, "2001:db8::1", 1234, payload: [1, 2, 3])

private func v4Error(type: UInt8 = 3, code: UInt8 = 4, quoting: PacketBuilder = v4Reply,
                     quoteLength: Int? = nil) -> PacketBuilder {
    PacketBuilder.icmpError("203.0.113.1", "198.51.100.10", type: type, code: code, rest: 1400, quoting: quoting,
                            quoteLength: quoteLength)
}

private func v6Error(type: UInt8 = 2, code: UInt8 = 0, quoting: PacketBuilder = v6Reply,
                     quoteLength: Int? = nil) -> PacketBuilder {
    PacketBuilder.icmpError("2001:db8:ff::1", "2001:db8::80", type: type, code: code, rest: 1280, quoting: quoting,
                            quoteLength: quoteLength)
}

private func key(_ source: String, _ sourcePort: UInt16, _ destination: String, _ destinationPort: UInt16,
                 _ proto: UInt8) -> FlowKey {
    FlowKey(source: IPAddress(source)!, sourcePort: sourcePort, destination: IPAddress(destination)!,
            destinationPort: destinationPort, proto: proto)
}

final class ICMPErrorParserTests: XCTestCase {
    /// Every field of an error's parse, into a struct that first held a TCP frame's (ports, flags), so
    /// that what the error must reset is seen to be reset.
    func testErrorFields() {
        struct Case {
            var frame: [UInt8]
            var key: FlowKey
            var innerKey: FlowKey
            var type: UInt8
            var code: UInt8
            /// l3Offset, l4Offset, innerL3Offset, innerL4Offset, ipPacketLength.
            var offsets: [Int]
        }
        let cases = [
            Case(frame: v4Error().build(), key: key("203.0.113.1", 0, "198.51.100.10", 0, IPProtocolNumber.icmp),
                 innerKey: key("198.51.100.10", 80, "192.0.2.1", 40000, IPProtocolNumber.tcp), type: 3, code: 4,
                 offsets: [14, 34, 42, 62, 20 + 8 + 48]),
            Case(frame: with(v6Error(type: 1, code: 3)) { $0.vlanTCI = 7 }.build(),
                 key: key("2001:db8:ff::1", 0, "2001:db8::80", 0, IPProtocolNumber.icmpv6),
                 innerKey: key("2001:db8::80", 443, "2001:db8::1", 40000, IPProtocolNumber.tcp), type: 1, code: 3,
                 offsets: [18, 58, 66, 106, 40 + 8 + 63]),
        ]
        for testCase in cases {
            XCTAssertTrue(verifyICMPChecksum(testCase.frame))
            var parsed = ParsedFrame()
            _ = withExactBuffer(v4Reply.build()) { FrameParser.parse(UnsafeRawPointer($0), length: $1, into: &parsed) }
            XCTAssertNotEqual(parsed.tcpFlags, 0)
            let (status, _) = withExactBuffer(testCase.frame) {
                FrameParser.parse(UnsafeRawPointer($0), length: $1, into: &parsed)
            }
            XCTAssertEqual(status, .ok)
            XCTAssertTrue(parsed.isICMPError)
            XCTAssertEqual(parsed.key, testCase.key)
            XCTAssertEqual(parsed.innerKey, testCase.innerKey)
            XCTAssertEqual(parsed.icmpType, testCase.type)
            XCTAssertEqual(parsed.icmpCode, testCase.code)
            XCTAssertEqual([parsed.l3Offset, parsed.l4Offset, parsed.innerL3Offset, parsed.innerL4Offset,
                            parsed.ipPacketLength], testCase.offsets)
            XCTAssertEqual(parsed.tcpFlags, 0)
        }
    }

    /// Every error type, TCP and UDP, options in the quoted header, the minimal quote (header + 8 bytes).
    func testErrorVariantsParse() {
        let quotedWithOptions = with(v4UDPReply) { $0.ipv4.options = [1, 1, 1, 1] }
        let cases: [(String, PacketBuilder, FlowKey, Int)] = [
            ("v4 time exceeded", v4Error(type: 11, code: 0), key("198.51.100.10", 80, "192.0.2.1", 40000, 6), 62),
            ("v4 parameter problem", v4Error(type: 12, code: 0), key("198.51.100.10", 80, "192.0.2.1", 40000, 6), 62),
            ("v4 port unreachable, UDP", v4Error(type: 3, code: 3, quoting: v4UDPReply),
             key("198.51.100.10", 53, "192.0.2.1", 5353, 17), 62),
            ("v4 quote with options", v4Error(quoting: quotedWithOptions),
             key("198.51.100.10", 53, "192.0.2.1", 5353, 17), 66),
            ("v4 minimal quote", v4Error(quoteLength: 28), key("198.51.100.10", 80, "192.0.2.1", 40000, 6), 62),
            ("v4 quote of a first fragment", v4Error(quoting: with(v4UDPReply) { $0.ipv4.moreFragments = true }),
             key("198.51.100.10", 53, "192.0.2.1", 5353, 17), 62),
            ("v6 packet too big", v6Error(), key("2001:db8::80", 443, "2001:db8::1", 40000, 6), 102),
            ("v6 time exceeded UDP", v6Error(type: 3, quoting: v6UDPReply), key("2001:db8::53", 53, "2001:db8::1", 1234, 17),
             102),
            ("v6 parameter problem", v6Error(type: 4, code: 1), key("2001:db8::80", 443, "2001:db8::1", 40000, 6), 102),
            ("v6 minimal quote", v6Error(quoteLength: 48), key("2001:db8::80", 443, "2001:db8::1", 40000, 6), 102),
            ("v4 error padded", with(v4Error(quoteLength: 28)) { $0.trailer = [0, 0, 0, 0] },
             key("198.51.100.10", 80, "192.0.2.1", 40000, 6), 62),
        ]
        for (name, builder, innerKey, innerL4) in cases {
            let (status, parsed) = parse(builder.build())
            XCTAssertEqual(status, .ok, name)
            XCTAssertTrue(parsed.isICMPError, name)
            XCTAssertEqual(parsed.innerKey, innerKey, name)
            XCTAssertEqual(parsed.innerL4Offset, innerL4, name)
        }
    }

    func testNonErrorsAndOtherQuotesAreUnsupported() {
        let echo = PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: IPProtocolNumber.icmp,
                                    payload: [8, 0, 0xf7, 0xff, 0, 0, 0, 0])
        let quotedEcho = PacketBuilder.ip("198.51.100.10", "192.0.2.1", proto: IPProtocolNumber.icmp,
                                          payload: [0, 0, 0xff, 0xff, 0, 0, 0, 0])
        let quotedHopByHop = PacketBuilder.ip("2001:db8::80", "2001:db8::1", proto: IPv6NextHeader.hopByHop,
                                              payload: [6, 0, 1, 4, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 20))
        let cases: [(String, PacketBuilder)] = [
            ("v4 echo request", echo),
            ("v4 redirect", v4Error(type: 5, code: 1)),
            ("v4 echo reply type 0", v4Error(type: 0)),
            ("v6 echo request", v6Error(type: 128)),
            ("v6 neighbour solicitation", v6Error(type: 135)),
            ("v4 error quoting ICMP", v4Error(quoting: quotedEcho)),
            ("v4 error quoting ICMP, quote shorter than 8 bytes of data", v4Error(quoting: quotedEcho, quoteLength: 24)),
            ("v4 error quoting a non-first fragment",
             v4Error(quoting: with(v4UDPReply) { $0.ipv4.dontFragment = false; $0.ipv4.fragmentOffset = 3 })),
            ("v6 error quoting an extension header", v6Error(quoting: quotedHopByHop)),
            ("empty ICMP message", PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: IPProtocolNumber.icmp,
                                                    payload: [])),
        ]
        for (name, builder) in cases {
            XCTAssertEqual(parse(builder.build()).0, .unsupportedProtocol, name)
        }
    }

    func testMalformedQuotes() {
        var v4Version = v4Error().build()
        v4Version[42] = 0x65
        var v4IHL = v4Error().build()
        v4IHL[42] = 0x44
        var v6Version = v6Error().build()
        v6Version[62] = 0x40
        for (name, frame) in [("v4 quote version 6", v4Version), ("v4 quote IHL 4", v4IHL),
                              ("v6 quote version 4", v6Version)] {
            XCTAssertEqual(parse(frame).0, .malformed, name)
        }
    }

    /// Quotes cut anywhere before the end of the ports are `.truncated` (the IP lengths are consistent,
    /// the quote is short); so is every prefix of the frame. Buffers are exactly the frame's length.
    func testShortQuotesAndPrefixesAreTruncated() {
        let quoted: [(PacketBuilder, (Int?) -> PacketBuilder, Int)] = [
            (v4Reply, { v4Error(quoteLength: $0) }, 28),
            (v4UDPReply, { v4Error(quoting: with(v4UDPReply) { $0.ipv4.options = [1, 1, 1, 1, 1, 1, 1, 1] },
                                   quoteLength: $0) }, 36),
            (v6Reply, { v6Error(quoteLength: $0) }, 48),
            (v6UDPReply, { v6Error(quoting: v6UDPReply, quoteLength: $0) }, 48),
        ]
        for (_, make, minimum) in quoted {
            for quoteLength in 0..<minimum {
                let frame = make(quoteLength).build()
                XCTAssertEqual(parse(frame).0, .truncated, "quote of \(quoteLength) bytes\n\(HexDump.format(frame))")
            }
            XCTAssertEqual(parse(make(minimum).build()).0, .ok)
            let full = with(make(nil)) { $0.vlanTCI = 3 }.build()
            for length in 0..<full.count {
                XCTAssertEqual(parse(Array(full.prefix(length))).0, .truncated, "prefix \(length)")
            }
            XCTAssertEqual(parse(full).0, .ok)
        }
        // An error type whose message is shorter than the ICMP header.
        let stub = PacketBuilder.ip("192.0.2.1", "198.51.100.10", proto: IPProtocolNumber.icmp, payload: [3, 4, 0, 0])
        XCTAssertEqual(parse(stub.build()).0, .truncated)
    }

    /// Random corruption of errors never traps and reads nothing past the frame (exact-size buffers);
    /// whatever parses as an error has its quote inside the IP packet.
    func testCorruptedErrorsNeverTrap() {
        var random = SeededGenerator(seed: 0x1C4F)
        let seeds = [v4Error().build(), v6Error().build(), v4Error(quoting: v4UDPReply, quoteLength: 30).build(),
                     with(v6Error(quoting: v6UDPReply)) { $0.vlanTCI = 1 }.build()]
        for _ in 0..<3000 {
            var bytes = seeds.randomElement(using: &random)!
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                bytes[Int.random(in: 14..<min(bytes.count, 110), using: &random)] = UInt8.random(in: 0...255,
                                                                                               using: &random)
            }
            if Bool.random(using: &random) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &random))) }
            let (status, parsed) = parse(bytes)
            guard status == .ok, parsed.isICMPError else { continue }
            XCTAssertLessThanOrEqual(parsed.innerL4Offset + 8, parsed.l3Offset + parsed.ipPacketLength)
        }
    }

    /// A TCP parse after an error parse clears `isICMPError`.
    func testErrorFlagDoesNotLeak() {
        var parsed = ParsedFrame()
        _ = withExactBuffer(v4Error().build()) { FrameParser.parse(UnsafeRawPointer($0), length: $1, into: &parsed) }
        XCTAssertTrue(parsed.isICMPError)
        _ = withExactBuffer(v4Reply.build()) { FrameParser.parse(UnsafeRawPointer($0), length: $1, into: &parsed) }
        XCTAssertFalse(parsed.isICMPError)
        XCTAssertEqual(parsed.key.proto, IPProtocolNumber.tcp)
    }
}
