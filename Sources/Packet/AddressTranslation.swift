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
    @inlinable @inline(__always)
    public static func rewrite(_ frame: UnsafeMutableRawPointer, parsed: ParsedFrame, source: L4Endpoint?,
                               destination: L4Endpoint?, sourceMAC: MACAddress,
                               destinationMAC: MACAddress) -> TranslationResult {
        rewrite(frame, l3Offset: parsed.l3Offset, l4Offset: parsed.l4Offset, isIPv4: parsed.isIPv4,
                isTCP: parsed.key.proto == IPProtocolNumber.tcp, source: source, destination: destination,
                addresses: EthernetAddresses(destination: destinationMAC, source: sourceMAC))
    }

    /// `rewrite` given just what it reads of the parse: where the IP and TCP/UDP headers start, the family
    /// and whether it is TCP (else UDP), and the MACs in wire order. The per-packet path passes these rather
    /// than the whole parse. Transparent, as the engine's path into it is: the optimizer may otherwise leave
    /// it a call.
    @_transparent
    public static func rewrite(_ frame: UnsafeMutableRawPointer, l3Offset: Int, l4Offset: Int, isIPv4: Bool,
                               isTCP: Bool, source: L4Endpoint?, destination: L4Endpoint?,
                               addresses: EthernetAddresses) -> TranslationResult {
        let ip = frame + l3Offset
        guard HopLimit.allowsForwarding(ip, isIPv4: isIPv4) else { return .hopLimitExceeded }

        let l4 = frame + l4Offset
        let checksumOffset = isTCP ? FieldOffset.TCP.checksum : FieldOffset.UDP.checksum
        // The addresses count in the IPv4 header checksum and in the pseudo-header; the TCP/UDP checksum
        // also covers the ports. One delta, summed once (RFC 1624 eqn. 3), serves both.
        var delta = replaceAddressesDecrementingTTL(ip, isIPv4: isIPv4, source: source?.address,
                                                    destination: destination?.address)
        if let source { delta.store(source.port, l4, FieldOffset.TCP.sourcePort) }
        if let destination { delta.store(destination.port, l4, FieldOffset.TCP.destinationPort) }
        if isTCP {
            delta.apply(at: l4, checksumOffset)
        } else {
            delta.applyUDP(at: l4, checksumOffset, zeroMeansNone: isIPv4)
        }
        addresses.store(frame)
        return .transmit
    }

    /// Rewrites a later fragment (`FrameParser`'s `.fragment`: no TCP/UDP header) of a datagram whose first
    /// fragment `rewrite` translated: the same addresses (nil leaves that side alone), the MACs, TTL / hop
    /// limit - 1, the IPv4 header checksum updated incrementally. Nothing else: the TCP/UDP checksum, in the
    /// first fragment, covers the whole datagram and already took the whole change.
    @inline(__always)
    public static func rewriteFragment(_ frame: UnsafeMutableRawPointer, parsed: ParsedFrame, source: IPAddress?,
                                       destination: IPAddress?, sourceMAC: MACAddress,
                                       destinationMAC: MACAddress) -> TranslationResult {
        let ip = frame + parsed.l3Offset
        let isIPv4 = parsed.isIPv4
        guard HopLimit.allowsForwarding(ip, isIPv4: isIPv4) else { return .hopLimitExceeded }
        _ = replaceAddressesDecrementingTTL(ip, isIPv4: isIPv4, source: source, destination: destination)
        Wire.storeMACs(frame, destination: destinationMAC, source: sourceMAC)
        return .transmit
    }

    /// Stores the source and/or destination address (nil leaves that side alone) in the IP header at `ip`
    /// and decrements its TTL or hop limit (the caller checked `HopLimit.allowsForwarding`), updating an IPv4
    /// header checksum once for both; returns the addresses' change, for a pseudo-header checksum to take.
    @inlinable @inline(__always)
    static func replaceAddressesDecrementingTTL(_ ip: UnsafeMutableRawPointer, isIPv4: Bool, source: IPAddress?,
                                                destination: IPAddress?) -> ChecksumDelta {
        var delta = ChecksumDelta()
        if let source {
            replaceAddress(ip, at: isIPv4 ? FieldOffset.IPv4.source : FieldOffset.IPv6.source, with: source,
                           isIPv4: isIPv4, delta: &delta)
        }
        if let destination {
            replaceAddress(ip, at: isIPv4 ? FieldOffset.IPv4.destination : FieldOffset.IPv6.destination,
                           with: destination, isIPv4: isIPv4, delta: &delta)
        }
        if isIPv4 {
            // The TTL is in the header but not in the pseudo-header: it joins the header's delta only.
            var header = delta
            header.decrementTTL()
            Wire.store8(ip, FieldOffset.IPv4.ttl, Wire.load8(ip, FieldOffset.IPv4.ttl) &- 1)
            header.apply(at: ip, FieldOffset.IPv4.checksum)
        } else {
            Wire.store8(ip, FieldOffset.IPv6.hopLimit, Wire.load8(ip, FieldOffset.IPv6.hopLimit) &- 1)
        }
        return delta
    }

    /// Stores `address` at `offset` of the IP header, adding the change to `delta` (in wire order).
    @inlinable @inline(__always)
    static func replaceAddress(_ ip: UnsafeMutableRawPointer, at offset: Int, with address: IPAddress, isIPv4: Bool,
                               delta: inout ChecksumDelta) {
        // The flat form: an IPv4 address is the low half (the family is the packet's, known already).
        let (hi, lo) = address.v6Halves
        if isIPv4 {
            delta.store(UInt32(truncatingIfNeeded: lo), ip, offset)
        } else {
            delta.store(hi, ip, offset)
            delta.store(lo, ip, offset &+ 8)
        }
    }
}
