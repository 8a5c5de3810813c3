/// The 5-tuple of a packet as the director sees it. Trivially copyable (no references), so the hot path
/// can copy it around and store it in the connection table without ARC.
public struct FlowKey: Hashable, Sendable {
    /// Source and destination addresses as host-order halves, as in `IPAddress`. IPv4 sits in the low
    /// 32 bits of `srcLo`/`dstLo` with the high halves zero.
    public var srcHi: UInt64
    public var srcLo: UInt64
    public var dstHi: UInt64
    public var dstLo: UInt64
    /// The source port (bits 0-15), destination port (16-31, both host order), IANA protocol number (32-39:
    /// 6 TCP, 17 UDP) and family (40-47: 4 or 6, `IPAddress.Family.rawValue`) in one word, the rest zero: a
    /// flow compares and hashes as five words. (Byte for byte what the four fields would be, little endian.)
    public var portsAndProtocol: UInt64

    /// Host order.
    @inlinable
    public var srcPort: UInt16 {
        @inline(__always) get { UInt16(truncatingIfNeeded: portsAndProtocol) }
        @inline(__always) set { portsAndProtocol = portsAndProtocol & ~0xFFFF | UInt64(newValue) }
    }
    /// Host order.
    @inlinable
    public var dstPort: UInt16 {
        @inline(__always) get { UInt16(truncatingIfNeeded: portsAndProtocol >> 16) }
        @inline(__always) set { portsAndProtocol = portsAndProtocol & ~0xFFFF_0000 | UInt64(newValue) << 16 }
    }
    /// Both ports as `portsAndProtocol` holds them: the source in the low half, the destination above it.
    @inlinable
    public var ports: UInt32 {
        @inline(__always) get { UInt32(truncatingIfNeeded: portsAndProtocol) }
        @inline(__always) set { portsAndProtocol = portsAndProtocol & ~0xFFFF_FFFF | UInt64(newValue) }
    }
    /// IANA protocol number (6 TCP, 17 UDP).
    @inlinable
    public var proto: UInt8 {
        @inline(__always) get { UInt8(truncatingIfNeeded: portsAndProtocol >> 32) }
        @inline(__always) set { portsAndProtocol = portsAndProtocol & ~0xFF_0000_0000 | UInt64(newValue) << 32 }
    }
    /// 4 or 6 (`IPAddress.Family.rawValue`).
    @inlinable
    public var family: UInt8 {
        @inline(__always) get { UInt8(truncatingIfNeeded: portsAndProtocol >> 40) }
        @inline(__always) set { portsAndProtocol = portsAndProtocol & ~0xFF00_0000_0000 | UInt64(newValue) << 40 }
    }

    /// `portsAndProtocol` of its parts.
    @inlinable @inline(__always)
    public static func portsAndProtocol(srcPort: UInt16, dstPort: UInt16, proto: UInt8, family: UInt8) -> UInt64 {
        portsAndProtocol(ports: UInt32(srcPort) | UInt32(dstPort) << 16, proto: proto, family: family)
    }

    /// `portsAndProtocol` of both ports as `ports` holds them, the protocol and the family.
    @inlinable @inline(__always)
    public static func portsAndProtocol(ports: UInt32, proto: UInt8, family: UInt8) -> UInt64 {
        UInt64(ports) | UInt64(proto) << 32 | UInt64(family) << 40
    }

    public init() {
        srcHi = 0; srcLo = 0; dstHi = 0; dstLo = 0; portsAndProtocol = 0
    }

    public init(source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16, proto: UInt8) {
        self.init()
        (srcHi, srcLo) = source.v6Halves
        (dstHi, dstLo) = destination.v6Halves
        srcPort = sourcePort
        dstPort = destinationPort
        self.proto = proto
        family = source.family.rawValue
    }

    public var source: IPAddress { Self.address(family: family, hi: srcHi, lo: srcLo) }
    public var destination: IPAddress { Self.address(family: family, hi: dstHi, lo: dstLo) }

    /// A fast, well-mixed 32-bit hash for the data plane's tables (Swift's `hashValue` is seeded SipHash:
    /// correct but several times slower per packet): the low half of `flowHash64`.
    @inlinable @inline(__always)
    public var flowHash: UInt32 { UInt32(truncatingIfNeeded: flowHash64) }

    /// The whole 64-bit mix `flowHash` is cut from: its high half is independent of the low one, a
    /// fingerprint of the flow for tables indexed by `flowHash`.
    @inlinable @inline(__always)
    public var flowHash64: UInt64 {
        var h = srcHi &* 0x9E37_79B9_7F4A_7C15
        h ^= srcLo &+ 0xC2B2_AE3D_27D4_EB4F
        h = (h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9
        h ^= dstHi &* 0x94D0_49BB_1331_11EB
        h ^= dstLo
        h = (h ^ (h >> 31)) &* 0x9E37_79B9_7F4A_7C15
        h ^= portsAndProtocol
        h = (h ^ (h >> 32)) &* 0xD6E8_FEB8_6659_FD93
        return h ^ (h >> 32)
    }

    private static func address(family: UInt8, hi: UInt64, lo: UInt64) -> IPAddress {
        family == IPAddress.Family.ipv4.rawValue ? .v4(UInt32(truncatingIfNeeded: lo)) : .v6(hi: hi, lo: lo)
    }
}
