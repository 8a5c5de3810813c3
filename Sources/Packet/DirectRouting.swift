/// Direct routing ("gatewaying", `ipvsadm -g`): the packet keeps its IP addresses (the real server has the
/// VIP on a non-ARPing interface) and is re-addressed at layer 2 only.
public enum DirectRouting {
    public enum Verdict: UInt8, Sendable {
        /// The frame was rewritten and goes out.
        case transmit
        /// The packet arrived with TTL / hop limit ≤ 1 and may not be forwarded; the frame is untouched
        /// (the caller drops it, or hands it to the kernel to send ICMP time exceeded).
        case hopLimitExceeded
    }

    /// Rewrites the frame in place for the real server whose MAC is `destination`, sending from the
    /// interface whose MAC is `source`:
    /// - destination MAC := `destination`, source MAC := `source`; a VLAN tag stays as it is;
    /// - IPv4: TTL - 1, header checksum updated incrementally (RFC 1624 eqn. 3);
    /// - IPv6: hop limit - 1 (no header checksum).
    /// The TCP/UDP checksum does not cover the TTL or the MACs and stays valid.
    ///
    /// `parsed` must be the `.ok` result of `FrameParser.parse` for this frame.
    @inline(__always)
    public static func rewrite(_ frame: UnsafeMutableRawPointer, parsed: ParsedFrame,
                               source: MACAddress, destination: MACAddress) -> Verdict {
        let ip = frame + parsed.l3Offset
        if parsed.isIPv4 {
            let ttl = ip.load(fromByteOffset: FieldOffset.IPv4.ttl, as: UInt8.self)
            guard ttl > 1 else { return .hopLimitExceeded }
            // TTL is the high byte of the 16-bit word it shares with the protocol.
            let oldWord = UInt16(bigEndian: ip.loadUnaligned(fromByteOffset: FieldOffset.IPv4.ttl, as: UInt16.self))
            let newWord = oldWord &- 0x0100
            let oldChecksum = UInt16(bigEndian: ip.loadUnaligned(fromByteOffset: FieldOffset.IPv4.checksum,
                                                                 as: UInt16.self))
            let newChecksum = InternetChecksum.updated(oldChecksum, replacing: oldWord, with: newWord)
            ip.storeBytes(of: newWord.bigEndian, toByteOffset: FieldOffset.IPv4.ttl, as: UInt16.self)
            ip.storeBytes(of: newChecksum.bigEndian, toByteOffset: FieldOffset.IPv4.checksum, as: UInt16.self)
        } else {
            let hopLimit = ip.load(fromByteOffset: FieldOffset.IPv6.hopLimit, as: UInt8.self)
            guard hopLimit > 1 else { return .hopLimitExceeded }
            ip.storeBytes(of: hopLimit &- 1, toByteOffset: FieldOffset.IPv6.hopLimit, as: UInt8.self)
        }
        destination.write(to: frame + FieldOffset.Ethernet.destination)
        source.write(to: frame + FieldOffset.Ethernet.source)
        return .transmit
    }
}
