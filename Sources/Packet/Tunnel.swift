/// The encapsulations of IPVS tunnelling (`ipvsadm -i --tun-type`). The raw values are the shared header's
/// `XD_TUNNEL_*` (a test checks them).
public enum TunnelType: UInt8, CaseIterable, Sendable {
    /// IP in IP: protocol 4 (IPv4 inner) or 41 (IPv6 inner), no tunnel header.
    case ipip = 0
    /// Generic UDP Encapsulation, version 0 header without extensions (draft-ietf-intarea-gue).
    case gue = 1
    /// GRE (RFC 2784), protocol type 0x0800 or 0x86DD.
    case gre = 2
}

/// How to tunnel to one real server.
public struct TunnelParameters: Hashable, Sendable {
    public var type: TunnelType
    /// GUE destination UDP port, host order (`--tun-port`); unused by the other types.
    public var port: UInt16
    /// `--tun-csum`: a UDP checksum for GUE over IPv4, a GRE checksum for GRE. GUE over IPv6 always gets a
    /// UDP checksum (see `Tunnel`).
    public var checksum: Bool

    public init(type: TunnelType, port: UInt16 = 0, checksum: Bool = false) {
        self.type = type
        self.port = port
        self.checksum = checksum
    }

    /// Bytes the tunnel header adds after the outer IP header.
    @inline(__always)
    public var headerLength: Int {
        switch type {
        case .ipip: return 0
        case .gue: return HeaderLength.udp &+ HeaderLength.gue
        case .gre: return checksum ? HeaderLength.gre &+ HeaderLength.greChecksum : HeaderLength.gre
        }
    }
}

/// The outcome of `Tunnel.encapsulate`.
public enum TunnelResult: Equatable {
    /// The encapsulated frame starts at `start` (before the original frame) and is `length` bytes long.
    case transmit(start: UnsafeMutableRawPointer, length: Int)
    /// The packet may not be fragmented (IPv4 DF, or IPv6) and does not fit: answer with ICMP
    /// fragmentation needed / packet too big reporting `mtu` (see `ICMPErrorBuilder`). Frame untouched.
    case tooBig(mtu: Int)
    /// An IPv4 packet without DF that does not fit; the director does not fragment. Frame untouched.
    case fragmentationRequired
    /// TTL / hop limit ≤ 1. Frame untouched.
    case hopLimitExceeded
    /// Fewer than the encapsulation's bytes of headroom before the frame. Frame untouched.
    case noHeadroom
}

