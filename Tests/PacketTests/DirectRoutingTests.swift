import Packet
import XCTest
import XDirectorTestSupport

private let clientRouter = MACAddress("02:00:00:00:00:01")!
private let directorMAC = MACAddress("02:00:00:00:00:02")!
private let interfaceMAC = MACAddress("02:aa:bb:cc:dd:01")!
private let realServerMAC = MACAddress("0e:11:22:33:44:55")!

/// The frame as it arrives at the director (from the router, to the director's MAC) and as it must leave
/// (from the interface, to the real server, one hop less), both built by the independent builder.
private func arrivingAndLeaving(_ builder: PacketBuilder) -> (input: [UInt8], output: [UInt8]) {
    var arriving = builder
    arriving.source = clientRouter
    arriving.destination = directorMAC
    var leaving = builder
    leaving.source = interfaceMAC
    leaving.destination = realServerMAC
    if case .ipv4(var ip) = leaving.network { ip.ttl -= 1; leaving.network = .ipv4(ip) }
    if case .ipv6(var ip) = leaving.network { ip.hopLimit -= 1; leaving.network = .ipv6(ip) }
    return (arriving.build(), leaving.build())
}

private func transmitFixture(_ description: String, _ builder: PacketBuilder) -> FrameFixture<DirectRouting.Verdict> {
    let (input, output) = arrivingAndLeaving(builder)
    return FrameFixture(description, input: input, expected: .transmit, expectedOutput: output)
}

private func exceededFixture(_ description: String, _ builder: PacketBuilder) -> FrameFixture<DirectRouting.Verdict> {
    var arriving = builder
    arriving.source = clientRouter
    arriving.destination = directorMAC
    return FrameFixture(description, input: arriving.build(), expected: .hopLimitExceeded)
}

private let v4TCP = PacketBuilder.tcp("192.0.2.1", 40000, "198.51.100.10", 80, flags: TCPFlags.psh | TCPFlags.ack,
                                      payload: Array("GET / HTTP/1.1\r\n\r\n".utf8))
private let v4UDP = PacketBuilder.udp("192.0.2.1", 5353, "198.51.100.10", 53, payload: [1, 2, 3, 4, 5])
private let v6TCP = PacketBuilder.tcp("2001:db8::1", 40000, "2001:db8::80", 443, flags: TCPFlags.syn)
private let v6UDP = PacketBuilder.udp("2001:db8::1", 1234, "2001:db8::53", 53, payload: Array("odd".utf8))

private let fixtures: [FrameFixture<DirectRouting.Verdict>] = [
    transmitFixture("IPv4 TCP", v4TCP),
    transmitFixture("IPv4 UDP", v4UDP),
    transmitFixture("IPv4 TCP, VLAN tag kept", with(v4TCP) { $0.vlanTCI = 0xE00A }),
    transmitFixture("IPv4 UDP with options, VLAN tag kept",
                    with(v4UDP) { $0.vlanTCI = 42; $0.ipv4.options = [7, 3, 4, 1] }),
    transmitFixture("IPv4 TTL 255", with(v4TCP) { $0.ipv4.ttl = 255 }),
    transmitFixture("IPv4 TTL 2 leaves with 1", with(v4UDP) { $0.ipv4.ttl = 2 }),
    transmitFixture("IPv4 padding kept", with(v4UDP) { $0.udp.payload = []; $0.trailer = [0xAA, 0xBB, 0, 0, 0, 0xCC] }),
    transmitFixture("IPv6 TCP", v6TCP),
    transmitFixture("IPv6 UDP, VLAN tag kept", with(v6UDP) { $0.vlanTCI = 4095 }),
    transmitFixture("IPv6 hop limit 2 leaves with 1", with(v6TCP) { $0.ipv6.hopLimit = 2 }),
    exceededFixture("IPv4 TTL 1", with(v4TCP) { $0.ipv4.ttl = 1 }),
    exceededFixture("IPv4 TTL 0", with(v4UDP) { $0.ipv4.ttl = 0 }),
    exceededFixture("IPv4 TTL 1 with a VLAN tag", with(v4UDP) { $0.ipv4.ttl = 1; $0.vlanTCI = 9 }),
    exceededFixture("IPv6 hop limit 1", with(v6UDP) { $0.ipv6.hopLimit = 1 }),
    exceededFixture("IPv6 hop limit 0", with(v6TCP) { $0.ipv6.hopLimit = 0 }),
]

final class DirectRoutingTests: XCTestCase {
    func testFixtures() {
        for fixture in fixtures { check(fixture) }
    }

    /// Outputs verified by the independent checker: IPv4 header checksum right, L4 checksum still right.
    func testOutputChecksumsVerify() {
        for fixture in fixtures where fixture.expected == .transmit {
            let (_, output) = fixture.run(rewrite)
            if FrameLayout(output)?.family == 4 {
                XCTAssertTrue(verifyIPv4HeaderChecksum(output), fixture.description)
            }
            XCTAssertTrue(verifyL4Checksum(output), fixture.description)
        }
    }

    /// Every TTL from 2 to 255, over headers whose checksums take many values.
    func testEveryTTL() {
        for ttl in 2...255 {
            let builder = with(v4TCP) { $0.ipv4.ttl = UInt8(ttl); $0.ipv4.identification = UInt16(ttl &* 257) }
            check(transmitFixture("TTL \(ttl)", builder))
        }
    }

    /// The RFC 1624 corner: headers whose checksum is 0x0000 before or after the TTL decrement (the ones
    /// eqn. 2 would get wrong as 0xFFFF). The identification field is chosen to make the header sum 0xFFFF.
    func testChecksumZeroBeforeAndAfter() {
        for (name, leaving) in [("before", false), ("after", true)] {
            let (input, output) = arrivingAndLeaving(with(v4UDP) { $0.ipv4.identification = 0 })
            var header = Array((leaving ? output : input)[14..<34])
            header.writeUInt16(0, at: 10)
            let identification = 0xFFFF - ReferenceChecksum.onesComplementSum(header)
            let fixture = transmitFixture("checksum 0x0000 \(name) the decrement",
                                          with(v4UDP) { $0.ipv4.identification = identification })
            XCTAssertEqual((leaving ? fixture.expectedOutput : fixture.input).readUInt16(at: 24), 0)
            check(fixture)
        }
    }

    private func rewrite(_ frame: UnsafeMutableRawPointer, _ length: Int) -> DirectRouting.Verdict {
        var parsed = ParsedFrame()
        guard FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &parsed) == .ok else {
            XCTFail("fixture input does not parse")
            return .hopLimitExceeded
        }
        return DirectRouting.rewrite(frame, parsed: parsed, source: interfaceMAC, destination: realServerMAC)
    }

    private func check(_ fixture: FrameFixture<DirectRouting.Verdict>,
                       file: StaticString = #filePath, line: UInt = #line) {
        assertFixture(fixture, file: file, line: line, rewrite)
    }
}
