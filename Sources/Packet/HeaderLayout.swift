/// Ethertypes the director looks at (host-order values of the big-endian field).
public enum EtherType {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    /// IEEE 802.1Q customer VLAN tag.
    public static let vlan: UInt16 = 0x8100
    public static let ipv6: UInt16 = 0x86DD
}

/// Fixed header sizes in bytes.
public enum HeaderLength {
    /// Destination MAC, source MAC, ethertype.
    public static let ethernet = 14
    /// One 802.1Q tag: TPID 0x8100 and a 16-bit TCI, between the source MAC and the ethertype.
    public static let vlanTag = 4
    /// IPv4 without options (IHL 5).
    public static let ipv4 = 20
    /// The fixed IPv6 header.
    public static let ipv6 = 40
    /// TCP without options (data offset 5).
    public static let tcp = 20
    public static let udp = 8
    /// ICMP and ICMPv6 share the 8-byte layout: type, code, checksum, 4 type-specific bytes.
    public static let icmp = 8
    /// The IPv6 fragment header.
    public static let ipv6Fragment = 8
    /// A GUE version 0 header without extension fields.
    public static let gue = 4
    /// A GRE header without optional fields (RFC 2784).
    public static let gre = 4
    /// The GRE checksum and reserved1 fields present when the C bit is set.
    public static let greChecksum = 4
}

/// Byte offsets of the fields the parser and the rewrites touch, relative to the start of their header.
/// Multi-byte fields are big-endian on the wire.
public enum FieldOffset {
    public enum Ethernet {
        public static let destination = 0
        public static let source = 6
        public static let etherType = 12
    }

    public enum IPv4 {
        /// Version (high nibble) and IHL (low nibble, in 32-bit words).
        public static let versionIHL = 0
        /// Type of service: DSCP and ECN.
        public static let tos = 1
        public static let totalLength = 2
        public static let identification = 4
        /// Flags (bit 14 DF, bit 13 MF) and the 13-bit fragment offset.
        public static let flagsFragment = 6
        public static let ttl = 8
        public static let proto = 9
        public static let checksum = 10
        public static let source = 12
        public static let destination = 16
    }

    public enum IPv6 {
        public static let payloadLength = 4
        public static let nextHeader = 6
        public static let hopLimit = 7
        public static let source = 8
        public static let destination = 24
    }

    /// The IPv6 fragment header (RFC 8200 4.5), 8 bytes.
    public enum IPv6Fragment {
        public static let nextHeader = 0
        /// The 13-bit offset in 8-byte units (high bits), two reserved bits, M (bit 0).
        public static let offsetFlags = 2
        public static let identification = 4
    }

    public enum TCP {
        public static let sourcePort = 0
        public static let destinationPort = 2
        /// Data offset (high nibble, in 32-bit words).
        public static let dataOffset = 12
        public static let flags = 13
        public static let checksum = 16
    }

    public enum UDP {
        public static let sourcePort = 0
        public static let destinationPort = 2
        public static let length = 4
        public static let checksum = 6
    }

    public enum ICMP {
        public static let type = 0
        public static let code = 1
        public static let checksum = 2
        /// The 4 type-specific bytes: next-hop MTU in the low 16 bits (ICMPv4 type 3 code 4), the MTU
        /// (ICMPv6 type 2), the pointer (parameter problem), or unused.
        public static let rest = 4
    }
}

/// TCP flag bits of the flags byte (offset 13 of the TCP header).
public enum TCPFlags {
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let psh: UInt8 = 0x08
    public static let ack: UInt8 = 0x10
    public static let urg: UInt8 = 0x20
}

/// IPv6 next-header values the parser recognises besides TCP and UDP.
public enum IPv6NextHeader {
    public static let hopByHop: UInt8 = 0
    public static let routing: UInt8 = 43
    public static let fragment: UInt8 = 44
}

/// ICMP and ICMPv6 message types the director handles.
public enum ICMPType {
    public static let v4DestinationUnreachable: UInt8 = 3
    public static let v4TimeExceeded: UInt8 = 11
    public static let v4ParameterProblem: UInt8 = 12
    /// Code of `v4DestinationUnreachable`: fragmentation needed and DF set (RFC 1191).
    public static let v4FragmentationNeededCode: UInt8 = 4

    public static let v6DestinationUnreachable: UInt8 = 1
    public static let v6PacketTooBig: UInt8 = 2
    public static let v6TimeExceeded: UInt8 = 3
    public static let v6ParameterProblem: UInt8 = 4
}

/// IANA protocol numbers the director handles.
public enum IPProtocolNumber {
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let icmp: UInt8 = 1
    public static let icmpv6: UInt8 = 58
    /// IPv4 in IP (IPIP), also the GUE/GRE payload type for an IPv4 inner packet.
    public static let ipv4InIP: UInt8 = 4
    /// IPv6 in IP.
    public static let ipv6InIP: UInt8 = 41
    public static let gre: UInt8 = 47
}
