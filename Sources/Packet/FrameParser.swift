/// What `FrameParser.parse` concluded about a frame. The raw values index per-worker counters, so keep the
/// cases in this order and add new ones at the end.
public enum ParseStatus: UInt8, CaseIterable, Sendable {
    /// Ethernet (+ at most one 802.1Q tag) / IPv4 or IPv6 / TCP or UDP, all consistent; or an ICMP/ICMPv6
    /// error (`ParsedFrame.isICMPError`) quoting the IP header and the ports of a TCP or UDP packet.
    case ok
    /// The frame is shorter than the headers it announces (including an IP total or payload length that
    /// reaches past the end of the frame), or an ICMP error whose quoted packet is cut short before the
    /// end of its IP header or of its ports.
    case truncated
    /// The ethertype is not IPv4 or IPv6 (after an optional single VLAN tag; a second tag counts as not IP).
    case notIP
    /// A later fragment (IPv4 fragment offset > 0; IPv6 fragment header with offset > 0) of a TCP or UDP
    /// datagram: it has no ports. `key` holds the addresses, protocol and family (ports 0), `fragmentID` the
    /// datagram's identification, `l4Offset` where the fragment's data starts.
    case fragment
    /// IP, but the layer 4 protocol is not TCP or UDP: ICMP and ICMPv6 other than the errors above (echo,
    /// ...), errors quoting anything but TCP/UDP (or a non-first IPv4 fragment), fragments of anything but
    /// TCP/UDP, and for IPv6 any extension header other than the fragment header (hop-by-hop, routing,
    /// destination options, ...) and anything but TCP/UDP behind a fragment header.
    case unsupportedProtocol
    /// Bad IP version, IPv4 IHL < 5, an IP length shorter than the headers it must contain, TCP data
    /// offset < 5, a UDP length outside 8...IP payload length; in an ICMP error's quoted packet, a bad IP
    /// version or IPv4 IHL < 5.
    case malformed
    /// The IPv4 header checksum does not verify.
    case badIPv4Checksum
    /// The first fragment (offset 0, more to come) of a TCP or UDP datagram: everything `.ok` gives, with
    /// `fragmentID` set. Its UDP length counts the whole datagram, so it may exceed the fragment.
    case firstFragment
}

/// The facts about a frame that the data plane needs, filled in by `FrameParser.parse`. Only meaningful
/// when `parse` returned `.ok`, `.firstFragment` or `.fragment` (see each); after another status its fields
/// are unspecified.
public struct ParsedFrame: Sendable {
    /// The 5-tuple; ports in host order. For an ICMP error, the outer addresses with ports 0 and protocol
    /// 1 or 58.
    public var key: FlowKey
    /// Offset of the IP header: 14, or 18 with a VLAN tag.
    public var l3Offset: Int
    /// Offset of the TCP, UDP, or ICMP/ICMPv6 header.
    public var l4Offset: Int
    /// IPv4 total length, or 40 + IPv6 payload length. The frame may be longer (Ethernet padding).
    public var ipPacketLength: Int
    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...); 0 for UDP and ICMP.
    public var tcpFlags: UInt8

    // ICMP errors. The fields below, `fragmentID` aside, are meaningful only when `isICMPError` is true.

    /// ICMP types 3, 11, 12 or ICMPv6 types 1, 2, 3, 4 quoting a TCP or UDP packet.
    public var isICMPError: Bool
    public var icmpType: UInt8
    public var icmpCode: UInt8
    /// `.firstFragment` and `.fragment`: the datagram's identification (IPv4: 16 bits; IPv6: the fragment
    /// header's 32 bits). Its fragments share it with their addresses and protocol. (Declared here, it fills
    /// the padding before the offsets below: the struct stays 128 bytes, which the engine copies inline.)
    public var fragmentID: UInt32
    /// Offset of the quoted IP header (`l4Offset + 8`).
    public var innerL3Offset: Int
    /// Offset of the quoted TCP or UDP header, of which at least the 8 bytes with the ports are present.
    public var innerL4Offset: Int
    /// The quoted packet's tuple exactly as it was sent (its source is the director's side of the flow
    /// when the error answers one of the director's packets); ports in host order.
    public var innerKey: FlowKey

    public init() {
        key = FlowKey()
        l3Offset = 0
        l4Offset = 0
        ipPacketLength = 0
        tcpFlags = 0
        fragmentID = 0
        isICMPError = false
        icmpType = 0
        icmpCode = 0
        innerL3Offset = 0
        innerL4Offset = 0
        innerKey = FlowKey()
    }

    /// True for IPv4, false for IPv6.
    @inline(__always)
    public var isIPv4: Bool { key.family == IPAddress.Family.ipv4.rawValue }

    /// Length of the layer 4 segment (TCP or UDP header plus data), as the IP header states it.
    @inline(__always)
    public var l4Length: Int { l3Offset &+ ipPacketLength &- l4Offset }
}

