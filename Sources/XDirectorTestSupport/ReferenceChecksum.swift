import Packet

/// A deliberately plain Internet checksum (RFC 1071), written independently of `Packet.InternetChecksum`
/// so that tests can check the data plane's code against it: byte pairs into an `Int`, carries folded at
/// the end.
public enum ReferenceChecksum {
    /// The one's complement sum of `bytes` as big-endian 16-bit words (an odd last byte is padded with a
    /// zero byte), not complemented.
    public static func onesComplementSum(_ bytes: [UInt8]) -> UInt16 {
        var sum = 0
        var index = 0
        while index < bytes.count {
            let high = Int(bytes[index])
            let low = index + 1 < bytes.count ? Int(bytes[index + 1]) : 0
            sum += high * 256 + low
            index += 2
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16)
        }
        return UInt16(sum)
    }

    /// The checksum to store in a header: the complement of the sum.
    public static func checksum(_ bytes: [UInt8]) -> UInt16 {
        ~onesComplementSum(bytes)
    }

    /// The pseudo-header bytes for a TCP/UDP checksum: IPv4 (RFC 768/793) or IPv6 (RFC 8200 8.1),
    /// chosen by the addresses' family.
    public static func pseudoHeader(source: IPAddress, destination: IPAddress, proto: UInt8, length: Int) -> [UInt8] {
        precondition(source.family == destination.family, "mixed address families")
        if source.family == .ipv4 {
            return source.bytes + destination.bytes + [0, proto] + bigEndianBytes(UInt16(length))
        }
        return source.bytes + destination.bytes + bigEndianBytes(UInt32(length)) + [0, 0, 0, proto]
    }

    /// The TCP/UDP checksum of `segment` (header with its checksum field zeroed, plus data).
    public static func l4Checksum(source: IPAddress, destination: IPAddress, proto: UInt8, segment: [UInt8]) -> UInt16 {
        checksum(pseudoHeader(source: source, destination: destination, proto: proto, length: segment.count) + segment)
    }
}

/// Big-endian bytes of an integer.
public func bigEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0..<(T.bitWidth / 8)).reversed().map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
}

/// Where the headers of an Ethernet / [802.1Q] / IPv4|IPv6 frame lie, found by straightforward byte
/// reading independent of `Packet.FrameParser`. IPv6 extension headers are not walked.
public struct FrameLayout: Equatable, Sendable {
    public var l3Offset: Int
    /// 4 or 6.
    public var family: Int
    /// IPv4 IHL × 4, or 40.
    public var ipHeaderLength: Int
    /// IPv4 total length, or 40 + payload length.
    public var ipPacketLength: Int
    /// IPv4 protocol or IPv6 next header.
    public var proto: UInt8
    public var l4Offset: Int { l3Offset + ipHeaderLength }
    public var l4Length: Int { ipPacketLength - ipHeaderLength }

    /// Nil when the frame is not IP or too short for the lengths it states.
    public init?(_ frame: [UInt8]) {
        guard frame.count >= 14 else { return nil }
        var l3 = 14
        var etherType = frame.readUInt16(at: 12)
        if etherType == 0x8100 {
            guard frame.count >= 18 else { return nil }
            etherType = frame.readUInt16(at: 16)
            l3 = 18
        }
        l3Offset = l3
        switch etherType {
        case 0x0800:
            guard frame.count >= l3 + 20 else { return nil }
            family = 4
            ipHeaderLength = Int(frame[l3] & 0x0F) * 4
            ipPacketLength = Int(frame.readUInt16(at: l3 + 2))
            proto = frame[l3 + 9]
        case 0x86DD:
            guard frame.count >= l3 + 40 else { return nil }
            family = 6
            ipHeaderLength = 40
            ipPacketLength = 40 + Int(frame.readUInt16(at: l3 + 4))
            proto = frame[l3 + 6]
        default:
            return nil
        }
        guard ipHeaderLength >= 20, ipPacketLength >= ipHeaderLength, frame.count >= l3 + ipPacketLength else {
            return nil
        }
    }

    /// The source and destination addresses.
    public func addresses(in frame: [UInt8]) -> (source: IPAddress, destination: IPAddress) {
        if family == 4 {
            return (IPAddress(bytes: frame[(l3Offset + 12)..<(l3Offset + 16)])!,
                    IPAddress(bytes: frame[(l3Offset + 16)..<(l3Offset + 20)])!)
        }
        return (IPAddress(bytes: frame[(l3Offset + 8)..<(l3Offset + 24)])!,
                IPAddress(bytes: frame[(l3Offset + 24)..<(l3Offset + 40)])!)
    }

    /// Offset of the TCP (16) or UDP (6) checksum field within the frame; nil for other protocols.
    public var l4ChecksumOffset: Int? {
        switch proto {
        case IPProtocolNumber.tcp: return l4Offset + 16
        case IPProtocolNumber.udp: return l4Offset + 6
        default: return nil
        }
    }
}

/// True when the frame is IPv4 and its header checksum verifies (computed by `ReferenceChecksum`).
/// Only the header itself must be present and sane (IHL ≥ 5); other lengths are not looked at.
public func verifyIPv4HeaderChecksum(_ frame: [UInt8]) -> Bool {
    guard let range = ipv4HeaderRange(frame) else { return false }
    return ReferenceChecksum.onesComplementSum(Array(frame[range])) == 0xFFFF
}

