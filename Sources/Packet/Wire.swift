/// Big-endian loads and stores at byte offsets, for the rewrites (which hold mutable pointers).
@usableFromInline
enum Wire {
    @inlinable @inline(__always)
    static func load8(_ base: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        base.load(fromByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    static func load16(_ base: UnsafeRawPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    static func load32(_ base: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        UInt32(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// The source and destination ports a TCP or UDP header at `offset` starts with, host order, the source
    /// in the low half (`FlowKey.ports`): one load and a byte swap for both.
    @inlinable @inline(__always)
    static func loadPorts(_ base: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        let sourceHigh = load32(base, offset)
        return sourceHigh << 16 | sourceHigh >> 16
    }

    @inlinable @inline(__always)
    static func load64(_ base: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    @inlinable @inline(__always)
    static func store8(_ base: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt8) {
        base.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    static func store16(_ base: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    static func store32(_ base: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt32) {
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    static func store64(_ base: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt64) {
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    /// Writes a 20-byte IPv4 header with its checksum. Addresses in host order.
    @inline(__always)
    static func storeIPv4Header(_ ip: UnsafeMutableRawPointer, totalLength: Int, tos: UInt8, identification: UInt16,
                                dontFragment: Bool, ttl: UInt8, proto: UInt8, source: UInt32, destination: UInt32) {
        store8(ip, FieldOffset.IPv4.versionIHL, 0x45)
        store8(ip, FieldOffset.IPv4.tos, tos)
        store16(ip, FieldOffset.IPv4.totalLength, UInt16(truncatingIfNeeded: totalLength))
        store16(ip, FieldOffset.IPv4.identification, identification)
        store16(ip, FieldOffset.IPv4.flagsFragment, dontFragment ? 0x4000 : 0)
        store8(ip, FieldOffset.IPv4.ttl, ttl)
        store8(ip, FieldOffset.IPv4.proto, proto)
        store16(ip, FieldOffset.IPv4.checksum, 0)
        store32(ip, FieldOffset.IPv4.source, source)
        store32(ip, FieldOffset.IPv4.destination, destination)
        store16(ip, FieldOffset.IPv4.checksum, InternetChecksum.checksum(ip, count: HeaderLength.ipv4))
    }

    /// Writes a 40-byte IPv6 header. Addresses as host-order halves, like `IPAddress.v6`.
    @inline(__always)
    static func storeIPv6Header(_ ip: UnsafeMutableRawPointer, payloadLength: Int, trafficClass: UInt8,
                                flowLabel: UInt32, hopLimit: UInt8, nextHeader: UInt8,
                                source: (hi: UInt64, lo: UInt64), destination: (hi: UInt64, lo: UInt64)) {
        store32(ip, 0, 6 << 28 | UInt32(trafficClass) << 20 | flowLabel & 0xF_FFFF)
        store16(ip, FieldOffset.IPv6.payloadLength, UInt16(truncatingIfNeeded: payloadLength))
        store8(ip, FieldOffset.IPv6.nextHeader, nextHeader)
        store8(ip, FieldOffset.IPv6.hopLimit, hopLimit)
        store64(ip, FieldOffset.IPv6.source, source.hi)
        store64(ip, FieldOffset.IPv6.source &+ 8, source.lo)
        store64(ip, FieldOffset.IPv6.destination, destination.hi)
        store64(ip, FieldOffset.IPv6.destination &+ 8, destination.lo)
    }

    /// Writes the destination and source MACs of the Ethernet header at `frame`.
    @inlinable @inline(__always)
    static func storeMACs(_ frame: UnsafeMutableRawPointer, destination: MACAddress, source: MACAddress) {
        EthernetAddresses(destination: destination, source: source).store(frame)
    }

    /// Writes the Ethernet header for an IP packet starting `l3Offset` bytes after `frame`: MACs, then the
    /// 802.1Q tag `vlanTCI` when `l3Offset` leaves room for one, then the ethertype.
    @inline(__always)
    static func storeEthernet(_ frame: UnsafeMutableRawPointer, l3Offset: Int, destination: MACAddress,
                              source: MACAddress, vlanTCI: UInt16, etherType: UInt16) {
        storeMACs(frame, destination: destination, source: source)
        if l3Offset == HeaderLength.ethernet &+ HeaderLength.vlanTag {
            store16(frame, FieldOffset.Ethernet.etherType, EtherType.vlan)
            store16(frame, FieldOffset.Ethernet.etherType &+ 2, vlanTCI)
        }
        store16(frame, l3Offset &- 2, etherType)
    }
}

/// The TTL / hop limit check and decrement every forwarding rewrite does.
@usableFromInline
enum HopLimit {
    /// True when the IP packet at `ip` may be forwarded (TTL / hop limit > 1); nothing is changed.
    @inlinable @inline(__always)
    static func allowsForwarding(_ ip: UnsafeRawPointer, isIPv4: Bool) -> Bool {
        Wire.load8(ip, isIPv4 ? FieldOffset.IPv4.ttl : FieldOffset.IPv6.hopLimit) > 1
    }

    /// Decrements the TTL (updating the IPv4 header checksum, RFC 1624 eqn. 3) or the hop limit.
    /// The caller has checked `allowsForwarding`.
    @inlinable @inline(__always)
    static func decrement(_ ip: UnsafeMutableRawPointer, isIPv4: Bool) {
        if isIPv4 {
            // TTL is the high byte of the 16-bit word it shares with the protocol.
            let ttl = Wire.load8(ip, FieldOffset.IPv4.ttl)
            Wire.store8(ip, FieldOffset.IPv4.ttl, ttl &- 1)
            // In wire order: no byte swapped.
            let checksum = ip.loadUnaligned(fromByteOffset: FieldOffset.IPv4.checksum, as: UInt16.self)
            ip.storeBytes(of: InternetChecksum.updatedForTTLDecrement(wire: checksum),
                          toByteOffset: FieldOffset.IPv4.checksum, as: UInt16.self)
        } else {
            Wire.store8(ip, FieldOffset.IPv6.hopLimit, Wire.load8(ip, FieldOffset.IPv6.hopLimit) &- 1)
        }
    }
}
