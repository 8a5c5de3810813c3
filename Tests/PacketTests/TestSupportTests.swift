import Packet
import XCTest
import XDirectorTestSupport

/// The builder and checkers the other tests rely on, pinned to bytes checked by hand (and by a separate
/// computation of both checksums when the vectors were written).
final class TestSupportTests: XCTestCase {
    func testBuilderIPv4UDPWithVLAN() {
        var builder = PacketBuilder.udp("192.0.2.1", 5353, "198.51.100.10", 53, payload: [1, 2, 3])
        builder.vlanTCI = 0x0064
        let expected = HexDump.bytes("""
            020000000002 020000000001 8100 0064 0800
            4500 001f 1c46 4000 4011 3249 c0000201 c633640a
            14e9 0035 000b fa78 010203
            """)
        if let report = frameMismatch(input: [], expected: expected, actual: builder.build()) { XCTFail(report) }
        XCTAssertTrue(verifyIPv4HeaderChecksum(expected))
        XCTAssertTrue(verifyL4Checksum(expected))
    }

    func testBuilderIPv6TCPWithOptions() {
        var builder = PacketBuilder.tcp("2001:db8::1", 40000, "2001:db8::80", 443, flags: TCPFlags.syn)
        builder.tcp.options = [2, 4, 0x05, 0xb4]
        let expected = HexDump.bytes("""
            020000000002 020000000001 86dd
            60000000 0018 06 40 20010db8000000000000000000000001 20010db8000000000000000000000080
            9c40 01bb 10000000 00000000 60 02 faf0 9347 0000 020405b4
            """)
        if let report = frameMismatch(input: [], expected: expected, actual: builder.build()) { XCTFail(report) }
        XCTAssertTrue(verifyL4Checksum(expected))
        XCTAssertFalse(verifyIPv4HeaderChecksum(expected))
    }

    func testCheckersRejectCorruption() {
        let frame = PacketBuilder.tcp("192.0.2.1", 1, "192.0.2.2", 2, payload: [9, 9, 9]).build()
        XCTAssertTrue(verifyIPv4HeaderChecksum(frame))
        XCTAssertTrue(verifyL4Checksum(frame))
        for index in 14..<frame.count {
            var broken = frame
            broken[index] ^= 0x10
            let headerByte = index < 34
            // Address bytes are in both the IP header and the pseudo-header.
            let inPseudoHeader = (26..<34).contains(index)
            if headerByte { XCTAssertFalse(verifyIPv4HeaderChecksum(broken), "byte \(index)") }
            if !headerByte || inPseudoHeader { XCTAssertFalse(verifyL4Checksum(broken), "byte \(index)") }
        }
        var fixed = frame
        fixed[22] = 1
        fixed[frame.count - 1] = 0
        recomputeIPv4HeaderChecksum(in: &fixed)
        recomputeL4Checksum(in: &fixed)
        XCTAssertTrue(verifyIPv4HeaderChecksum(fixed))
        XCTAssertTrue(verifyL4Checksum(fixed))
    }

    func testHexDumpAndMismatch() {
        let bytes = Array(0..<20).map(UInt8.init) + Array("AZ".utf8)
        XCTAssertEqual(HexDump.format(bytes), """
            0000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|
            0010  10 11 12 13 41 5a                                 |....AZ|
            """)
        XCTAssertEqual(HexDump.bytes(HexDump.compact(bytes)), bytes)
        XCTAssertNil(frameMismatch(input: bytes, expected: bytes, actual: bytes))
        var changed = bytes
        changed[17] = 0xFF
        let report = frameMismatch(input: bytes, expected: bytes, actual: changed + [0])
        XCTAssertNotNil(report)
        XCTAssertTrue(report?.contains("differing offsets: 0x11, 0x16") ?? false, report ?? "")
        XCTAssertTrue(report?.contains("0010  10 11 12 13 41 5a") ?? false)
    }

    func testFixtureReportsVerdictAndBytes() {
        let fixture = FrameFixture("flip", input: [1, 2, 3], expected: true, expectedOutput: [1, 2, 4])
        XCTAssertNil(fixture.check { pointer, _ in
            pointer.storeBytes(of: 4, toByteOffset: 2, as: UInt8.self)
            return true
        })
        let report = fixture.check { _, _ in false }
        XCTAssertTrue(report?.hasPrefix("flip: verdict false, expected true") ?? false, report ?? "")
    }

    func testPcapLayout() {
        let file = Pcap.file(frames: [[0xAA, 0xBB], []])
        XCTAssertEqual(file.count, 24 + 16 + 2 + 16)
        XCTAssertEqual(Array(file[0..<4]), [0xD4, 0xC3, 0xB2, 0xA1])
        XCTAssertEqual(Array(file[20..<24]), [1, 0, 0, 0])
        XCTAssertEqual(Array(file[32..<42]), [2, 0, 0, 0, 2, 0, 0, 0, 0xAA, 0xBB])
    }

    func testSeededGeneratorRepeats() {
        var a = SeededGenerator(seed: 7)
        var b = SeededGenerator(seed: 7)
        XCTAssertEqual(a.bytes(64), b.bytes(64))
    }
}
