/// The outcome of a rewrite in place (`DirectRouting`, `AddressTranslation`, `ICMPTranslation`).
public enum TranslationResult: UInt8, Sendable {
    /// The frame was rewritten in place and goes out.
    case transmit
    /// TTL / hop limit ≤ 1: the packet may not be forwarded and the frame is untouched.
    case hopLimitExceeded
}

/// Address and port translation for NAT (`ipvsadm -m`: the destination becomes the real server on the way
/// in, the source becomes the virtual service on the way out) and FULLNAT (both sides change). Same family
/// only.
public enum AddressTranslation {
    /// Rewrites the TCP or UDP frame in place: the source and/or destination address and port (nil leaves
    /// that side alone), the MACs (a VLAN tag stays), and TTL / hop limit - 1. The IPv4 header checksum and
    /// the TCP/UDP checksum are updated incrementally (RFC 1624) for the addresses (pseudo-header) and
    /// ports; an IPv4 UDP checksum of 0 ("none") stays 0, and a UDP result of 0 is sent as 0xFFFF.
    ///
    /// `parsed` must be the `.ok` result of `FrameParser.parse` for this frame with `isICMPError` false
    /// (errors go through `ICMPTranslation`), and the endpoints must have the packet's family.
    @inline(__always)
    public static func rewrite(_ frame: UnsafeMutableRawPointer, parsed: ParsedFrame, source: L4Endpoint?,
                               destination: L4Endpoint?, sourceMAC: MACAddress,
                               destinationMAC: MACAddress) -> TranslationResult {
        let ip = frame + parsed.l3Offset
        let isIPv4 = parsed.isIPv4
        guard HopLimit.allowsForwarding(ip, isIPv4: isIPv4) else { return .hopLimitExceeded }
        HopLimit.decrement(ip, isIPv4: isIPv4)

        let l4 = frame + parsed.l4Offset
        let isTCP = parsed.key.proto == IPProtocolNumber.tcp
        let checksumOffset = isTCP ? FieldOffset.TCP.checksum : FieldOffset.UDP.checksum
        let oldL4Checksum = Wire.load16(l4, checksumOffset)
        // Everything the pseudo-header and the ports add or remove, summed once (RFC 1624 eqn. 3).
        var l4Delta = ChecksumDelta()
        var ipDelta = ChecksumDelta()
        if let source {
            replaceAddress(ip, at: isIPv4 ? FieldOffset.IPv4.source : FieldOffset.IPv6.source, with: source.address,
                           isIPv4: isIPv4, ip: &ipDelta, l4: &l4Delta)
            l4Delta.replace(Wire.load16(l4, FieldOffset.TCP.sourcePort), with: source.port)
            Wire.store16(l4, FieldOffset.TCP.sourcePort, source.port)
        }
        if let destination {
            replaceAddress(ip, at: isIPv4 ? FieldOffset.IPv4.destination : FieldOffset.IPv6.destination,
                           with: destination.address, isIPv4: isIPv4, ip: &ipDelta, l4: &l4Delta)
            l4Delta.replace(Wire.load16(l4, FieldOffset.TCP.destinationPort), with: destination.port)
            Wire.store16(l4, FieldOffset.TCP.destinationPort, destination.port)
        }
        if isIPv4 {
            Wire.store16(ip, FieldOffset.IPv4.checksum, ipDelta.apply(to: Wire.load16(ip, FieldOffset.IPv4.checksum)))
        }
        if isTCP {
            Wire.store16(l4, checksumOffset, l4Delta.apply(to: oldL4Checksum))
        } else if !(isIPv4 && oldL4Checksum == 0) {
            let updated = l4Delta.apply(to: oldL4Checksum)
            Wire.store16(l4, checksumOffset, updated == 0 ? 0xFFFF : updated)
        }
        Wire.storeMACs(frame, destination: destinationMAC, source: sourceMAC)
        return .transmit
    }

    /// Stores `address` at `offset` of the IP header, recording the change for the checksums covering it.
    @inline(__always)
    static func replaceAddress(_ ip: UnsafeMutableRawPointer, at offset: Int, with address: IPAddress, isIPv4: Bool,
                               ip ipDelta: inout ChecksumDelta, l4 l4Delta: inout ChecksumDelta) {
        if isIPv4 {
            let old = Wire.load32(ip, offset)
            let new = address.v4Value
            ipDelta.replace(old, with: new)
            l4Delta.replace(old, with: new)
        } else {
            let (hi, lo) = address.v6Halves
            l4Delta.replace(Wire.load64(ip, offset), with: hi)
            l4Delta.replace(Wire.load64(ip, offset &+ 8), with: lo)
        }
        Wire.storeAddress(ip, offset, address)
    }
}

extension IPAddress {
    /// The IPv4 value (0 for IPv6).
    @inline(__always)
    var v4Value: UInt32 {
        if case .v4(let value) = self { return value }
        return 0
    }

    /// The IPv6 halves (an IPv4 address in the low half).
    @inline(__always)
    var v6Halves: (hi: UInt64, lo: UInt64) {
        switch self {
        case .v4(let value): return (0, UInt64(value))
        case .v6(let hi, let lo): return (hi, lo)
        }
    }
}
