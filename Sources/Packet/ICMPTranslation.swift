/// Translation of an ICMP/ICMPv6 error about a translated (NAT/FULLNAT) connection: the outer addresses
/// and the quoted packet's addresses and ports change the way the connection's own packets do.
public enum ICMPTranslation {
    /// Rewrites the ICMP error in place:
    /// - outer source/destination address when given; TTL / hop limit - 1; IPv4 header checksum updated;
    /// - the quoted packet's source/destination address and port when given, its IPv4 header checksum
    ///   updated (its TCP/UDP checksum is left alone, as IPVS does: it may cover bytes the quote lacks);
    /// - the ICMP checksum recomputed over the whole message (ICMPv6: with the new pseudo-header);
    /// - the MACs (a VLAN tag stays).
    ///
    /// `parsed` must be the `.ok` result of `FrameParser.parse` for this frame of `length` bytes with
    /// `isICMPError` true, and every address must have the packet's family.
    @inline(__always)
    public static func rewrite(_ frame: UnsafeMutableRawPointer, length: Int, parsed: ParsedFrame,
                               outerSource: IPAddress?, outerDestination: IPAddress?,
                               innerSource: L4Endpoint?, innerDestination: L4Endpoint?,
                               sourceMAC: MACAddress, destinationMAC: MACAddress) -> TranslationResult {
        let ip = frame + parsed.l3Offset
        let isIPv4 = parsed.isIPv4
        guard HopLimit.allowsForwarding(ip, isIPv4: isIPv4) else { return .hopLimitExceeded }
        HopLimit.decrement(ip, isIPv4: isIPv4)

        // The deltas fix the IPv4 header checksums only: the ICMP message is summed afresh below.
        var outerDelta = ChecksumDelta()
        let sourceOffset = isIPv4 ? FieldOffset.IPv4.source : FieldOffset.IPv6.source
        let destinationOffset = isIPv4 ? FieldOffset.IPv4.destination : FieldOffset.IPv6.destination
        if let outerSource {
            AddressTranslation.replaceAddress(ip, at: sourceOffset, with: outerSource, isIPv4: isIPv4,
                                              delta: &outerDelta)
        }
        if let outerDestination {
            AddressTranslation.replaceAddress(ip, at: destinationOffset, with: outerDestination, isIPv4: isIPv4,
                                              delta: &outerDelta)
        }
        if isIPv4 {
            outerDelta.apply(at: ip, FieldOffset.IPv4.checksum)
        }

        let inner = frame + parsed.innerL3Offset
        let innerL4 = frame + parsed.innerL4Offset
        var innerDelta = ChecksumDelta()
        if let innerSource {
            AddressTranslation.replaceAddress(inner, at: sourceOffset, with: innerSource.address, isIPv4: isIPv4,
                                              delta: &innerDelta)
            Wire.store16(innerL4, FieldOffset.TCP.sourcePort, innerSource.port)
        }
        if let innerDestination {
            AddressTranslation.replaceAddress(inner, at: destinationOffset, with: innerDestination.address,
                                              isIPv4: isIPv4, delta: &innerDelta)
            Wire.store16(innerL4, FieldOffset.TCP.destinationPort, innerDestination.port)
        }
        if isIPv4 {
            innerDelta.apply(at: inner, FieldOffset.IPv4.checksum)
        }

        // Summed afresh over the translated message, with the translated outer addresses.
        var key = parsed.key
        FrameParser.loadAddresses(ip, isIPv4: isIPv4, into: &key)
        Wire.store16(frame + parsed.l4Offset, FieldOffset.ICMP.checksum, 0)
        Wire.store16(frame + parsed.l4Offset, FieldOffset.ICMP.checksum,
                     messageChecksum(frame, parsed: parsed, key: key))
        Wire.storeMACs(frame, destination: destinationMAC, source: sourceMAC)
        return .transmit
    }

    /// True when the ICMP/ICMPv6 checksum of the parsed ICMP message verifies (a full pass over it; IPVS
    /// drops errors that fail this before translating them, since translation would make them valid).
    @inline(__always)
    public static func checksumIsValid(_ frame: UnsafeRawPointer, parsed: ParsedFrame) -> Bool {
        messageChecksum(frame, parsed: parsed, key: parsed.key) == 0
    }

    /// The checksum over the ICMP message, with the ICMPv6 pseudo-header of `key`'s addresses.
    @inline(__always)
    static func messageChecksum(_ frame: UnsafeRawPointer, parsed: ParsedFrame, key: FlowKey) -> UInt16 {
        let count = parsed.l4Length
        let initial = parsed.isIPv4 ? 0 : InternetChecksum.pseudoHeaderSum(key, length: count)
        return InternetChecksum.checksum(frame + parsed.l4Offset, count: count, initial: initial)
    }
}