/// Encapsulation for tunnelling (IPVS `-i`) in place, growing the frame into its headroom.
///
/// Choices, where IPVS or the RFCs leave room:
/// - Outer TTL / hop limit: the inner one after its decrement, as IPVS copies the inner TTL: a packet that
///   loops through tunnels still dies.
/// - Outer IPv4 DF: the inner DF (always set for an IPv6 inner packet); identification 0 with DF, else the
///   inner identification (IPv6 inner: 0), which the inner sender already keeps unique.
/// - TOS / traffic class copied from the inner packet (ECN included, RFC 6040 normal mode); an IPv6 outer
///   flow label and the GUE UDP source port (49152...65535, RFC 8086's range) come from the flow hash so
///   that the network spreads tunnels like the flows inside.
/// - GUE over IPv6 always carries a UDP checksum: a zero checksum is only allowed where both ends opt in
///   (RFC 6935/6936) and Linux refuses it by default. (IPVS honours `--tun-nocsum` there.)
public enum Tunnel {
    /// Encapsulates the IP packet of the frame at `frame` (`length` bytes, `headroom` bytes free before it)
    /// for the real server `outerDestination`, from `outerSource`; the outer family is the destination's.
    /// The inner packet only loses one TTL / hop limit (with its IPv4 checksum fixed); Ethernet padding is
    /// dropped; the Ethernet header is rebuilt with the MACs, the 802.1Q tag if the frame had one, and the
    /// outer ethertype. `mtu` bounds the outer IP packet.
    ///
    /// `parsed` must be the `.ok` result of `FrameParser.parse` for this frame (TCP, UDP or an ICMP error).
    @inline(__always)
    public static func encapsulate(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int, parsed: ParsedFrame,
                                   outerSource: IPAddress, outerDestination: IPAddress,
                                   parameters: TunnelParameters, sourceMAC: MACAddress, destinationMAC: MACAddress,
                                   mtu: Int) -> TunnelResult {
        let innerIsIPv4 = parsed.isIPv4
        let inner = frame + parsed.l3Offset
        guard HopLimit.allowsForwarding(inner, isIPv4: innerIsIPv4) else { return .hopLimitExceeded }

        let outerIsIPv4 = outerDestination.family == .ipv4
        let tunnelHeaderLength = parameters.headerLength
        let overhead = (outerIsIPv4 ? HeaderLength.ipv4 : HeaderLength.ipv6) &+ tunnelHeaderLength
        let innerLength = parsed.ipPacketLength
        // IPv6 lengths count the payload only, but one limit for both keeps the rule simple.
        let limit = min(mtu, 0xFFFF)
        let dontFragment = !innerIsIPv4 || Wire.load16(inner, FieldOffset.IPv4.flagsFragment) & 0x4000 != 0
        if innerLength &+ overhead > limit {
            return dontFragment ? .tooBig(mtu: limit &- overhead) : .fragmentationRequired
        }
        guard headroom >= overhead else { return .noHeadroom }

        // Read what the new headers need before they overwrite the old Ethernet header.
        let vlanTCI = parsed.l3Offset > HeaderLength.ethernet ? Wire.load16(frame, FieldOffset.Ethernet.etherType &+ 2) : 0
        HopLimit.decrement(inner, isIPv4: innerIsIPv4)
        let hopLimit = Wire.load8(inner, innerIsIPv4 ? FieldOffset.IPv4.ttl : FieldOffset.IPv6.hopLimit)
        let trafficClass = innerIsIPv4 ? Wire.load8(inner, FieldOffset.IPv4.tos)
                                       : UInt8(truncatingIfNeeded: Wire.load16(inner, 0) >> 4)
        let identification = innerIsIPv4 && !dontFragment ? Wire.load16(inner, FieldOffset.IPv4.identification) : 0
        let innerProtocol = innerIsIPv4 ? IPProtocolNumber.ipv4InIP : IPProtocolNumber.ipv6InIP
        let hash = parsed.key.flowHash
        // The flat form, read once: an IPv4 address is the low half.
        let source = outerSource.v6Halves
        let destination = outerDestination.v6Halves

        let start = frame - overhead
        let outer = start + parsed.l3Offset
        let tunnelHeader = outer + (outerIsIPv4 ? HeaderLength.ipv4 : HeaderLength.ipv6)
        let outerProtocol: UInt8
        switch parameters.type {
        case .ipip: outerProtocol = innerProtocol
        case .gue: outerProtocol = IPProtocolNumber.udp
        case .gre: outerProtocol = IPProtocolNumber.gre
        }
        let outerPayloadLength = tunnelHeaderLength &+ innerLength
        if outerIsIPv4 {
            Wire.storeIPv4Header(outer, totalLength: HeaderLength.ipv4 &+ outerPayloadLength, tos: trafficClass,
                                 identification: identification, dontFragment: dontFragment, ttl: hopLimit,
                                 proto: outerProtocol, source: UInt32(truncatingIfNeeded: source.lo),
                                 destination: UInt32(truncatingIfNeeded: destination.lo))
        } else {
            Wire.storeIPv6Header(outer, payloadLength: outerPayloadLength, trafficClass: trafficClass,
                                 flowLabel: hash & 0xF_FFFF, hopLimit: hopLimit, nextHeader: outerProtocol,
                                 source: source, destination: destination)
        }

        switch parameters.type {
        case .ipip:
            break
        case .gue:
            let udpLength = outerPayloadLength
            Wire.store16(tunnelHeader, FieldOffset.UDP.sourcePort, 0xC000 | UInt16(truncatingIfNeeded: hash >> 18))
            Wire.store16(tunnelHeader, FieldOffset.UDP.destinationPort, parameters.port)
            Wire.store16(tunnelHeader, FieldOffset.UDP.length, UInt16(truncatingIfNeeded: udpLength))
            Wire.store16(tunnelHeader, FieldOffset.UDP.checksum, 0)
            // Version 0, C 0, Hlen 0; proto/ctype; flags 0.
            Wire.store32(tunnelHeader, HeaderLength.udp, UInt32(innerProtocol) << 16)
            if parameters.checksum || !outerIsIPv4 {
                let pseudo = outerIsIPv4
                    ? InternetChecksum.pseudoHeaderSum(ipv4Source: UInt32(truncatingIfNeeded: source.lo),
                                                       destination: UInt32(truncatingIfNeeded: destination.lo),
                                                       proto: IPProtocolNumber.udp, length: udpLength)
                    : InternetChecksum.pseudoHeaderSum(ipv6Source: source, destination: destination,
                                                       proto: IPProtocolNumber.udp, length: udpLength)
                let checksum = InternetChecksum.checksum(tunnelHeader, count: udpLength, initial: pseudo)
                Wire.store16(tunnelHeader, FieldOffset.UDP.checksum, checksum == 0 ? 0xFFFF : checksum)
            }
        case .gre:
            Wire.store16(tunnelHeader, 0, parameters.checksum ? 0x8000 : 0)  // C bit; version 0
            Wire.store16(tunnelHeader, 2, innerIsIPv4 ? EtherType.ipv4 : EtherType.ipv6)
            if parameters.checksum {
                Wire.store32(tunnelHeader, HeaderLength.gre, 0)
                Wire.store16(tunnelHeader, HeaderLength.gre,
                             InternetChecksum.checksum(tunnelHeader, count: outerPayloadLength))
            }
        }

        Wire.storeEthernet(start, l3Offset: parsed.l3Offset, destination: destinationMAC, source: sourceMAC,
                           vlanTCI: vlanTCI, etherType: outerIsIPv4 ? EtherType.ipv4 : EtherType.ipv6)
        return .transmit(start: start, length: parsed.l3Offset &+ overhead &+ innerLength)
    }
}