/// Parses Ethernet / [802.1Q] / IPv4|IPv6 / TCP|UDP frames, and ICMP errors about TCP/UDP, in place.
///
/// The parser accepts the same frames as the XDP program's own parsing: one optional VLAN tag, IPv4 with or
/// without options, and IPv6 when TCP or UDP directly follows the fixed header or a fragment header right
/// after it (the only extension header walked, as the program does). Other IPv6 extension headers are
/// `.unsupportedProtocol`, so both sides agree. A fragment is `.firstFragment` (with its ports) or
/// `.fragment` (without); an IPv6 atomic fragment (offset 0, no more) is a whole packet and `.ok`.
///
/// Checks run outside-in: each header's length is checked before any of its fields is read, then its
/// fields are validated, then the next header is located. IP lengths are checked before the protocol, so a
/// fragment or ICMP packet whose IP header is inconsistent is reported as `.truncated`/`.malformed`.
public enum FrameParser {
    /// Parses the frame of `length` bytes at `frame` into `parsed`. Reads only within
    /// `[frame, frame + length)`, never traps, allocates nothing.
    ///
    /// `verifyingIPv4Checksum` false leaves the IPv4 header checksum to the caller (`ipv4HeaderIsValid`),
    /// which checks it only where it must (the data plane: where a packet creates state).
    @inlinable @inline(__always)
    public static func parse(_ frame: UnsafeRawPointer, length: Int, into parsed: inout ParsedFrame,
                             verifyingIPv4Checksum: Bool = true) -> ParseStatus {
        guard length >= HeaderLength.ethernet else { return .truncated }
        var l3 = HeaderLength.ethernet
        var etherType = Wire.load16(frame, FieldOffset.Ethernet.etherType)
        if etherType == EtherType.vlan {
            guard length >= HeaderLength.ethernet &+ HeaderLength.vlanTag else { return .truncated }
            etherType = Wire.load16(frame, FieldOffset.Ethernet.etherType &+ HeaderLength.vlanTag)
            l3 = HeaderLength.ethernet &+ HeaderLength.vlanTag
        }
        guard etherType == EtherType.ipv4 || etherType == EtherType.ipv6 else { return .notIP }
        return parseIP(frame, length: length, l3: l3, isIPv4: etherType == EtherType.ipv4, into: &parsed,
                       verifyingIPv4Checksum: verifyingIPv4Checksum)
    }

