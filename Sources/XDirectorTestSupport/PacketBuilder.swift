import Packet

/// Builds test frames: Ethernet (+ optional 802.1Q tag) / IPv4 (optionally with options) or IPv6 /
/// TCP or UDP (or raw bytes), with every length and checksum filled in by `ReferenceChecksum`.
///
///     var builder = PacketBuilder.tcp("192.0.2.1", 40000, "198.51.100.10", 80, flags: TCPFlags.syn)
///     builder.vlanTCI = 100
///     builder.ipv4.ttl = 2
///     let frame = builder.build()
///
/// To test broken frames, build a correct one and then edit its bytes (see `recomputeIPv4HeaderChecksum`
/// for edits that should keep the IPv4 checksum right).
public struct PacketBuilder: Sendable {
    public struct IPv4: Sendable {
        public var source: IPAddress
        public var destination: IPAddress
        public var ttl: UInt8 = 64
        public var tos: UInt8 = 0
        public var identification: UInt16 = 0x1C46
        public var dontFragment = true
        public var moreFragments = false
        /// In 8-byte units.
        public var fragmentOffset: UInt16 = 0
        /// Option bytes; padded with zeros (end of option list) to a multiple of 4.
        public var options: [UInt8] = []

        public init(source: IPAddress, destination: IPAddress) {
            self.source = source
            self.destination = destination
        }
    }

    public struct IPv6: Sendable {
        public var source: IPAddress
        public var destination: IPAddress
        public var hopLimit: UInt8 = 64
        public var trafficClass: UInt8 = 0
        /// 20 bits.
        public var flowLabel: UInt32 = 0

        public init(source: IPAddress, destination: IPAddress) {
            self.source = source
            self.destination = destination
        }
    }

    public enum Network: Sendable {
        case ipv4(IPv4)
        case ipv6(IPv6)
        /// A non-IP payload under another ethertype (ARP, ...); `transport` is ignored.
        case other(etherType: UInt16, payload: [UInt8])
    }

    public struct TCP: Sendable {
        public var sourcePort: UInt16
        public var destinationPort: UInt16
        public var sequence: UInt32 = 0x1000_0000
        public var acknowledgment: UInt32 = 0
        public var flags: UInt8 = TCPFlags.ack
        public var window: UInt16 = 64240
        public var urgentPointer: UInt16 = 0
        /// Option bytes; padded with zeros (end of option list) to a multiple of 4.
        public var options: [UInt8] = []
        public var payload: [UInt8] = []

        public init(sourcePort: UInt16, destinationPort: UInt16) {
            self.sourcePort = sourcePort
            self.destinationPort = destinationPort
        }
    }

    public struct UDP: Sendable {
        public var sourcePort: UInt16
        public var destinationPort: UInt16
        public var payload: [UInt8] = []

        public init(sourcePort: UInt16, destinationPort: UInt16) {
            self.sourcePort = sourcePort
            self.destinationPort = destinationPort
        }
    }

    /// An ICMP (over IPv4) or ICMPv6 (over IPv6) message; its checksum is filled in.
    public struct ICMP: Sendable {
        public var type: UInt8
        public var code: UInt8
        /// The 4 type-specific bytes after the checksum (MTU, pointer, unused).
        public var rest: UInt32 = 0
        public var payload: [UInt8] = []

        public init(type: UInt8, code: UInt8) {
            self.type = type
            self.code = code
        }
    }

    public enum Transport: Sendable {
        case tcp(TCP)
        case udp(UDP)
        case icmp(ICMP)
        /// Any other IP protocol / IPv6 next header, with its bytes as given (no checksum filled in).
        case other(proto: UInt8, payload: [UInt8])
    }

    public var source = MACAddress("02:00:00:00:00:01")!
    public var destination = MACAddress("02:00:00:00:00:02")!
    /// The 802.1Q tag control information (priority, DEI, VLAN id); nil for an untagged frame.
    public var vlanTCI: UInt16?
    public var network: Network
    public var transport: Transport
    /// Bytes after the IP packet that IP lengths do not count (Ethernet padding).
    public var trailer: [UInt8] = []

