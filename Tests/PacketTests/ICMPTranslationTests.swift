import Packet
import XCTest
import XDirectorTestSupport

private let routerMAC = MACAddress("02:00:00:00:00:01")!
private let directorMAC = MACAddress("02:00:00:00:00:02")!
private let interfaceMAC = MACAddress("02:aa:bb:cc:dd:01")!
private let nextHopMAC = MACAddress("0e:11:22:33:44:55")!

private func ip(_ text: String) -> IPAddress { IPAddress(text)! }
private func endpoint(_ address: String, _ port: UInt16) -> L4Endpoint { L4Endpoint(address: ip(address), port: port) }

/// One error translation: the error as received and as it must leave, both built independently.
private struct Case {
    var description: String
    var input: PacketBuilder
    var output: PacketBuilder
    var outerSource: IPAddress?
    var outerDestination: IPAddress?
    var innerSource: L4Endpoint?
    var innerDestination: L4Endpoint?
}

/// The quoted packet's bytes, first `quoteLength` of them, with the TCP/UDP checksum taken from `original`
/// (the translation leaves it alone).
private func quote(_ packet: PacketBuilder, checksumFrom original: PacketBuilder, quoteLength: Int?) -> [UInt8] {
    var bytes = packet.buildIPPacket()
    let old = original.buildIPPacket()
    let l4 = bytes[0] >> 4 == 4 ? Int(bytes[0] & 0x0F) * 4 : 40
    let proto = bytes[0] >> 4 == 4 ? bytes[9] : bytes[6]
    let offset = l4 + (proto == IPProtocolNumber.tcp ? 16 : 6)
    bytes[offset] = old[offset]
    bytes[offset + 1] = old[offset + 1]
    return Array(bytes.prefix(quoteLength ?? bytes.count))
}

/// An error from `from` to `to` about `quoted` (cut to `quoteLength`), as it arrives; and the same error
/// translated to `newFrom`/`newTo` about `newQuoted`, as it must leave.
private func makeCase(_ description: String, from: String, to: String, quoted: PacketBuilder,
                      newFrom: String? = nil, newTo: String? = nil, newQuoted: PacketBuilder,
                      innerSource: L4Endpoint?, innerDestination: L4Endpoint?, quoteLength: Int? = nil,
                      vlanTCI: UInt16? = nil) -> Case {
    let isIPv4 = ip(from).family == .ipv4
    let type: UInt8 = isIPv4 ? 3 : 2
    let code: UInt8 = isIPv4 ? 4 : 0
    var input = PacketBuilder.icmpError(from, to, type: type, code: code, rest: 1400, quoting: quoted,
                                        quoteLength: quoteLength)
    input.source = routerMAC
    input.destination = directorMAC
    input.vlanTCI = vlanTCI
    var output = PacketBuilder.icmpError(newFrom ?? from, newTo ?? to, type: type, code: code, rest: 1400,
                                         quoting: newQuoted, quoteLength: quoteLength)
    output.icmp.payload = quote(newQuoted, checksumFrom: quoted, quoteLength: quoteLength)
    output.source = interfaceMAC
    output.destination = nextHopMAC
    output.vlanTCI = vlanTCI
    if isIPv4 { output.ipv4.ttl -= 1 } else { output.ipv6.hopLimit -= 1 }
    return Case(description: description, input: input, output: output, outerSource: newFrom.map(ip),
                outerDestination: newTo.map(ip), innerSource: innerSource, innerDestination: innerDestination)
}