    /// What `parse` gives for a frame the XDP program has described (its metadata): a whole TCP or UDP packet
    /// (`.ok`, not an ICMP error) that passed every check `parse` makes, with its IP header at `l3`, its TCP or
    /// UDP header at `l4`, `packetLength` bytes of IP packet. Only loads, after the few bounds that keep what
    /// the engine then reads and writes inside the frame, whatever the description says (the IP header, and
    /// a whole TCP header, else a UDP one, inside the IP packet inside the frame); false (nothing to trust)
    /// when they fail.
    @inlinable @inline(__always)
    public static func load(described frame: UnsafeRawPointer, length: Int, l3: Int, l4: Int, packetLength: Int,
                            proto: UInt8, isIPv4: Bool, into parsed: inout ParsedFrame) -> Bool {
        guard l4 >= l3 &+ (isIPv4 ? HeaderLength.ipv4 : HeaderLength.ipv6),
              l4 &+ (proto == IPProtocolNumber.tcp ? HeaderLength.tcp : HeaderLength.udp) <= l3 &+ packetLength,
              l3 &+ packetLength <= length else { return false }
        loadAddressesOnly(frame + l3, isIPv4: isIPv4, into: &parsed.key)
        parsed.key.portsAndProtocol = FlowKey.portsAndProtocol(
            ports: Wire.loadPorts(frame, l4), proto: proto,
            family: isIPv4 ? IPAddress.Family.ipv4.rawValue : IPAddress.Family.ipv6.rawValue)
        parsed.tcpFlags = proto == IPProtocolNumber.tcp ? Wire.load8(frame, l4 &+ FieldOffset.TCP.flags) : 0
        parsed.isICMPError = false
        parsed.l3Offset = l3
        parsed.l4Offset = l4
        parsed.ipPacketLength = packetLength
        return true
    }

    /// Whether the IPv4 header of a frame `parse` accepted has a valid header checksum (true for IPv6).
    @inlinable @inline(__always)
    public static func ipv4HeaderIsValid(_ frame: UnsafeRawPointer, parsed: ParsedFrame) -> Bool {
        guard parsed.isIPv4 else { return true }
        let header = frame + parsed.l3Offset, count = parsed.l4Offset &- parsed.l3Offset
        if count == HeaderLength.ipv4 {
            // Most headers (no options): five words summed straight, no loop. A plain 64-bit sum is
            // congruent to the one's complement one (2^32 ≡ 1 mod 0xFFFF); valid when it folds to 0xFFFF.
            let sum = UInt64(Wire.load32(header, 0)) &+ UInt64(Wire.load32(header, 4)) &+ UInt64(Wire.load32(header, 8))
                &+ UInt64(Wire.load32(header, 12)) &+ UInt64(Wire.load32(header, 16))
            return InternetChecksum.fold(sum) == 0xFFFF
        }
        return InternetChecksum.checksum(header, count: count) == 0
    }

    @inlinable @inline(__always)
    static func parseIP(_ frame: UnsafeRawPointer, length: Int, l3: Int, isIPv4: Bool,
                        into parsed: inout ParsedFrame, verifyingIPv4Checksum: Bool = true) -> ParseStatus {
        let ip = frame + l3
        let available = length &- l3
        let (headerStatus, headerLength, proto) = parseIPHeader(ip, available: available, isIPv4: isIPv4)
        guard headerStatus == .ok else { return headerStatus }
        let packetLength: Int
        if isIPv4 {
            packetLength = Int(Wire.load16(ip, FieldOffset.IPv4.totalLength))
            guard packetLength >= headerLength else { return .malformed }
            guard available >= packetLength else { return .truncated }
            guard !verifyingIPv4Checksum || InternetChecksum.checksum(ip, count: headerLength) == 0 else {
                return .badIPv4Checksum
            }
            // MF (0x2000) or a non-zero offset (low 13 bits): a fragment, parsed apart. DF (0x4000) is fine.
            guard Wire.load16(ip, FieldOffset.IPv4.flagsFragment) & 0x3FFF == 0 else {
                return parseFragment(frame, l3: l3, isIPv4: true, headerLength: headerLength, packetLength: packetLength,
                                     into: &parsed)
            }
        } else {
            packetLength = HeaderLength.ipv6 &+ Int(Wire.load16(ip, FieldOffset.IPv6.payloadLength))
            guard available >= packetLength else { return .truncated }
            // Only a fragment header directly after the fixed header is walked (see the type's comment).
            if proto == IPv6NextHeader.fragment {
                return parseFragment(frame, l3: l3, isIPv4: false, headerLength: headerLength, packetLength: packetLength,
                                     into: &parsed)
            }
        }

        let l4 = l3 &+ headerLength
        let segmentLength = packetLength &- headerLength
        let status = proto == (isIPv4 ? IPProtocolNumber.icmp : IPProtocolNumber.icmpv6)
            ? parseICMPError(frame, l4: l4, messageLength: segmentLength, isIPv4: isIPv4, into: &parsed)
            : parseL4(frame, l4: l4, segmentLength: segmentLength, proto: proto, into: &parsed)
        guard status == .ok else { return status }
        loadAddresses(ip, isIPv4: isIPv4, into: &parsed.key)
        parsed.l3Offset = l3
        parsed.l4Offset = l4
        parsed.ipPacketLength = packetLength
        return .ok
    }

