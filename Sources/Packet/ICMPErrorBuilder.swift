/// ICMP errors the director itself sends back to a packet's sender.
public enum ICMPErrorBuilder {
    /// The most an ICMPv4 error may be (RFC 1812 4.3.2.3: quote as much as fits in 576 bytes).
    public static let ipv4Limit = 576
    /// The most an ICMPv6 error may be (RFC 4443 2.4(c): as much as fits in the minimum MTU).
    public static let ipv6Limit = 1280

    /// Turns the frame in place into the error for the packet it holds, addressed to the packet's sender:
    /// IPv4 "destination unreachable, fragmentation needed" (type 3 code 4) with the next-hop `mtu`, or
    /// ICMPv6 "packet too big" (type 2) with `mtu`; from `source`, TTL / hop limit 64, quoting the original
    /// IP packet from its header on, cut to fit 576 / 1280 bytes. Ethernet: to the frame's old source MAC,
    /// from `sourceMAC`, the VLAN tag kept. Returns the new frame length, or 0 when no error may be sent
    /// because the packet is itself an ICMP error (RFC 1122 3.2.2, RFC 4443 2.4(e)): drop it then.
    ///
    /// Reads only the first `length` bytes; writes up to 18 + 1280 bytes (the frame buffer is larger).
    /// `parsed` must be the `.ok` result of `FrameParser.parse` for this frame.
    @inline(__always)
    public static func packetTooBig(_ frame: UnsafeMutableRawPointer, length: Int, parsed: ParsedFrame, mtu: Int,
                                    source: IPAddress, sourceMAC: MACAddress) -> Int {
        guard !parsed.isICMPError else { return 0 }
        let l3 = parsed.l3Offset
        let isIPv4 = parsed.isIPv4
        let ip = frame + l3
        let ipHeaderLength = isIPv4 ? HeaderLength.ipv4 : HeaderLength.ipv6
        let limit = isIPv4 ? ipv4Limit : ipv6Limit
        let quoteLength = min(parsed.ipPacketLength, limit &- ipHeaderLength &- HeaderLength.icmp, length &- l3)

        let sender = MACAddress(value: UInt64(Wire.load32(frame, FieldOffset.Ethernet.source)) << 16
                                    | UInt64(Wire.load16(frame, FieldOffset.Ethernet.source &+ 4)))
        // Flat addresses: the sender's straight from the key, ours read once (IPv4 in the low half).
        let destination = (hi: parsed.key.srcHi, lo: parsed.key.srcLo)
        let sourceHalves = source.v6Halves
        // The quote goes after the new IP and ICMP headers; memmove copes with the overlap.
        let message = ip + ipHeaderLength
        (message + HeaderLength.icmp).copyMemory(from: UnsafeRawPointer(ip), byteCount: quoteLength)
        let messageLength = HeaderLength.icmp &+ quoteLength

        if isIPv4 {
            // Precedence "internetwork control" (0xC0), as routers send their ICMP.
            Wire.storeIPv4Header(ip, totalLength: HeaderLength.ipv4 &+ messageLength, tos: 0xC0, identification: 0,
                                 dontFragment: false, ttl: 64, proto: IPProtocolNumber.icmp,
                                 source: UInt32(truncatingIfNeeded: sourceHalves.lo),
                                 destination: UInt32(truncatingIfNeeded: destination.lo))
            Wire.store8(message, FieldOffset.ICMP.type, ICMPType.v4DestinationUnreachable)
            Wire.store8(message, FieldOffset.ICMP.code, ICMPType.v4FragmentationNeededCode)
            Wire.store32(message, FieldOffset.ICMP.rest, UInt32(UInt16(clamping: mtu)))
        } else {
            Wire.storeIPv6Header(ip, payloadLength: messageLength, trafficClass: 0, flowLabel: 0, hopLimit: 64,
                                 nextHeader: IPProtocolNumber.icmpv6, source: sourceHalves, destination: destination)
            Wire.store8(message, FieldOffset.ICMP.type, ICMPType.v6PacketTooBig)
            Wire.store8(message, FieldOffset.ICMP.code, 0)
            Wire.store32(message, FieldOffset.ICMP.rest, UInt32(clamping: mtu))
        }
        Wire.store16(message, FieldOffset.ICMP.checksum, 0)
        let pseudo = isIPv4 ? 0 : InternetChecksum.pseudoHeaderSum(ipv6Source: sourceHalves,
                                                                   destination: destination,
                                                                   proto: IPProtocolNumber.icmpv6, length: messageLength)
        Wire.store16(message, FieldOffset.ICMP.checksum,
                     InternetChecksum.checksum(message, count: messageLength, initial: pseudo))
        // The IP header stays where it was, so the VLAN tag and the ethertype are already right.
        Wire.storeMACs(frame, destination: sender, source: sourceMAC)
        return l3 &+ ipHeaderLength &+ messageLength
    }
}
