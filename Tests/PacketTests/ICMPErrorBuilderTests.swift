import Packet
import XCTest
import XDirectorTestSupport

private let senderMAC = MACAddress("02:00:00:00:00:01")!
private let directorMAC = MACAddress("02:00:00:00:00:02")!
private let interfaceMAC = MACAddress("02:aa:bb:cc:dd:01")!

/// Runs `packetTooBig` on `input` in a 2048-byte buffer (filled with 0xEE past the frame); returns the
/// new length and that many bytes.
private func packetTooBig(_ input: [UInt8], mtu: Int, source: IPAddress) -> (Int, [UInt8]) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 1)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0xEE)
    buffer.copyBytes(from: input)
    var parsed = ParsedFrame()
    XCTAssertEqual(FrameParser.parse(UnsafeRawPointer(buffer.baseAddress!), length: input.count, into: &parsed), .ok)
    let length = ICMPErrorBuilder.packetTooBig(buffer.baseAddress!, length: input.count, parsed: parsed, mtu: mtu,
                                               source: source, sourceMAC: interfaceMAC)
    return (length, Array(buffer.prefix(length)))
}

/// The expected error, built independently: about `original`, quoting `quoteLength` bytes of its packet.
private func expected(_ original: PacketBuilder, mtu: Int, source: String, quoteLength: Int) -> [UInt8] {
    let isIPv4: Bool
    let sender: IPAddress
    switch original.network {
    case .ipv4(let ip): (isIPv4, sender) = (true, ip.source)
    case .ipv6(let ip): (isIPv4, sender) = (false, ip.source)
    case .other: preconditionFailure()
    }
    var error = PacketBuilder.icmpError(source, sender.description, type: isIPv4 ? 3 : 2, code: isIPv4 ? 4 : 0,
                                        rest: UInt32(mtu), quoting: original, quoteLength: quoteLength)
    if isIPv4 {
        error.ipv4.ttl = 64
        error.ipv4.tos = 0xC0
        error.ipv4.dontFragment = false
        error.ipv4.identification = 0
    } else {
        error.ipv6.hopLimit = 64
    }
    error.source = interfaceMAC
    error.destination = senderMAC
    error.vlanTCI = original.vlanTCI
    return error.build()
}

private let v4TCP = with(PacketBuilder.tcp("192.0.2.1", 40000, "198.51.100.10", 80, payload: [1, 2, 3])) {
    $0.source = senderMAC; $0.destination = directorMAC
}
private let v6UDP = with(PacketBuilder.udp("2001:db8::1", 1234, "2001:db8::53", 53, payload: [4, 5])) {
    $0.source = senderMAC; $0.destination = directorMAC
}

final class ICMPErrorBuilderTests: XCTestCase {
    func testQuotesUpToTheLimits() {
        // (original, IP packet length, the quote the limit allows)
        let cases: [(String, PacketBuilder, Int)] = [
            ("v4 small", v4TCP, 43),
            ("v4 VLAN, options, padding", with(v4TCP) { $0.vlanTCI = 17; $0.ipv4.options = [1, 1, 1, 1]
                $0.tcp.payload = []; $0.trailer = [0, 0] }, 44),
            ("v4 exactly 548", with(v4TCP) { $0.tcp.payload = [UInt8](repeating: 0x5A, count: 548 - 40) }, 548),
            ("v4 549 cut to 548", with(v4TCP) { $0.tcp.payload = [UInt8](repeating: 0x5A, count: 549 - 40) }, 548),
            ("v4 1500 cut to 548", with(v4TCP) { $0.tcp.payload = (0..<1460).map { UInt8($0 & 0xFF) } }, 548),
            ("v6 small", v6UDP, 50),
            ("v6 VLAN", with(v6UDP) { $0.vlanTCI = 4000 }, 50),
            ("v6 exactly 1232", with(v6UDP) { $0.udp.payload = [UInt8](repeating: 1, count: 1232 - 48) }, 1232),
            ("v6 1233 cut to 1232", with(v6UDP) { $0.udp.payload = [UInt8](repeating: 1, count: 1233 - 48) }, 1232),
            ("v6 1500 cut to 1232", with(v6UDP) { $0.udp.payload = (0..<1452).map { UInt8($0 % 251) } }, 1232),
        ]
        for (name, original, quoteLength) in cases {
            let input = original.build()
            let isIPv4 = FrameLayout(input)!.family == 4
            let source = isIPv4 ? "198.51.100.10" : "2001:db8::53"
            let mtu = isIPv4 ? 1480 : 1440
            let (length, output) = packetTooBig(input, mtu: mtu, source: IPAddress(source)!)
            let want = expected(original, mtu: mtu, source: source, quoteLength: quoteLength)
            if let report = frameMismatch(input: input, expected: want, actual: output) { XCTFail("\(name): \(report)") }
            XCTAssertEqual(length, want.count, name)
            XCTAssertLessThanOrEqual(FrameLayout(output)?.ipPacketLength ?? 0, isIPv4 ? 576 : 1280, name)
            XCTAssertTrue(verifyICMPChecksum(output), name)
            if isIPv4 { XCTAssertTrue(verifyIPv4HeaderChecksum(output), name) }
            // The error parses as an error about the original flow.
            let (status, parsed) = parse(output)
            XCTAssertEqual(status, .ok, name)
            XCTAssertEqual(parsed.innerKey, parse(input).1.key, name)
        }
    }

    func testNoErrorAboutAnError() {
        let error = PacketBuilder.icmpError("203.0.113.1", "198.51.100.10", type: 11, quoting: v4TCP)
        XCTAssertEqual(packetTooBig(error.build(), mtu: 1400, source: IPAddress("198.51.100.10")!).0, 0)
    }

    func testMTUField() {
        let (_, v4) = packetTooBig(v4TCP.build(), mtu: 70000, source: IPAddress("198.51.100.10")!)
        XCTAssertEqual(v4.readUInt32(at: 34 + 4), 0xFFFF)
        let (_, v6) = packetTooBig(v6UDP.build(), mtu: 70000, source: IPAddress("2001:db8::53")!)
        XCTAssertEqual(v6.readUInt32(at: 54 + 4), 70000)
    }
}
