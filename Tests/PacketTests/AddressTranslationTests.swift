import Packet
import XCTest
import XDirectorTestSupport

private let routerMAC = MACAddress("02:00:00:00:00:01")!
private let directorMAC = MACAddress("02:00:00:00:00:02")!
private let interfaceMAC = MACAddress("02:aa:bb:cc:dd:01")!
private let nextHopMAC = MACAddress("0e:11:22:33:44:55")!

private func endpoint(_ address: String, _ port: UInt16) -> L4Endpoint {
    L4Endpoint(address: IPAddress(address)!, port: port)
}

/// The builder's packet with the translation applied by the builder itself (checksums computed in full):
/// what the incremental rewrite must produce byte for byte.
private func translated(_ builder: PacketBuilder, source: L4Endpoint?, destination: L4Endpoint?) -> PacketBuilder {
    var out = builder
    out.source = interfaceMAC
    out.destination = nextHopMAC
    switch out.network {
    case .ipv4(var ip):
        ip.ttl -= 1
        if let source { ip.source = source.address }
        if let destination { ip.destination = destination.address }
        out.network = .ipv4(ip)
    case .ipv6(var ip):
        ip.hopLimit -= 1
        if let source { ip.source = source.address }
        if let destination { ip.destination = destination.address }
        out.network = .ipv6(ip)
    case .other:
        break
    }
    switch out.transport {
    case .tcp(var tcp):
        if let source { tcp.sourcePort = source.port }
        if let destination { tcp.destinationPort = destination.port }
        out.transport = .tcp(tcp)
    case .udp(var udp):
        if let source { udp.sourcePort = source.port }
        if let destination { udp.destinationPort = destination.port }
        out.transport = .udp(udp)
    default:
        break
    }
    return out
}

private func arriving(_ builder: PacketBuilder) -> PacketBuilder {
    with(builder) { $0.source = routerMAC; $0.destination = directorMAC }
}

private func fixture(_ description: String, _ builder: PacketBuilder, source: L4Endpoint?,
                     destination: L4Endpoint?) -> FrameFixture<TranslationResult> {
    FrameFixture(description, input: arriving(builder).build(), expected: .transmit,
                 expectedOutput: translated(arriving(builder), source: source, destination: destination).build())
}

private func rewrite(_ source: L4Endpoint?, _ destination: L4Endpoint?)
    -> (UnsafeMutableRawPointer, Int) -> TranslationResult {
    { frame, length in
        var parsed = ParsedFrame()
        guard FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &parsed) == .ok else {
            XCTFail("fixture input does not parse")
            return .hopLimitExceeded
        }
        return AddressTranslation.rewrite(frame, parsed: parsed, source: source, destination: destination,
                                          sourceMAC: interfaceMAC, destinationMAC: nextHopMAC)
    }
}

private let v4TCP = PacketBuilder.tcp("192.0.2.1", 40000, "198.51.100.10", 80, payload: Array("GET /\r\n".utf8))
private let v4UDP = PacketBuilder.udp("192.0.2.1", 5353, "198.51.100.10", 53, payload: [1, 2, 3, 4, 5])
private let v6TCP = PacketBuilder.tcp("2001:db8::1", 40000, "2001:db8::80", 443, flags: TCPFlags.syn)
private let v6UDP = PacketBuilder.udp("2001:db8::1", 1234, "2001:db8::53", 53, payload: Array("odd".utf8))

final class AddressTranslationTests: XCTestCase {
    /// NAT in (destination: VIP → real server), NAT out (source: real server → VIP), FULLNAT (both).
    func testNATAndFullNAT() {
        let real4 = endpoint("10.0.0.5", 8080), vip4 = endpoint("198.51.100.10", 80)
        let local4 = endpoint("10.0.0.1", 61000), client4 = endpoint("192.0.2.1", 40000)
        let real6 = endpoint("fd00::5", 8443), vip6 = endpoint("2001:db8::80", 443)
        let local6 = endpoint("fd00::1", 61001), client6 = endpoint("2001:db8::1", 40000)
        let replyV4 = PacketBuilder.tcp("10.0.0.5", 8080, "192.0.2.1", 40000, flags: TCPFlags.syn | TCPFlags.ack)
        let replyV6 = PacketBuilder.udp("fd00::5", 8443, "2001:db8::1", 1234, payload: [7])
        let fullNATReply = PacketBuilder.tcp("10.0.0.5", 8080, "10.0.0.1", 61000, payload: [1, 2, 3])
        let cases: [(FrameFixture<TranslationResult>, L4Endpoint?, L4Endpoint?)] = [
            (fixture("v4 TCP in", v4TCP, source: nil, destination: real4), nil, real4),
            (fixture("v4 UDP in", v4UDP, source: nil, destination: endpoint("10.0.0.6", 53)), nil,
             endpoint("10.0.0.6", 53)),
            (fixture("v4 TCP out", replyV4, source: vip4, destination: nil), vip4, nil),
            (fixture("v4 UDP out, VLAN", with(PacketBuilder.udp("10.0.0.6", 53, "192.0.2.1", 5353, payload: [1]))
                { $0.vlanTCI = 12 }, source: endpoint("198.51.100.10", 53), destination: nil),
             endpoint("198.51.100.10", 53), nil),
            (fixture("v4 TCP in with IP options", with(v4TCP) { $0.ipv4.options = [1, 1, 1, 1] },
                     source: nil, destination: real4), nil, real4),
            (fixture("v6 TCP in", v6TCP, source: nil, destination: real6), nil, real6),
            (fixture("v6 UDP in", v6UDP, source: nil, destination: endpoint("fd00::53", 5353)), nil,
             endpoint("fd00::53", 5353)),
            (fixture("v6 UDP out, VLAN", with(replyV6) { $0.vlanTCI = 99 }, source: vip6, destination: nil), vip6, nil),
            (fixture("v4 FULLNAT in", v4TCP, source: local4, destination: real4), local4, real4),
            (fixture("v4 FULLNAT out", fullNATReply, source: vip4, destination: client4), vip4, client4),
            (fixture("v6 FULLNAT in", v6TCP, source: local6, destination: real6), local6, real6),
            (fixture("v6 FULLNAT out UDP", PacketBuilder.udp("fd00::5", 8443, "fd00::1", 61001, payload: [1, 2]),
                     source: vip6, destination: client6), vip6, client6),
            (fixture("nothing but TTL and MACs", v4UDP, source: nil, destination: nil), nil, nil),
            (fixture("v4 TTL 2", with(v4TCP) { $0.ipv4.ttl = 2 }, source: nil, destination: real4), nil, real4),
        ]
        for (fixture, source, destination) in cases {
            assertFixture(fixture, rewrite(source, destination))
            let (_, output) = fixture.run(rewrite(source, destination))
            if FrameLayout(output)?.family == 4 { XCTAssertTrue(verifyIPv4HeaderChecksum(output), fixture.description) }
            XCTAssertTrue(verifyL4Checksum(output), fixture.description)
        }
    }