private let cases: [Case] = [
    // NAT: the router answers the director's reply VIP:80 → client; it goes back to the real server.
    makeCase("v4 NAT, TCP, whole quote", from: "203.0.113.1", to: "198.51.100.10",
             quoted: .tcp("198.51.100.10", 80, "192.0.2.1", 40000, payload: [1, 2, 3]),
             newTo: "10.0.0.5", newQuoted: .tcp("10.0.0.5", 8080, "192.0.2.1", 40000, payload: [1, 2, 3]),
             innerSource: endpoint("10.0.0.5", 8080), innerDestination: nil),
    makeCase("v4 NAT, UDP, minimal quote, VLAN", from: "203.0.113.1", to: "198.51.100.10",
             quoted: .udp("198.51.100.10", 53, "192.0.2.1", 5353, payload: [1, 2, 3, 4]),
             newTo: "10.0.0.6", newQuoted: .udp("10.0.0.6", 5300, "192.0.2.1", 5353, payload: [1, 2, 3, 4]),
             innerSource: endpoint("10.0.0.6", 5300), innerDestination: nil, quoteLength: 28, vlanTCI: 44),
    // The real server's router answers a packet the director sent it (FULLNAT): both sides change.
    makeCase("v4 FULLNAT, TCP", from: "10.0.0.254", to: "10.0.0.1",
             quoted: .tcp("10.0.0.1", 61000, "10.0.0.5", 8080, payload: Array(repeating: 7, count: 30)),
             newFrom: "198.51.100.10", newTo: "192.0.2.1",
             newQuoted: .tcp("192.0.2.1", 40000, "198.51.100.10", 80, payload: Array(repeating: 7, count: 30)),
             innerSource: endpoint("192.0.2.1", 40000), innerDestination: endpoint("198.51.100.10", 80)),
    makeCase("v6 NAT, TCP, whole quote", from: "2001:db8:ff::1", to: "2001:db8::80",
             quoted: .tcp("2001:db8::80", 443, "2001:db8::1", 40000, payload: [5]),
             newTo: "fd00::5", newQuoted: .tcp("fd00::5", 8443, "2001:db8::1", 40000, payload: [5]),
             innerSource: endpoint("fd00::5", 8443), innerDestination: nil),
    makeCase("v6 NAT, UDP, minimal quote", from: "2001:db8:ff::1", to: "2001:db8::53",
             quoted: .udp("2001:db8::53", 53, "2001:db8::1", 1234, payload: [1]),
             newTo: "fd00::53", newQuoted: .udp("fd00::53", 5300, "2001:db8::1", 1234, payload: [1]),
             innerSource: endpoint("fd00::53", 5300), innerDestination: nil, quoteLength: 48),
    makeCase("v6 FULLNAT, TCP, VLAN", from: "fd00::fe", to: "fd00::1",
             quoted: .tcp("fd00::1", 61001, "fd00::5", 8443), newFrom: "2001:db8::80", newTo: "2001:db8::1",
             newQuoted: .tcp("2001:db8::1", 40000, "2001:db8::80", 443),
             innerSource: endpoint("2001:db8::1", 40000), innerDestination: endpoint("2001:db8::80", 443),
             vlanTCI: 2),
]

private func translate(_ testCase: Case) -> (UnsafeMutableRawPointer, Int) -> TranslationResult {
    { frame, length in
        var parsed = ParsedFrame()
        guard FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &parsed) == .ok, parsed.isICMPError else {
            XCTFail("\(testCase.description): input does not parse as an ICMP error")
            return .hopLimitExceeded
        }
        return ICMPTranslation.rewrite(frame, length: length, parsed: parsed, outerSource: testCase.outerSource,
                                       outerDestination: testCase.outerDestination,
                                       innerSource: testCase.innerSource, innerDestination: testCase.innerDestination,
                                       sourceMAC: interfaceMAC, destinationMAC: nextHopMAC)
    }
}

final class ICMPTranslationTests: XCTestCase {
    func testTranslations() {
        for testCase in cases {
            let fixture = FrameFixture(testCase.description, input: testCase.input.build(), expected: TranslationResult.transmit,
                                       expectedOutput: testCase.output.build())
            assertFixture(fixture, translate(testCase))
            let (_, output) = fixture.run(translate(testCase))
            XCTAssertTrue(verifyICMPChecksum(output), testCase.description)
            if FrameLayout(output)?.family == 4 {
                XCTAssertTrue(verifyIPv4HeaderChecksum(output), testCase.description)
                // The quoted IPv4 header's checksum, checked on its own.
                let innerL3 = FrameLayout(output)!.l4Offset + 8
                let header = Array(output[innerL3..<(innerL3 + Int(output[innerL3] & 0x0F) * 4)])
                XCTAssertEqual(ReferenceChecksum.onesComplementSum(header), 0xFFFF, testCase.description)
            }
        }
    }

    func testHopLimitExceeded() {
        var expired = cases[0]
        expired.input.ipv4.ttl = 1
        assertFixture(FrameFixture("TTL 1", input: expired.input.build(), expected: TranslationResult.hopLimitExceeded),
                      translate(expired))
        var expiredV6 = cases[3]
        expiredV6.input.ipv6.hopLimit = 1
        assertFixture(FrameFixture("hop limit 1", input: expiredV6.input.build(), expected: TranslationResult.hopLimitExceeded),
                      translate(expiredV6))
    }

    func testChecksumIsValid() {
        for testCase in cases {
            var frame = testCase.input.build()
            XCTAssertTrue(valid(frame), testCase.description)
            frame[frame.count - 1] ^= 0x40
            XCTAssertFalse(valid(frame), testCase.description)
        }
    }

    private func valid(_ frame: [UInt8]) -> Bool {
        let (status, parsed) = parse(frame)
        XCTAssertEqual(status, .ok)
        return withExactBuffer(frame) { pointer, _ in
            ICMPTranslation.checksumIsValid(UnsafeRawPointer(pointer), parsed: parsed)
        }.0
    }
}
