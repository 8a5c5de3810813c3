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
        public static let totalLength = 2
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
