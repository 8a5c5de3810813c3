import Packet
import XCTest
import XDirectorTestSupport

private let routerMAC = MACAddress("02:00:00:00:00:01")!
private let directorMAC = MACAddress("02:00:00:00:00:02")!
private let interfaceMAC = MACAddress("02:aa:bb:cc:dd:01")!
private let realServerMAC = MACAddress("0e:11:22:33:44:55")!

/// `TunnelResult` with the output bytes instead of a pointer, for comparisons.
private enum Outcome: Equatable {
    case transmit([UInt8])
    case tooBig(mtu: Int)
    case fragmentationRequired
    case hopLimitExceeded
    case noHeadroom
}

private struct Outer {
    var source: IPAddress
    var destination: IPAddress
}

private let outerV4 = Outer(source: IPAddress("10.1.0.1")!, destination: IPAddress("10.2.0.7")!)
private let outerV6 = Outer(source: IPAddress("fd01::1")!, destination: IPAddress("fd02::7")!)

private func arriving(_ builder: PacketBuilder) -> PacketBuilder {
    with(builder) { $0.source = routerMAC; $0.destination = directorMAC }
}

/// Runs `Tunnel.encapsulate` on `input` placed after `headroom` free bytes. For any outcome but transmit,
/// also checks that the frame is untouched.
private func encapsulate(_ input: [UInt8], headroom: Int = 256, outer: Outer, parameters: TunnelParameters,
                         mtu: Int = 1500, file: StaticString = #filePath, line: UInt = #line) -> Outcome {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: headroom + input.count, alignment: 1)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0xEE)
    UnsafeMutableRawBufferPointer(rebasing: buffer[headroom...]).copyBytes(from: input)
    let frame = buffer.baseAddress! + headroom
    var parsed = ParsedFrame()
    guard FrameParser.parse(UnsafeRawPointer(frame), length: input.count, into: &parsed) == .ok else {
        XCTFail("input does not parse", file: file, line: line)
        return .noHeadroom
    }
    let outcome: Outcome
    switch Tunnel.encapsulate(frame, length: input.count, headroom: headroom, parsed: parsed,
                              outerSource: outer.source, outerDestination: outer.destination, parameters: parameters,
                              sourceMAC: interfaceMAC, destinationMAC: realServerMAC, mtu: mtu) {
    case .transmit(let start, let length):
        XCTAssertGreaterThanOrEqual(start, buffer.baseAddress!, file: file, line: line)
        XCTAssertLessThanOrEqual(start + length, frame + input.count, file: file, line: line)
        return .transmit(Array(UnsafeRawBufferPointer(start: start, count: length)))
    case .tooBig(let mtu): outcome = .tooBig(mtu: mtu)
    case .fragmentationRequired: outcome = .fragmentationRequired
    case .hopLimitExceeded: outcome = .hopLimitExceeded
    case .noHeadroom: outcome = .noHeadroom
    }
    XCTAssertEqual(Array(buffer[headroom...]), input, "frame changed for \(outcome)", file: file, line: line)
    return outcome
}

private func flowHash(_ frame: [UInt8]) -> UInt32 { parse(frame).1.key.flowHash }

/// The expected encapsulated frame, built independently: the inner packet one hop older, under headers
/// assembled by `PacketBuilder` with full checksums.
private func expected(_ arrivingBuilder: PacketBuilder, outer: Outer, parameters: TunnelParameters) -> [UInt8] {
    let hash = flowHash(arrivingBuilder.build())
    var leaving = arrivingBuilder
    leaving.trailer = []
    var tos: UInt8 = 0, ttl: UInt8 = 0, dontFragment = true, identification: UInt16 = 0
    switch leaving.network {
    case .ipv4(var ip):
        ip.ttl -= 1
        (tos, ttl, dontFragment) = (ip.tos, ip.ttl, ip.dontFragment)
        if !dontFragment { identification = ip.identification }
        leaving.network = .ipv4(ip)
    case .ipv6(var ip):
        ip.hopLimit -= 1
        (tos, ttl) = (ip.trafficClass, ip.hopLimit)
        leaving.network = .ipv6(ip)
    case .other:
        preconditionFailure()
    }
    let inner = leaving.buildIPPacket()
    let innerIsV4 = inner[0] >> 4 == 4
    let innerProto: UInt8 = innerIsV4 ? 4 : 41

    var transport: PacketBuilder.Transport
    switch parameters.type {
    case .ipip:
        transport = .other(proto: innerProto, payload: inner)
    case .gue:
        var udp = PacketBuilder.UDP(sourcePort: 0xC000 | UInt16(hash >> 18), destinationPort: parameters.port)
        udp.payload = [0, innerProto, 0, 0] + inner
        transport = .udp(udp)
    case .gre:
        var gre: [UInt8] = [parameters.checksum ? 0x80 : 0, 0] + (innerIsV4 ? [0x08, 0x00] : [0x86, 0xDD])
        if parameters.checksum {
            gre += [0, 0, 0, 0]
            gre += inner
            gre.writeUInt16(ReferenceChecksum.checksum(gre), at: 4)
        } else {
            gre += inner
        }
        transport = .other(proto: 47, payload: gre)
    }
    let network: PacketBuilder.Network
    if outer.destination.family == .ipv4 {
        var ip = PacketBuilder.IPv4(source: outer.source, destination: outer.destination)
        (ip.ttl, ip.tos, ip.dontFragment, ip.identification) = (ttl, tos, dontFragment, identification)
        network = .ipv4(ip)
    } else {
        var ip = PacketBuilder.IPv6(source: outer.source, destination: outer.destination)
        (ip.hopLimit, ip.trafficClass, ip.flowLabel) = (ttl, tos, hash & 0xF_FFFF)
        network = .ipv6(ip)
    }
    var builder = PacketBuilder(network: network, transport: transport)
    builder.source = interfaceMAC
    builder.destination = realServerMAC
    builder.vlanTCI = arrivingBuilder.vlanTCI
    var frame = builder.build()
    if parameters.type == .gue, outer.destination.family == .ipv4, !parameters.checksum {
        frame.writeUInt16(0, at: FrameLayout(frame)!.l4Offset + 6)
    }
    return frame
}