    /// A fragment (IPv4 MF or offset; an IPv6 fragment header after the fixed one), whose IP header of
    /// `headerLength` bytes and length `packetLength` are checked: `.firstFragment` with its ports, `.fragment`
    /// without (see `ParseStatus`), `.ok` for an IPv6 atomic fragment (a whole packet). Apart from `parseIP`,
    /// so whole packets take the same path as before fragments were forwarded.
    @usableFromInline @inline(never)
    static func parseFragment(_ frame: UnsafeRawPointer, l3: Int, isIPv4: Bool, headerLength fixedLength: Int,
                              packetLength: Int, into parsed: inout ParsedFrame) -> ParseStatus {
        let ip = frame + l3
        var headerLength = fixedLength
        let proto: UInt8
        let first: Bool, atomic: Bool
        if isIPv4 {
            proto = Wire.load8(ip, FieldOffset.IPv4.proto)
            first = Wire.load16(ip, FieldOffset.IPv4.flagsFragment) & 0x1FFF == 0
            atomic = false
            parsed.fragmentID = UInt32(Wire.load16(ip, FieldOffset.IPv4.identification))
        } else {
            guard packetLength >= HeaderLength.ipv6 &+ HeaderLength.ipv6Fragment else { return .malformed }
            let header = ip + HeaderLength.ipv6
            proto = Wire.load8(header, FieldOffset.IPv6Fragment.nextHeader)
            headerLength = HeaderLength.ipv6 &+ HeaderLength.ipv6Fragment
            let offsetFlags = Wire.load16(header, FieldOffset.IPv6Fragment.offsetFlags)
            first = offsetFlags >> 3 == 0
            atomic = offsetFlags & 0xFFF9 == 0  // neither an offset (high 13 bits) nor M (bit 0)
            parsed.fragmentID = Wire.load32(header, FieldOffset.IPv6Fragment.identification)
        }
        // Only TCP and UDP datagrams are forwarded piecewise (and, behind a fragment header, only they at all:
        // what the program steers).
        guard proto == IPProtocolNumber.tcp || proto == IPProtocolNumber.udp else { return .unsupportedProtocol }
        loadAddresses(ip, isIPv4: isIPv4, into: &parsed.key)
        parsed.l3Offset = l3
        parsed.l4Offset = l3 &+ headerLength
        parsed.ipPacketLength = packetLength
        guard first else {
            parsed.key.srcPort = 0
            parsed.key.dstPort = 0
            parsed.key.proto = proto
            parsed.tcpFlags = 0
            parsed.isICMPError = false
            return .fragment
        }
        let status = parseL4(frame, l4: l3 &+ headerLength, segmentLength: packetLength &- headerLength, proto: proto,
                             isFirstFragment: !atomic, into: &parsed)
        guard status == .ok else { return status }
        return atomic ? .ok : .firstFragment
    }

