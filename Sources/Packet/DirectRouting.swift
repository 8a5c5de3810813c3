/// Direct routing ("gatewaying", `ipvsadm -g`): the packet keeps its IP addresses (the real server has the
/// VIP on a non-ARPing interface) and is re-addressed at layer 2 only.
public enum DirectRouting {
    /// `.transmit`, or `.hopLimitExceeded` when the packet arrived with TTL / hop limit ≤ 1 and may not be
    /// forwarded; the frame is then untouched (the caller drops it, or hands it to the kernel to send ICMP
    /// time exceeded).
    public typealias Verdict = TranslationResult

    /// Rewrites the frame in place for the real server whose MAC is `destination`, sending from the
    /// interface whose MAC is `source`:
    /// - destination MAC := `destination`, source MAC := `source`; a VLAN tag stays as it is;
    /// - IPv4: TTL - 1, header checksum updated incrementally (RFC 1624 eqn. 3);
    /// - IPv6: hop limit - 1 (no header checksum).
    /// The TCP/UDP checksum does not cover the TTL or the MACs and stays valid.
    ///
    /// `parsed` must be the `.ok` result of `FrameParser.parse` for this frame.
    @inlinable @inline(__always)
    public static func rewrite(_ frame: UnsafeMutableRawPointer, parsed: ParsedFrame,
                               source: MACAddress, destination: MACAddress) -> Verdict {
        rewrite(frame, l3Offset: parsed.l3Offset, isIPv4: parsed.isIPv4,
                addresses: EthernetAddresses(destination: destination, source: source))
    }

    /// `rewrite` given just what it reads of the parse (where the IP header starts and its family) and the
    /// MACs already in wire order (`EthernetAddresses`), as the per-packet path keeps them.
    @inlinable @inline(__always)
    public static func rewrite(_ frame: UnsafeMutableRawPointer, l3Offset: Int, isIPv4: Bool,
                               addresses: EthernetAddresses) -> Verdict {
        let ip = frame + l3Offset
        guard HopLimit.allowsForwarding(ip, isIPv4: isIPv4) else { return .hopLimitExceeded }
        HopLimit.decrement(ip, isIPv4: isIPv4)
        addresses.store(frame)
        return .transmit
    }
}
