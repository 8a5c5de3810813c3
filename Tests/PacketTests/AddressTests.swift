import Packet
import XCTest
import XDirectorTestSupport

final class IPAddressTests: XCTestCase {
    func testIPv4RoundTrips() {
        let cases: [(String, UInt32)] = [
            ("0.0.0.0", 0), ("255.255.255.255", 0xFFFF_FFFF), ("192.0.2.1", 0xC000_0201), ("10.0.0.10", 0x0A00_000A),
            ("1.2.3.4", 0x0102_0304),
        ]
        for (text, value) in cases {
            XCTAssertEqual(IPAddress(text), .v4(value), text)
            XCTAssertEqual(IPAddress.v4(value).description, text)
            XCTAssertEqual(IPAddress(text)?.family, .ipv4)
            XCTAssertEqual(IPAddress(text)?.bytes, bigEndianBytes(value))
        }
    }

    /// Input text → RFC 5952 canonical text → the same address.
    func testIPv6CanonicalForms() {
        let cases: [(input: String, canonical: String)] = [
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("0:0:0:0:0:0:0:0", "::"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            // The longest run of zeros is compressed; the first of equal runs.
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("2001:db8:0:0:0:1:0:0", "2001:db8::1:0:0"),
            // A single zero word is not compressed.
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
            // `::` may stand for a single zero word on input.
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
            ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
            ("fe80::abcd:ef01:2345:6789", "fe80::abcd:ef01:2345:6789"),
            ("FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            // Embedded IPv4: accepted anywhere in the last 32 bits; printed dotted for IPv4-mapped only.
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
            ("::FFFF:c000:0201", "::ffff:192.0.2.1"),
            ("64:ff9b::198.51.100.7", "64:ff9b::c633:6407"),
            ("::192.0.2.1", "::c000:201"),
            ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
        ]
        for (input, canonical) in cases {
            guard let address = IPAddress(input) else {
                XCTFail("\(input) did not parse")
                continue
            }
            XCTAssertEqual(address.family, .ipv6)
            XCTAssertEqual(address.description, canonical, input)
            XCTAssertEqual(IPAddress(canonical), address, canonical)
            XCTAssertEqual(IPAddress(bytes: address.bytes), address)
        }
        XCTAssertEqual(IPAddress("2001:db8::1"), .v6(hi: 0x2001_0DB8_0000_0000, lo: 1))
        XCTAssertEqual(IPAddress("::ffff:192.0.2.1"), .v6(hi: 0, lo: 0xFFFF_C000_0201))
    }

    func testInvalidText() {
        let invalid = [
            "", ":", ":::", "1:::2", "1::2::3", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "256.1.1.1", "1.2.3.-1",
            "+1.2.3.4", " 1.2.3.4", "1.2.3.4 ", "1..2.3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8", "g::1", "12345::", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:", "fe80::1%eth0",
            "1.2.3.4::", "::1.2.3.4:5", "::ffff:1.2.3", "::ffff:01.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "abc",
            "١.٢.٣.٤",
        ]
        for text in invalid {
            XCTAssertNil(IPAddress(text), "\"\(text)\" must not parse")
        }
    }

    func testBytes() {
        XCTAssertEqual(IPAddress(bytes: [192, 0, 2, 1]), .v4(0xC000_0201))
        XCTAssertNil(IPAddress(bytes: [1, 2, 3]))
        XCTAssertNil(IPAddress(bytes: [UInt8](repeating: 0, count: 15)))
        let bytes: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        XCTAssertEqual(IPAddress(bytes: bytes)?.description, "2001:db8::1")
        XCTAssertEqual(IPAddress(bytes: bytes)?.bytes, bytes)
    }

    func testFlowKeyAddresses() {
        let v4 = FlowKey(source: IPAddress("192.0.2.1")!, sourcePort: 1, destination: IPAddress("192.0.2.2")!,
                         destinationPort: 2, proto: IPProtocolNumber.udp)
        XCTAssertEqual(v4.srcLo, 0xC000_0201)
        XCTAssertEqual(v4.srcHi, 0)
        XCTAssertEqual(v4.family, 4)
        XCTAssertEqual(v4.source, IPAddress("192.0.2.1"))
        XCTAssertEqual(v4.destination, IPAddress("192.0.2.2"))
        let v6 = FlowKey(source: IPAddress("2001:db8::1")!, sourcePort: 1, destination: IPAddress("::ffff:1.2.3.4")!,
                         destinationPort: 2, proto: IPProtocolNumber.tcp)
        XCTAssertEqual(v6.family, 6)
        XCTAssertEqual(v6.source.description, "2001:db8::1")
        XCTAssertEqual(v6.destination.description, "::ffff:1.2.3.4")
        XCTAssertNotEqual(v4.flowHash, v6.flowHash)
    }

    /// `ports` is both ports in one word, setting it leaves protocol and family alone, and the word-wise
    /// constructor agrees with the port-wise one.
    func testFlowKeyPortsAreOneWord() {
        var key = FlowKey(source: IPAddress("192.0.2.1")!, sourcePort: 40000, destination: IPAddress("192.0.2.2")!,
                          destinationPort: 443, proto: IPProtocolNumber.tcp)
        XCTAssertEqual(key.ports, 443 << 16 | 40000)
        key.ports = 8080 << 16 | 1234
        XCTAssertEqual(key.srcPort, 1234)
        XCTAssertEqual(key.dstPort, 8080)
        XCTAssertEqual(key.proto, IPProtocolNumber.tcp)
        XCTAssertEqual(key.family, 4)
        XCTAssertEqual(FlowKey.portsAndProtocol(ports: key.ports, proto: 6, family: 4),
                       FlowKey.portsAndProtocol(srcPort: 1234, dstPort: 8080, proto: 6, family: 4))
        XCTAssertEqual(key.portsAndProtocol, FlowKey.portsAndProtocol(srcPort: 1234, dstPort: 8080, proto: 6, family: 4))
    }
}

final class MACAddressTests: XCTestCase {
    func testRoundTrips() {
        let cases: [(String, String, UInt64)] = [
            ("02:00:5e:10:00:01", "02:00:5e:10:00:01", 0x0200_5E10_0001),
            ("FF:FF:FF:FF:FF:FF", "ff:ff:ff:ff:ff:ff", 0xFFFF_FFFF_FFFF),
            ("00:00:00:00:00:00", "00:00:00:00:00:00", 0),
            ("0e:Ab:cD:01:23:45", "0e:ab:cd:01:23:45", 0x0EAB_CD01_2345),
        ]
        for (text, canonical, value) in cases {
            let address = MACAddress(text)
            XCTAssertEqual(address?.value, value, text)
            XCTAssertEqual(address?.description, canonical)
            XCTAssertEqual(MACAddress(bytes: address?.bytes ?? []), address)
        }
        XCTAssertEqual(MACAddress.zero.description, "00:00:00:00:00:00")
        XCTAssertEqual(MACAddress(value: 0xFFFF_0200_0000_0001).value, 0x0200_0000_0001)
    }

    func testInvalidText() {
        let invalid = [
            "", "02:00:5e:10:00", "02:00:5e:10:00:01:02", "02-00-5e-10-00-01", "2:0:5e:10:0:1", "02:00:5e:10:00:0g",
            "+f:00:00:00:00:00", "-0:00:00:00:00:00", "02:00:5e:10:00:001", "02:00:5e:10:00:", "０２:00:5e:10:00:01",
        ]
        for text in invalid {
            XCTAssertNil(MACAddress(text), "\"\(text)\" must not parse")
        }
        XCTAssertNil(MACAddress(bytes: [1, 2, 3, 4, 5]))
    }

    func testWrite() {
        let address = MACAddress("0e:11:22:33:44:55")!
        var buffer = [UInt8](repeating: 0xEE, count: 9)
        buffer.withUnsafeMutableBytes { address.write(to: $0.baseAddress! + 1) }
        XCTAssertEqual(buffer, [0xEE, 0x0e, 0x11, 0x22, 0x33, 0x44, 0x55, 0xEE, 0xEE])
    }

    /// The two words lay the destination then the source down in wire order, and touch nothing else.
    func testEthernetAddressesStoreBothMACs() {
        let destination = MACAddress("0e:11:22:33:44:55")!, source = MACAddress("a2:b3:c4:d5:e6:f7")!
        var frame = [UInt8](repeating: 0xEE, count: 14)
        frame.withUnsafeMutableBytes { EthernetAddresses(destination: destination, source: source).store($0.baseAddress!) }
        XCTAssertEqual(frame, destination.bytes + source.bytes + [0xEE, 0xEE])
    }
}
