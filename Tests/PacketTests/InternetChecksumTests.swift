import Packet
import XCTest
import XDirectorTestSupport

/// One's complement addition of 16-bit values, the slow and obvious way.
private func onesAdd(_ values: UInt32...) -> UInt32 {
    var sum = values.reduce(0) { $0 + UInt64($1) }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return UInt32(sum)
}

final class InternetChecksumTests: XCTestCase {
    /// RFC 1071 section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is 0xddf2.
    func testRFC1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        bytes.withUnsafeBytes { buffer in
            XCTAssertEqual(InternetChecksum.sum(buffer), 0xddf2)
            XCTAssertEqual(InternetChecksum.checksum(buffer), 0x220d)
        }
        XCTAssertEqual(ReferenceChecksum.onesComplementSum(bytes), 0xddf2)
    }

    /// A real IPv4 header (192.168.0.1 → 192.168.0.199, UDP): checksum 0xb861, and 0 over the whole header.
    func testKnownIPv4Header() {
        var header = HexDump.bytes("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
        header.withUnsafeBytes { XCTAssertEqual(InternetChecksum.checksum($0), 0) }
        XCTAssertEqual(ReferenceChecksum.onesComplementSum(header), 0xFFFF)
        header.writeUInt16(0, at: 10)
        header.withUnsafeBytes { XCTAssertEqual(InternetChecksum.checksum($0), 0xb861) }
        XCTAssertEqual(ReferenceChecksum.checksum(header), 0xb861)
    }

    func testEmptyAndSingleByte() {
        XCTAssertEqual(InternetChecksum.sum(UnsafeRawBufferPointer(start: nil, count: 0)), 0)
        XCTAssertEqual(InternetChecksum.checksum(UnsafeRawBufferPointer(start: nil, count: 0), initial: 0x1234), 0xEDCB)
        [UInt8(0xAB)].withUnsafeBytes { XCTAssertEqual(InternetChecksum.sum($0), 0xAB00) }
    }

    /// Full sums against the reference for random buffers of every length from 0 to 300, at odd and even
    /// addresses, with and without an initial partial sum.
    func testFullChecksumMatchesReference() {
        var random = SeededGenerator(seed: 0xC5C5_0001)
        for length in 0...300 {
            for _ in 0..<4 {
                let bytes = random.bytes(length)
                let initial = Bool.random(using: &random) ? 0 : UInt32.random(in: 0...UInt32.max, using: &random)
                let misalign = Int.random(in: 0...7, using: &random)
                let (result, _) = withExactBuffer([UInt8](repeating: 0, count: misalign) + bytes) { pointer, _ in
                    (InternetChecksum.sum(pointer + misalign, count: length, initial: initial),
                     InternetChecksum.checksum(pointer + misalign, count: length, initial: initial))
                }
                let reference = UInt32(ReferenceChecksum.onesComplementSum(bytes))
                let expectedSum = onesAdd(reference, initial >> 16, initial & 0xFFFF)
                // 0 and 0xFFFF are the same one's complement number; compare modulo 0xFFFF.
                XCTAssertEqual(result.0 % 0xFFFF, expectedSum % 0xFFFF, "length \(length)")
                XCTAssertLessThanOrEqual(result.0, 0xFFFF)
                if initial == 0 {
                    XCTAssertEqual(result.0, UInt32(ReferenceChecksum.onesComplementSum(bytes)), "length \(length)")
                    XCTAssertEqual(result.1, ReferenceChecksum.checksum(bytes), "length \(length)")
                }
            }
        }
    }

    /// Partial sums of consecutive even-length pieces add up to the sum of the whole.
    func testPiecewiseSums() {
        var random = SeededGenerator(seed: 0xC5C5_0002)
        for _ in 0..<200 {
            let bytes = random.bytes(Int.random(in: 0...200, using: &random))
            let cut = Int.random(in: 0...(bytes.count / 2), using: &random) * 2
            bytes.withUnsafeBytes { buffer in
                let head = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: buffer[..<cut]))
                let whole = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: buffer[cut...]), initial: head)
                XCTAssertEqual(InternetChecksum.finish(whole), ReferenceChecksum.checksum(bytes))
                let tail = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: buffer[cut...]))
                XCTAssertEqual(InternetChecksum.finish(head &+ tail), ReferenceChecksum.checksum(bytes))
            }
        }
    }

    /// TCP/UDP checksums with the pseudo-header sums equal the reference over pseudo-header bytes.
    func testPseudoHeaderSums() {
        var random = SeededGenerator(seed: 0xC5C5_0003)
        for round in 0..<400 {
            let ipv6 = round % 2 == 1
            let source = ipv6 ? IPAddress(bytes: random.bytes(16))! : IPAddress(bytes: random.bytes(4))!
            let destination = ipv6 ? IPAddress(bytes: random.bytes(16))! : IPAddress(bytes: random.bytes(4))!
            let proto = round % 4 < 2 ? IPProtocolNumber.tcp : IPProtocolNumber.udp
            let segment = random.bytes(Int.random(in: 8...1500, using: &random))
            let expected = ReferenceChecksum.l4Checksum(source: source, destination: destination, proto: proto,
                                                        segment: segment)
            let key = FlowKey(source: source, sourcePort: 1, destination: destination, destinationPort: 2, proto: proto)
            let pseudo: UInt32
            switch (source, destination) {
            case (.v4(let s), .v4(let d)):
                pseudo = InternetChecksum.pseudoHeaderSum(ipv4Source: s, destination: d, proto: proto,
                                                          length: segment.count)
            case (.v6(let sh, let sl), .v6(let dh, let dl)):
                pseudo = InternetChecksum.pseudoHeaderSum(ipv6Source: (sh, sl), destination: (dh, dl), proto: proto,
                                                          length: segment.count)
            default:
                return XCTFail("mixed families")
            }
            XCTAssertEqual(pseudo, InternetChecksum.pseudoHeaderSum(key, length: segment.count))
            segment.withUnsafeBytes { buffer in
                XCTAssertEqual(InternetChecksum.checksum(buffer, initial: pseudo), expected)
            }
        }
    }

    /// RFC 1624 section 3's example: m 0x5555 → 0x3285 with the rest summing to 0xCD7A. The new checksum
    /// is 0x0000 (eqn. 2 would give 0xFFFF).
    func testRFC1624Example() {
        XCTAssertEqual(InternetChecksum.updated(0xDD2F, replacing: UInt16(0x5555), with: UInt16(0x3285)), 0x0000)
        // And back again.
        XCTAssertEqual(InternetChecksum.updated(0x0000, replacing: UInt16(0x3285), with: UInt16(0x5555)), 0xDD2F)
    }

    /// 16-, 32- and 128-bit incremental updates equal a full recomputation, over random data and fields.
    func testIncrementalUpdatesMatchRecomputation() {
        var random = SeededGenerator(seed: 0xC5C5_0004)
        for round in 0..<3000 {
            let width = [2, 4, 16][round % 3]
            var data = random.bytes(2 * Int.random(in: (width / 2)...40, using: &random))
            let offset = 2 * Int.random(in: 0...((data.count - width) / 2), using: &random)
            var newField = random.bytes(width)
            // Edge values in a fifth of the cases.
            switch Int.random(in: 0..<10, using: &random) {
            case 0: newField = [UInt8](repeating: 0x00, count: width)
            case 1: newField = [UInt8](repeating: 0xFF, count: width)
            case 2: data.replaceSubrange(offset..<(offset + width), with: [UInt8](repeating: 0xFF, count: width))
            case 3: data.replaceSubrange(offset..<(offset + width), with: [UInt8](repeating: 0x00, count: width))
            default: break
            }
            checkUpdate(data: data, offset: offset, newField: newField)
        }
    }

    /// Updates that land on a full checksum of 0x0000 and updates that start from one, for each width.
    func testIncrementalUpdatesAroundZeroChecksum() {
        var random = SeededGenerator(seed: 0xC5C5_0005)
        for width in [2, 4, 16] {
            for _ in 0..<200 {
                var data = random.bytes(40)
                let offset = 2 * Int.random(in: 0...((40 - width) / 2), using: &random)
                // Make the field the one's complement negation of the rest, so the whole sums to 0xFFFF.
                data.replaceSubrange(offset..<(offset + width), with: [UInt8](repeating: 0, count: width))
                let rest = ReferenceChecksum.onesComplementSum(data)
                var zeroingField = [UInt8](repeating: 0, count: width)
                zeroingField.writeUInt16(~rest, at: 0)
                var zeroData = data
                zeroData.replaceSubrange(offset..<(offset + width), with: zeroingField)
                XCTAssertEqual(ReferenceChecksum.checksum(zeroData), 0)
                // Into the zero checksum, and out of it.
                checkUpdate(data: data, offset: offset, newField: zeroingField)
                checkUpdate(data: zeroData, offset: offset, newField: random.bytes(width))
            }
        }
    }

    /// The TTL shortcut, on the checksum as it lies in the packet, equals eqn. 3 on the TTL/protocol word
    /// (in host order, its result then stored in network order) for every checksum and every TTL that may be
    /// decremented (the protocol byte does not matter: it is the same before and after).
    func testTTLDecrementMatchesTheGeneralUpdate() {
        for checksum in 0...0xFFFF {
            for ttl in [2, 3, 64, 128, 255] {
                let word = UInt16(ttl << 8 | 6), host = UInt16(checksum)
                XCTAssertEqual(InternetChecksum.updatedForTTLDecrement(wire: host.bigEndian),
                               InternetChecksum.updated(host, replacing: word, with: word &- 0x0100).bigEndian,
                               "checksum \(checksum), ttl \(ttl)")
            }
        }
    }

    /// Replacing a field with itself changes nothing; replacing 0x0000 by 0xFFFF (the two zeros) neither.
    func testIdentityUpdates() {
        var random = SeededGenerator(seed: 0xC5C5_0006)
        for _ in 0..<500 {
            let checksum = UInt16.random(in: 0...0xFFFE, using: &random)
            let word = UInt16.random(in: 0...0xFFFF, using: &random)
            let long = UInt32.random(in: 0...UInt32.max, using: &random)
            let wide = (hi: UInt64.random(in: 0...UInt64.max, using: &random),
                        lo: UInt64.random(in: 0...UInt64.max, using: &random))
            XCTAssertEqual(InternetChecksum.updated(checksum, replacing: word, with: word), checksum)
            XCTAssertEqual(InternetChecksum.updated(checksum, replacing: long, with: long), checksum)
            XCTAssertEqual(InternetChecksum.updated(checksum, replacing: wide, with: wide), checksum)
            XCTAssertEqual(InternetChecksum.updated(checksum, replacing: UInt16(0), with: UInt16(0xFFFF)), checksum)
        }
    }

    /// Checks the incremental update of the `newField.count`-byte field at `offset` against the reference
    /// recomputation of the whole data.
    private func checkUpdate(data: [UInt8], offset: Int, newField: [UInt8],
                             file: StaticString = #filePath, line: UInt = #line) {
        var changed = data
        changed.replaceSubrange(offset..<(offset + newField.count), with: newField)
        // Data that is all zeros has two checksums (RFC 1624 section 5); it never occurs in headers.
        guard changed.contains(where: { $0 != 0 }), data.contains(where: { $0 != 0 }) else { return }
        let before = ReferenceChecksum.checksum(data)
        let expected = ReferenceChecksum.checksum(changed)
        let actual: UInt16
        switch newField.count {
        case 2:
            actual = InternetChecksum.updated(before, replacing: data.readUInt16(at: offset),
                                              with: changed.readUInt16(at: offset))
        case 4:
            actual = InternetChecksum.updated(before, replacing: data.readUInt32(at: offset),
                                              with: changed.readUInt32(at: offset))
        default:
            func halves(_ bytes: [UInt8]) -> (hi: UInt64, lo: UInt64) {
                guard case .v6(let hi, let lo) = IPAddress(bytes: bytes[offset..<(offset + 16)])! else { fatalError() }
                return (hi, lo)
            }
            actual = InternetChecksum.updated(before, replacing: halves(data), with: halves(changed))
        }
        XCTAssertEqual(actual, expected, "field of \(newField.count) bytes at \(offset) in \(HexDump.compact(data)) := "
                       + HexDump.compact(newField), file: file, line: line)
    }
}
