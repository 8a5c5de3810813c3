/// ICMP and ICMPv6 errors about a TCP or UDP packet: the quoted packet identifies the connection, so the
/// director can forward or translate the error like the connection's own packets (as IPVS does).
///
/// The ICMP checksum is not verified here: DR and TUN forward the error unchanged, so the receiver checks
/// it; before `ICMPTranslation.rewrite` recomputes it, the caller may check `ICMPTranslation.checksumIsValid`.
extension FrameParser {
    /// Parses the ICMP message of `messageLength` bytes at `l4` (already known to lie inside the frame).
    /// On `.ok` fills the ICMP fields and the outer key's ports and protocol; the caller fills the rest.
    // Not inlined into `parse`'s callers: ICMP errors are rare, and the common path stays short.
    @usableFromInline @inline(never)
    static func parseICMPError(_ frame: UnsafeRawPointer, l4: Int, messageLength: Int, isIPv4: Bool,
                               into parsed: inout ParsedFrame) -> ParseStatus {
        guard messageLength >= 1 else { return .unsupportedProtocol }
        let icmp = frame + l4
        let type = Wire.load8(icmp, FieldOffset.ICMP.type)
        guard isIPv4 ? isV4Error(type) : isV6Error(type) else { return .unsupportedProtocol }
        guard messageLength >= HeaderLength.icmp else { return .truncated }

        let innerL3 = l4 &+ HeaderLength.icmp
        let available = messageLength &- HeaderLength.icmp
        let inner = frame + innerL3
        let (headerStatus, innerHeaderLength, innerProto) = parseIPHeader(inner, available: available, isIPv4: isIPv4)
        guard headerStatus == .ok else { return headerStatus }
        // Only a first fragment carries the ports (a quoted IPv6 fragment header is not TCP/UDP below).
        if isIPv4 {
            guard Wire.load16(inner, FieldOffset.IPv4.flagsFragment) & 0x1FFF == 0 else { return .unsupportedProtocol }
        }
        guard innerProto == IPProtocolNumber.tcp || innerProto == IPProtocolNumber.udp else {
            return .unsupportedProtocol
        }
        // The quote must reach the ports (RFC 792 guarantees 8 bytes of the original datagram's data).
        guard available &- innerHeaderLength >= 8 else { return .truncated }

        parsed.innerKey.proto = innerProto
        parsed.innerKey.srcPort = Wire.load16(inner, innerHeaderLength)
        parsed.innerKey.dstPort = Wire.load16(inner, innerHeaderLength &+ 2)
        loadAddresses(inner, isIPv4: isIPv4, into: &parsed.innerKey)
        parsed.isICMPError = true
        parsed.icmpType = type
        parsed.icmpCode = Wire.load8(icmp, FieldOffset.ICMP.code)
        parsed.innerL3Offset = innerL3
        parsed.innerL4Offset = innerL3 &+ innerHeaderLength
        parsed.key.srcPort = 0
        parsed.key.dstPort = 0
        parsed.key.proto = isIPv4 ? IPProtocolNumber.icmp : IPProtocolNumber.icmpv6
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