    public init(network: Network, transport: Transport) {
        self.network = network
        self.transport = transport
    }

    /// A TCP frame; the family follows the addresses' text.
    public static func tcp(_ source: String, _ sourcePort: UInt16, _ destination: String, _ destinationPort: UInt16,
                           flags: UInt8 = TCPFlags.ack, payload: [UInt8] = []) -> PacketBuilder {
        var tcp = TCP(sourcePort: sourcePort, destinationPort: destinationPort)
        tcp.flags = flags
        tcp.payload = payload
        return PacketBuilder(network: network(source, destination), transport: .tcp(tcp))
    }

    /// A UDP frame; the family follows the addresses' text.
    public static func udp(_ source: String, _ sourcePort: UInt16, _ destination: String, _ destinationPort: UInt16,
                           payload: [UInt8] = []) -> PacketBuilder {
        var udp = UDP(sourcePort: sourcePort, destinationPort: destinationPort)
        udp.payload = payload
        return PacketBuilder(network: network(source, destination), transport: .udp(udp))
    }

    /// An IP frame carrying another protocol's bytes (ICMP, an IPv6 extension header, ...).
    public static func ip(_ source: String, _ destination: String, proto: UInt8, payload: [UInt8]) -> PacketBuilder {
        PacketBuilder(network: network(source, destination), transport: .other(proto: proto, payload: payload))
    }

    /// An ICMP error (ICMPv6 when the addresses are IPv6) quoting the IP packet of `quoting`, cut to its
    /// first `quoteLength` bytes when given.
    public static func icmpError(_ source: String, _ destination: String, type: UInt8, code: UInt8 = 0,
                                 rest: UInt32 = 0, quoting: PacketBuilder, quoteLength: Int? = nil) -> PacketBuilder {
        var icmp = ICMP(type: type, code: code)
        icmp.rest = rest
        let packet = quoting.buildIPPacket()
        icmp.payload = Array(packet.prefix(quoteLength ?? packet.count))
        return PacketBuilder(network: network(source, destination), transport: .icmp(icmp))
    }

    private static func network(_ source: String, _ destination: String) -> Network {
        guard let s = IPAddress(source), let d = IPAddress(destination), s.family == d.family else {
            preconditionFailure("bad address pair \(source) \(destination)")
        }
        return s.family == .ipv4 ? .ipv4(IPv4(source: s, destination: d)) : .ipv6(IPv6(source: s, destination: d))
    }

    // MARK: Field access for edits (trap when the frame has another shape)

    public var ipv4: IPv4 {
        get { guard case .ipv4(let v) = network else { preconditionFailure("not IPv4") }; return v }
        set { network = .ipv4(newValue) }
    }

    public var ipv6: IPv6 {
        get { guard case .ipv6(let v) = network else { preconditionFailure("not IPv6") }; return v }
        set { network = .ipv6(newValue) }
    }

    public var tcp: TCP {
        get { guard case .tcp(let v) = transport else { preconditionFailure("not TCP") }; return v }
        set { transport = .tcp(newValue) }
    }

    public var udp: UDP {
        get { guard case .udp(let v) = transport else { preconditionFailure("not UDP") }; return v }
        set { transport = .udp(newValue) }
    }

    public var icmp: ICMP {
        get { guard case .icmp(let v) = transport else { preconditionFailure("not ICMP") }; return v }
        set { transport = .icmp(newValue) }
    }

    // MARK: Building

    /// The frame's bytes.
    public func build() -> [UInt8] {
        var frame = destination.bytes + source.bytes
        if let tci = vlanTCI {
            frame += bigEndianBytes(EtherType.vlan) + bigEndianBytes(tci)
        }
        switch network {
        case .ipv4(let ip):
            frame += bigEndianBytes(EtherType.ipv4)
            frame += buildIPv4(ip, segment: segment(source: ip.source, destination: ip.destination))
        case .ipv6(let ip):
            frame += bigEndianBytes(EtherType.ipv6)
            frame += buildIPv6(ip, segment: segment(source: ip.source, destination: ip.destination))
        case .other(let etherType, let payload):
            frame += bigEndianBytes(etherType) + payload
        }
        return frame + trailer
    }

