/// ICMP and ICMPv6 errors about a TCP or UDP packet: the quoted packet identifies the connection, so the
/// director can forward or translate the error like the connection's own packets (as IPVS does).
///
/// The ICMP checksum is not verified here: DR and TUN forward the error unchanged, so the receiver checks
/// it; before `ICMPTranslation.rewrite` recomputes it, the caller may check `ICMPTranslation.checksumIsValid`.
extension FrameParser {
    /// Parses the ICMP message of `messageLength` bytes at `l4` (already known to lie inside the frame).
    /// On `.ok` fills the ICMP fields and the outer key's ports and protocol; the caller fills the rest.
    @inline(__always)
    static func parseICMPError(_ frame: UnsafeRawPointer, l4: Int, messageLength: Int, isIPv6: Bool,
                               into parsed: inout ParsedFrame) -> ParseStatus {
        guard messageLength >= 1 else { return .unsupportedProtocol }
        let icmp = frame + l4
        let type = icmp.load(fromByteOffset: FieldOffset.ICMP.type, as: UInt8.self)
        guard isIPv6 ? isV6Error(type) : isV4Error(type) else { return .unsupportedProtocol }
        guard messageLength >= HeaderLength.icmp else { return .truncated }

        let innerL3 = l4 &+ HeaderLength.icmp
        let available = messageLength &- HeaderLength.icmp
        let inner = frame + innerL3
        var innerL4: Int
        var innerProto: UInt8
        if isIPv6 {
            guard available >= HeaderLength.ipv6 else { return .truncated }
            guard inner.load(fromByteOffset: 0, as: UInt8.self) >> 4 == 6 else { return .malformed }
            innerProto = inner.load(fromByteOffset: FieldOffset.IPv6.nextHeader, as: UInt8.self)
            innerL4 = HeaderLength.ipv6
        } else {
            guard available >= HeaderLength.ipv4 else { return .truncated }
            let versionIHL = inner.load(fromByteOffset: FieldOffset.IPv4.versionIHL, as: UInt8.self)
            guard versionIHL >> 4 == 4 else { return .malformed }
            innerL4 = Int(versionIHL & 0x0F) &* 4
            guard innerL4 >= HeaderLength.ipv4 else { return .malformed }
            guard available >= innerL4 else { return .truncated }
            // Only a first fragment carries the ports.
            guard Wire.load16(inner, FieldOffset.IPv4.flagsFragment) & 0x1FFF == 0 else { return .unsupportedProtocol }
            innerProto = inner.load(fromByteOffset: FieldOffset.IPv4.proto, as: UInt8.self)
        }
        guard innerProto == IPProtocolNumber.tcp || innerProto == IPProtocolNumber.udp else {
            return .unsupportedProtocol
        }
        // The quote must reach the ports (RFC 792 guarantees 8 bytes of the original datagram's data).
        guard available &- innerL4 >= 8 else { return .truncated }

        parsed.innerKey.proto = innerProto
        parsed.innerKey.srcPort = Wire.load16(inner, innerL4)
        parsed.innerKey.dstPort = Wire.load16(inner, innerL4 &+ 2)
        if isIPv6 {
            parsed.innerKey.family = IPAddress.Family.ipv6.rawValue
            parsed.innerKey.srcHi = Wire.load64(inner, FieldOffset.IPv6.source)
            parsed.innerKey.srcLo = Wire.load64(inner, FieldOffset.IPv6.source &+ 8)
            parsed.innerKey.dstHi = Wire.load64(inner, FieldOffset.IPv6.destination)
            parsed.innerKey.dstLo = Wire.load64(inner, FieldOffset.IPv6.destination &+ 8)
        } else {
            parsed.innerKey.family = IPAddress.Family.ipv4.rawValue
            parsed.innerKey.srcHi = 0
            parsed.innerKey.srcLo = UInt64(Wire.load32(inner, FieldOffset.IPv4.source))
            parsed.innerKey.dstHi = 0
            parsed.innerKey.dstLo = UInt64(Wire.load32(inner, FieldOffset.IPv4.destination))
        }
        parsed.isICMPError = true
        parsed.icmpType = type
        parsed.icmpCode = icmp.load(fromByteOffset: FieldOffset.ICMP.code, as: UInt8.self)
        parsed.innerL3Offset = innerL3
        parsed.innerL4Offset = innerL3 &+ innerL4
        parsed.key.srcPort = 0
        parsed.key.dstPort = 0
        parsed.key.proto = isIPv6 ? IPProtocolNumber.icmpv6 : IPProtocolNumber.icmp
        parsed.tcpFlags = 0
        return .ok
    }

    @inline(__always)
    static func isV4Error(_ type: UInt8) -> Bool {
        type == ICMPType.v4DestinationUnreachable || type == ICMPType.v4TimeExceeded
            || type == ICMPType.v4ParameterProblem
    }

    @inline(__always)
    static func isV6Error(_ type: UInt8) -> Bool {
        type >= ICMPType.v6DestinationUnreachable && type <= ICMPType.v6ParameterProblem
    }
}