    func testHopLimitExceededLeavesFrameAlone() {
        let real = endpoint("10.0.0.5", 8080)
        for builder in [with(v4TCP) { $0.ipv4.ttl = 1 }, with(v4UDP) { $0.ipv4.ttl = 0 },
                        with(v6TCP) { $0.ipv6.hopLimit = 1 }] {
            let destination = builder.ipv4OrNil == nil ? endpoint("fd00::5", 1) : real
            assertFixture(FrameFixture("expired", input: arriving(builder).build(), expected: .hopLimitExceeded),
                          rewrite(nil, destination))
        }
    }

    /// An IPv4 UDP checksum of 0 ("none") stays 0.
    func testIPv4UDPChecksumZeroStaysZero() {
        var input = arriving(v4UDP).build()
        input.writeUInt16(0, at: 40)
        let destination = endpoint("10.0.0.6", 5300)
        var output = translated(arriving(v4UDP), source: nil, destination: destination).build()
        output.writeUInt16(0, at: 40)
        assertFixture(FrameFixture("UDP checksum 0", input: input, expected: .transmit, expectedOutput: output),
                      rewrite(nil, destination))
    }

    /// A UDP checksum that computes to 0 is sent as 0xFFFF, and a 0xFFFF input is read as that 0. The
    /// 2-byte payload is chosen to make the one's complement sum 0xFFFF before or after the translation.
    func testUDPChecksumComputingToZero() {
        for (base, destination) in [(v4UDP, endpoint("10.0.0.6", 5300)), (v6UDP, endpoint("fd00::53", 5300))] {
            for zeroAfter in [false, true] {
                let probe = with(base) { $0.udp.payload = [0, 0] }
                let probeFrame = zeroAfter ? translated(probe, source: nil, destination: destination).build()
                                           : probe.build()
                let layout = FrameLayout(probeFrame)!
                let word = probeFrame.readUInt16(at: layout.l4Offset + 6)
                let builder = with(base) { $0.udp.payload = bigEndianBytes(word) }
                let fixture = fixture("UDP 0xFFFF \(zeroAfter ? "after" : "before")", builder, source: nil,
                                      destination: destination)
                XCTAssertEqual((zeroAfter ? fixture.expectedOutput : fixture.input).readUInt16(at: layout.l4Offset + 6),
                               0xFFFF)
                assertFixture(fixture, rewrite(nil, destination))
            }
        }
    }

    /// Random translations of random packets agree with full recomputation.
    func testRandomTranslations() {
        var random = SeededGenerator(seed: 0xA7A7)
        for round in 0..<300 {
            let isIPv4 = round % 2 == 0
            func address() -> String {
                isIPv4 ? (0..<4).map { _ in String(UInt8.random(in: 0...255, using: &random)) }.joined(separator: ".")
                    : (0..<8).map { _ in String(UInt16.random(in: 0...0xFFFF, using: &random), radix: 16) }
                    .joined(separator: ":")
            }
            let port = { UInt16.random(in: 0...0xFFFF, using: &random) }
            let payload = random.bytes(Int.random(in: 0...9, using: &random))
            var builder = round % 4 < 2
                ? PacketBuilder.tcp(address(), port(), address(), port(), payload: payload)
                : PacketBuilder.udp(address(), port(), address(), port(), payload: payload)
            if isIPv4 { builder.ipv4.identification = port() } else { builder.ipv6.flowLabel = UInt32(port()) }
            let source = Bool.random(using: &random) ? L4Endpoint(address: IPAddress(address())!, port: port()) : nil
            let destination = Bool.random(using: &random) ? L4Endpoint(address: IPAddress(address())!, port: port())
                                                          : nil
            assertFixture(fixture("random \(round)", builder, source: source, destination: destination),
                          rewrite(source, destination))
        }
    }
}

private extension PacketBuilder {
    var ipv4OrNil: IPv4? {
        if case .ipv4(let ip) = network { return ip }
        return nil
    }
}