private let v4TCP = PacketBuilder.tcp("192.0.2.1", 40000, "198.51.100.10", 80, payload: Array("GET /\r\n".utf8))
private let v6UDP = PacketBuilder.udp("2001:db8::1", 1234, "2001:db8::53", 53, payload: Array("odd".utf8))

private let allParameters = [
    TunnelParameters(type: .ipip),
    TunnelParameters(type: .gue, port: 6080, checksum: false),
    TunnelParameters(type: .gue, port: 5555, checksum: true),
    TunnelParameters(type: .gre, checksum: false),
    TunnelParameters(type: .gre, checksum: true),
]

/// The inner packet of an encapsulated frame, in a frame of its own (for the independent checkers).
private func innerFrame(_ output: [UInt8], parameters: TunnelParameters) -> [UInt8] {
    let layout = FrameLayout(output)!
    let inner = Array(output[(layout.l4Offset + parameters.headerLength)...])
    return [UInt8](repeating: 0, count: 12) + (inner[0] >> 4 == 4 ? [0x08, 0x00] : [0x86, 0xDD]) + inner
}

final class TunnelTests: XCTestCase {
    /// 4in4, 6in6, 4in6, 6in4 for every encapsulation, byte for byte, every checksum checked independently.
    func testEveryFamilyAndType() {
        let inners = [
            ("v4 TCP", v4TCP),
            ("v6 UDP", v6UDP),
            ("v4 UDP without DF, TOS, VLAN, padding", with(PacketBuilder.udp("192.0.2.9", 7, "198.51.100.10", 53,
                                                                            payload: [1, 2])) {
                $0.ipv4.dontFragment = false; $0.ipv4.tos = 0xB9; $0.vlanTCI = 0x3064; $0.trailer = [0, 0, 0, 0, 0, 0]
            }),
            ("v6 TCP, traffic class, VLAN", with(PacketBuilder.tcp("2001:db8::1", 1, "2001:db8::80", 80)) {
                $0.ipv6.trafficClass = 0x2A; $0.ipv6.flowLabel = 0x12345; $0.vlanTCI = 5
            }),
            ("v4 with IP options", with(v4TCP) { $0.ipv4.options = [1, 1, 1, 1]; $0.ipv4.ttl = 2 }),
        ]
        for (name, inner) in inners {
            for outer in [outerV4, outerV6] {
                for parameters in allParameters {
                    let description = "\(name) in \(outer.destination.family) \(parameters)"
                    let input = arriving(inner).build()
                    let want = expected(arriving(inner), outer: outer, parameters: parameters)
                    let got = encapsulate(input, outer: outer, parameters: parameters)
                    XCTAssertEqual(got, .transmit(want), description)
                    guard case .transmit(let output) = got else { continue }
                    checkChecksums(output, parameters: parameters, description)
                }
            }
        }
    }