    /// The IP packet alone: the frame without its Ethernet header, VLAN tag and trailer.
    public func buildIPPacket() -> [UInt8] {
        let frame = build()
        return Array(frame[(vlanTCI == nil ? 14 : 18)..<(frame.count - trailer.count)])
    }

    private var proto: UInt8 {
        switch transport {
        case .tcp: return IPProtocolNumber.tcp
        case .udp: return IPProtocolNumber.udp
        case .icmp:
            if case .ipv6 = network { return IPProtocolNumber.icmpv6 }
            return IPProtocolNumber.icmp
        case .other(let proto, _): return proto
        }
    }

    private func segment(source: IPAddress, destination: IPAddress) -> [UInt8] {
        switch transport {
        case .tcp(let tcp):
            let options = Self.padded(tcp.options)
            var header = bigEndianBytes(tcp.sourcePort) + bigEndianBytes(tcp.destinationPort)
            header += bigEndianBytes(tcp.sequence) + bigEndianBytes(tcp.acknowledgment)
            header += [UInt8((20 + options.count) / 4) << 4, tcp.flags] + bigEndianBytes(tcp.window)
            header += [0, 0] + bigEndianBytes(tcp.urgentPointer) + options
            var segment = header + tcp.payload
            segment.writeUInt16(ReferenceChecksum.l4Checksum(source: source, destination: destination,
                                                             proto: IPProtocolNumber.tcp, segment: segment), at: 16)
            return segment
        case .udp(let udp):
            var segment = bigEndianBytes(udp.sourcePort) + bigEndianBytes(udp.destinationPort)
            segment += bigEndianBytes(UInt16(8 + udp.payload.count)) + [0, 0] + udp.payload
            let checksum = ReferenceChecksum.l4Checksum(source: source, destination: destination,
                                                        proto: IPProtocolNumber.udp, segment: segment)
            segment.writeUInt16(checksum == 0 ? 0xFFFF : checksum, at: 6)
            return segment
        case .icmp(let icmp):
            var message = [icmp.type, icmp.code, 0, 0] + bigEndianBytes(icmp.rest) + icmp.payload
            let pseudo = source.family == .ipv4 ? [] : ReferenceChecksum.pseudoHeader(
                source: source, destination: destination, proto: IPProtocolNumber.icmpv6, length: message.count)
            message.writeUInt16(ReferenceChecksum.checksum(pseudo + message), at: 2)
            return message
        case .other(_, let payload):
            return payload
        }
    }

    private func buildIPv4(_ ip: IPv4, segment: [UInt8]) -> [UInt8] {
        precondition(ip.source.family == .ipv4 && ip.destination.family == .ipv4)
        let options = Self.padded(ip.options)
        let headerLength = 20 + options.count
        let flags: UInt16 = (ip.dontFragment ? 0x4000 : 0) | (ip.moreFragments ? 0x2000 : 0)
        var header: [UInt8] = [0x40 | UInt8(headerLength / 4), ip.tos]
        header += bigEndianBytes(UInt16(headerLength + segment.count)) + bigEndianBytes(ip.identification)
        header += bigEndianBytes(flags | (ip.fragmentOffset & 0x1FFF)) + [ip.ttl, proto, 0, 0]
        header += ip.source.bytes + ip.destination.bytes + options
        header.writeUInt16(ReferenceChecksum.checksum(header), at: 10)
        return header + segment
    }

    private func buildIPv6(_ ip: IPv6, segment: [UInt8]) -> [UInt8] {
        precondition(ip.source.family == .ipv6 && ip.destination.family == .ipv6)
        let first = UInt32(6) << 28 | UInt32(ip.trafficClass) << 20 | (ip.flowLabel & 0xF_FFFF)
        var header = bigEndianBytes(first) + bigEndianBytes(UInt16(segment.count)) + [proto, ip.hopLimit]
        header += ip.source.bytes + ip.destination.bytes
        return header + segment
    }

    private static func padded(_ options: [UInt8]) -> [UInt8] {
        options + [UInt8](repeating: 0, count: (4 - options.count % 4) % 4)
    }
}