    /// Checks the IP header at `ip`, of which `available` bytes lie in the frame, as far as a packet's own
    /// header and a header quoted in an ICMP error agree: the fixed part fits, the version is right, and an
    /// IPv4 IHL is at least 5 with all of its options present. On `.ok` also returns the header length and
    /// the protocol (IPv4) or next header (IPv6).
    @inlinable @inline(__always)
    static func parseIPHeader(_ ip: UnsafeRawPointer, available: Int,
                              isIPv4: Bool) -> (status: ParseStatus, headerLength: Int, proto: UInt8) {
        if isIPv4 {
            guard available >= HeaderLength.ipv4 else { return (.truncated, 0, 0) }
            let versionIHL = Wire.load8(ip, FieldOffset.IPv4.versionIHL)
            guard versionIHL >> 4 == 4 else { return (.malformed, 0, 0) }
            let headerLength = Int(versionIHL & 0x0F) &* 4
            guard headerLength >= HeaderLength.ipv4 else { return (.malformed, 0, 0) }
            guard available >= headerLength else { return (.truncated, 0, 0) }
            return (.ok, headerLength, Wire.load8(ip, FieldOffset.IPv4.proto))
        }
        guard available >= HeaderLength.ipv6 else { return (.truncated, 0, 0) }
        guard Wire.load8(ip, 0) >> 4 == 6 else { return (.malformed, 0, 0) }
        return (.ok, HeaderLength.ipv6, Wire.load8(ip, FieldOffset.IPv6.nextHeader))
    }

    /// Reads the source and destination addresses of the IP header at `ip` into `key`, with its family.
    @inlinable @inline(__always)
    static func loadAddresses(_ ip: UnsafeRawPointer, isIPv4: Bool, into key: inout FlowKey) {
        key.family = isIPv4 ? IPAddress.Family.ipv4.rawValue : IPAddress.Family.ipv6.rawValue
        loadAddressesOnly(ip, isIPv4: isIPv4, into: &key)
    }

    /// `loadAddresses` without the family (the caller writes `portsAndProtocol` whole).
    @inlinable @inline(__always)
    static func loadAddressesOnly(_ ip: UnsafeRawPointer, isIPv4: Bool, into key: inout FlowKey) {
        if isIPv4 {
            key.srcHi = 0
            key.srcLo = UInt64(Wire.load32(ip, FieldOffset.IPv4.source))
            key.dstHi = 0
            key.dstLo = UInt64(Wire.load32(ip, FieldOffset.IPv4.destination))
        } else {
            key.srcHi = Wire.load64(ip, FieldOffset.IPv6.source)
            key.srcLo = Wire.load64(ip, FieldOffset.IPv6.source &+ 8)
            key.dstHi = Wire.load64(ip, FieldOffset.IPv6.destination)
            key.dstLo = Wire.load64(ip, FieldOffset.IPv6.destination &+ 8)
        }
    }

    /// Validates the TCP or UDP header at `l4`, whose IP header says the segment is `segmentLength` bytes.
    /// The caller has already checked that the whole segment lies inside the frame, so a header that does
    /// not fit in `segmentLength` is an inconsistency (`.malformed`), not a truncation. A first fragment
    /// must hold the whole TCP or UDP header (RFC 1858: no tiny fragments); its UDP length is the datagram's.
    @inlinable @inline(__always)
    static func parseL4(_ frame: UnsafeRawPointer, l4: Int, segmentLength: Int, proto: UInt8,
                        isFirstFragment: Bool = false, into parsed: inout ParsedFrame) -> ParseStatus {
        let header = frame + l4
        if proto == IPProtocolNumber.tcp {
            guard segmentLength >= HeaderLength.tcp else { return .malformed }
            let dataOffset = Int(Wire.load8(header, FieldOffset.TCP.dataOffset) >> 4) &* 4
            guard dataOffset >= HeaderLength.tcp, dataOffset <= segmentLength else { return .malformed }
            parsed.tcpFlags = Wire.load8(header, FieldOffset.TCP.flags)
        } else if proto == IPProtocolNumber.udp {
            guard segmentLength >= HeaderLength.udp else { return .malformed }
            let udpLength = Int(Wire.load16(header, FieldOffset.UDP.length))
            guard udpLength >= HeaderLength.udp, udpLength <= segmentLength || isFirstFragment else { return .malformed }
            parsed.tcpFlags = 0
        } else {
            return .unsupportedProtocol
        }
        // TCP and UDP both start with the source and destination ports.
        parsed.key.ports = Wire.loadPorts(header, 0)
        parsed.key.proto = proto
        parsed.isICMPError = false
        return .ok
    }
}