    private func checkChecksums(_ output: [UInt8], parameters: TunnelParameters, _ description: String) {
        let layout = FrameLayout(output)!
        if layout.family == 4 { XCTAssertTrue(verifyIPv4HeaderChecksum(output), description) }
        if parameters.type == .gue {
            XCTAssertTrue(verifyL4Checksum(output), description)
            let stored = output.readUInt16(at: layout.l4Offset + 6)
            XCTAssertEqual(stored != 0, parameters.checksum || layout.family == 6, description)
        }
        if parameters.type == .gre, parameters.checksum {
            let gre = Array(output[layout.l4Offset..<(layout.l3Offset + layout.ipPacketLength)])
            XCTAssertEqual(ReferenceChecksum.onesComplementSum(gre), 0xFFFF, description)
        }
        let inner = innerFrame(output, parameters: parameters)
        if FrameLayout(inner)?.family == 4 { XCTAssertTrue(verifyIPv4HeaderChecksum(inner), description) }
        XCTAssertTrue(verifyL4Checksum(inner), description)
    }

    /// Exactly `mtu` fits; one byte more is refused by DF (IPv4) or always (IPv6 inner), or needs
    /// fragmentation (IPv4 without DF). Headroom of exactly the overhead suffices.
    func testMTUAndHeadroomBoundaries() {
        let noDF = with(v4TCP) { $0.ipv4.dontFragment = false }
        for outer in [outerV4, outerV6] {
            for parameters in allParameters {
                let overhead = (outer.destination.family == .ipv4 ? 20 : 40) + parameters.headerLength
                for (inner, tooBig) in [(v4TCP, true), (noDF, false), (v6UDP, true)] {
                    let input = arriving(inner).build()
                    let length = FrameLayout(input)!.ipPacketLength
                    let fits = length + overhead
                    let want = expected(arriving(inner), outer: outer, parameters: parameters)
                    XCTAssertEqual(encapsulate(input, headroom: overhead, outer: outer, parameters: parameters,
                                               mtu: fits), .transmit(want))
                    XCTAssertEqual(encapsulate(input, outer: outer, parameters: parameters, mtu: fits - 1),
                                   tooBig ? .tooBig(mtu: length - 1) : .fragmentationRequired)
                    XCTAssertEqual(encapsulate(input, headroom: overhead - 1, outer: outer, parameters: parameters),
                                   .noHeadroom)
                }
            }
        }
    }

    /// A jumbo MTU does not lift the 16-bit IP length: an inner packet that would overflow the outer one
    /// is too big for 65535 bytes, whatever the interface allows.
    func testOuterLengthStaysWithin16Bits() {
        let inner = with(v4TCP) { $0.tcp.payload = [UInt8](repeating: 0x5A, count: 65535 - 40) }
        XCTAssertEqual(encapsulate(arriving(inner).build(), outer: outerV4, parameters: allParameters[0], mtu: 100_000),
                       .tooBig(mtu: 65535 - 20))
    }

    func testHopLimitExceeded() {
        for inner in [with(v4TCP) { $0.ipv4.ttl = 1 }, with(v6UDP) { $0.ipv6.hopLimit = 0 }] {
            XCTAssertEqual(encapsulate(arriving(inner).build(), outer: outerV4, parameters: allParameters[1]),
                           .hopLimitExceeded)
        }
    }

    /// ICMP errors are tunnelled (and direct-routed) unchanged but for the hop.
    func testICMPErrorsAreForwarded() {
        let quoted = PacketBuilder.tcp("198.51.100.10", 80, "192.0.2.1", 40000)
        let error = PacketBuilder.icmpError("203.0.113.1", "198.51.100.10", type: 3, code: 4, rest: 1400,
                                            quoting: quoted)
        let v6Error = PacketBuilder.icmpError("2001:db8:ff::1", "2001:db8::80", type: 2, rest: 1280,
                                              quoting: PacketBuilder.udp("2001:db8::80", 53, "2001:db8::1", 9))
        for builder in [error, v6Error] {
            let input = arriving(builder).build()
            XCTAssertTrue(parse(input).1.isICMPError)
            for parameters in allParameters {
                let got = encapsulate(input, outer: outerV6, parameters: parameters)
                XCTAssertEqual(got, .transmit(expected(arriving(builder), outer: outerV6, parameters: parameters)))
                if case .transmit(let output) = got {
                    XCTAssertTrue(verifyICMPChecksum(innerFrame(output, parameters: parameters)))
                }
            }
            let (verdict, output) = withExactBuffer(input) { frame, length in
                var parsed = ParsedFrame()
                _ = FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &parsed)
                return DirectRouting.rewrite(frame, parsed: parsed, source: interfaceMAC, destination: realServerMAC)
            }
            XCTAssertEqual(verdict, .transmit)
            XCTAssertTrue(verifyICMPChecksum(output))
            XCTAssertEqual(output[14 + (FrameLayout(input)!.family == 4 ? 8 : 7)] + 1,
                           input[14 + (FrameLayout(input)!.family == 4 ? 8 : 7)])
        }
    }
}