/// True when the frame's TCP or UDP checksum verifies over the pseudo-header and the segment the IP header
/// delimits (IPv4 or IPv6). An IPv4 UDP checksum of 0 ("no checksum") counts as valid.
public func verifyL4Checksum(_ frame: [UInt8]) -> Bool {
    guard let layout = FrameLayout(frame), let checksumOffset = layout.l4ChecksumOffset else { return false }
    guard layout.l4Length >= (layout.proto == IPProtocolNumber.tcp ? 20 : 8) else { return false }
    if layout.proto == IPProtocolNumber.udp, layout.family == 4, frame.readUInt16(at: checksumOffset) == 0 {
        return true
    }
    return payloadVerifies(frame, layout, pseudoHeaderProto: layout.proto)
}

/// Recomputes and stores the IPv4 header checksum (after a test edited the header on purpose).
/// Only the header itself must be present and its IHL ≥ 5, so lengths may be broken on purpose.
public func recomputeIPv4HeaderChecksum(in frame: inout [UInt8]) {
    guard let range = ipv4HeaderRange(frame) else { preconditionFailure("no complete IPv4 header") }
    frame.writeUInt16(0, at: range.lowerBound + 10)
    frame.writeUInt16(ReferenceChecksum.checksum(Array(frame[range])), at: range.lowerBound + 10)
}

/// Where the IPv4 header (with options) lies, by ethertype and IHL alone.
private func ipv4HeaderRange(_ frame: [UInt8]) -> Range<Int>? {
    guard frame.count >= 14 else { return nil }
    var l3 = 14
    if frame.readUInt16(at: 12) == 0x8100 {
        guard frame.count >= 18 else { return nil }
        l3 = 18
    }
    guard frame.readUInt16(at: l3 - 2) == 0x0800, frame.count >= l3 + 20 else { return nil }
    let headerLength = Int(frame[l3] & 0x0F) * 4
    guard headerLength >= 20, frame.count >= l3 + headerLength else { return nil }
    return l3..<(l3 + headerLength)
}

/// Recomputes and stores the TCP/UDP checksum (a computed UDP checksum of 0 is stored as 0xFFFF).
public func recomputeL4Checksum(in frame: inout [UInt8]) {
    guard let layout = FrameLayout(frame), let checksumOffset = layout.l4ChecksumOffset else {
        preconditionFailure("not a complete TCP/UDP frame")
    }
    frame.writeUInt16(0, at: checksumOffset)
    let segment = Array(frame[layout.l4Offset..<(layout.l3Offset + layout.ipPacketLength)])
    let (source, destination) = layout.addresses(in: frame)
    var checksum = ReferenceChecksum.l4Checksum(source: source, destination: destination,
                                                proto: layout.proto, segment: segment)
    if layout.proto == IPProtocolNumber.udp && checksum == 0 { checksum = 0xFFFF }
    frame.writeUInt16(checksum, at: checksumOffset)
}

extension Array where Element == UInt8 {
    /// The big-endian 16-bit value at `offset`.
    public func readUInt16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    /// The big-endian 32-bit value at `offset`.
    public func readUInt32(at offset: Int) -> UInt32 {
        UInt32(readUInt16(at: offset)) << 16 | UInt32(readUInt16(at: offset + 2))
    }

    /// Stores `value` big-endian at `offset`.
    public mutating func writeUInt16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(value >> 8)
        self[offset + 1] = UInt8(value & 0xFF)
    }

    /// Stores `value` big-endian at `offset`.
    public mutating func writeUInt32(_ value: UInt32, at offset: Int) {
        writeUInt16(UInt16(value >> 16), at: offset)
        writeUInt16(UInt16(value & 0xFFFF), at: offset + 2)
    }
}

/// True when the frame is ICMP (over IPv4) or ICMPv6 (over IPv6) and the message's checksum verifies over
/// the bytes the IP header delimits (ICMPv6 with its pseudo-header).
public func verifyICMPChecksum(_ frame: [UInt8]) -> Bool {
    guard let layout = FrameLayout(frame),
          layout.proto == (layout.family == 4 ? IPProtocolNumber.icmp : IPProtocolNumber.icmpv6) else { return false }
    return payloadVerifies(frame, layout, pseudoHeaderProto: layout.family == 6 ? IPProtocolNumber.icmpv6 : nil)
}

/// True when the bytes the IP header delimits after itself, after the pseudo-header for `pseudoHeaderProto`
/// when there is one, sum to 0xFFFF (their checksum verifies).
private func payloadVerifies(_ frame: [UInt8], _ layout: FrameLayout, pseudoHeaderProto: UInt8?) -> Bool {
    let payload = Array(frame[layout.l4Offset..<(layout.l3Offset + layout.ipPacketLength)])
    var pseudo: [UInt8] = []
    if let proto = pseudoHeaderProto {
        let (source, destination) = layout.addresses(in: frame)
        pseudo = ReferenceChecksum.pseudoHeader(source: source, destination: destination, proto: proto,
                                                length: payload.count)
    }
    return ReferenceChecksum.onesComplementSum(pseudo + payload) == 0xFFFF
}
