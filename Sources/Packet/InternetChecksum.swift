/// The Internet checksum: the 16-bit one's complement of the one's complement sum of the data taken as
/// big-endian 16-bit words (RFC 1071), and its incremental update when a field changes (RFC 1624).
///
/// Conventions:
/// - Checksums and field values are host-order numbers of big-endian wire fields: read them with
///   `UInt16(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))` and store them back with
///   `.bigEndian`.
/// - A *partial sum* is a `UInt32` whose value modulo 0xFFFF is the one's complement sum so far. Functions
///   that return one fold it to 16 bits (0...0xFFFF); functions that take one accept any `UInt32`, so
///   partial sums of separate pieces (a pseudo-header and a segment) may simply be added with `&+` as long
///   as fewer than 65 536 of them are added.
/// - Every piece summed separately must start at an even offset of the checksummed data (only the last
///   piece may have an odd length).
/// - Verifying: the checksum over data that includes a correct checksum field is 0.
/// - UDP: a computed checksum of 0 goes on the wire as 0xFFFF, and an IPv4 UDP checksum of 0 means "none"
///   and must be left alone by incremental updates. Those rules belong to the caller; this type computes
///   plain RFC 1071 / RFC 1624 values.
public enum InternetChecksum {
    // MARK: Full computation (RFC 1071)

    /// The one's complement sum of `count` bytes at `bytes` plus `initial`, folded to 16 bits, not
    /// complemented. An odd final byte counts as the high byte of a word whose low byte is zero.
    @inlinable @inline(__always)
    public static func sum(_ bytes: UnsafeRawPointer, count: Int, initial: UInt32 = 0) -> UInt32 {
        // 64-bit words with end-around carry: 2^64 ≡ 2^32 ≡ 2^16 ≡ 1 (mod 0xFFFF), so folding the 64-bit
        // one's complement sum gives the 16-bit one (RFC 1071 section 2(B), "parallel summation").
        var accumulator = UInt64(initial)
        var offset = 0
        while offset &+ 8 <= count {
            let word = Wire.load64(bytes, offset)
            accumulator = add(accumulator, word)
            offset &+= 8
        }
        if offset &+ 4 <= count {
            let word = Wire.load32(bytes, offset)
            accumulator = add(accumulator, UInt64(word))
            offset &+= 4
        }
        if offset &+ 2 <= count {
            let word = Wire.load16(bytes, offset)
            accumulator = add(accumulator, UInt64(word))
            offset &+= 2
        }
        if offset < count {
            accumulator = add(accumulator, UInt64(Wire.load8(bytes, offset)) << 8)
        }
        return UInt32(fold(accumulator))
    }

    /// `sum(_:count:initial:)` over a buffer.
    @inlinable @inline(__always)
    public static func sum(_ buffer: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        guard let base = buffer.baseAddress else { return UInt32(fold(UInt64(initial))) }
        return sum(base, count: buffer.count, initial: initial)
    }

    /// The checksum to store: the complement of the folded partial sum.
    @inlinable @inline(__always)
    public static func finish(_ partialSum: UInt32) -> UInt16 {
        ~fold(UInt64(partialSum))
    }

    /// The checksum of `count` bytes at `bytes` (with an optional partial sum of other data, such as a
    /// pseudo-header, already added in). Over data that contains its own correct checksum, it is 0.
    @inlinable @inline(__always)
    public static func checksum(_ bytes: UnsafeRawPointer, count: Int, initial: UInt32 = 0) -> UInt16 {
        finish(sum(bytes, count: count, initial: initial))
    }

    /// `checksum(_:count:initial:)` over a buffer.
    @inlinable @inline(__always)
    public static func checksum(_ buffer: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
        finish(sum(buffer, initial: initial))
    }

    // MARK: Pseudo-headers

    /// The partial sum of the IPv4 pseudo-header (RFC 793 / RFC 768): source, destination, zero, protocol,
    /// and the TCP/UDP length (header plus data). Addresses in host order.
    @inlinable @inline(__always)
    public static func pseudoHeaderSum(ipv4Source source: UInt32, destination: UInt32,
                                       proto: UInt8, length: Int) -> UInt32 {
        var accumulator = UInt64(source) &+ UInt64(destination)
        accumulator &+= UInt64(proto) &+ UInt64(UInt16(truncatingIfNeeded: length))
        return UInt32(fold(accumulator))
    }

    /// The partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source, destination, the 32-bit
    /// upper-layer length and the next header. Addresses as host-order halves, like `IPAddress.v6`.
    @inlinable @inline(__always)
    public static func pseudoHeaderSum(ipv6Source source: (hi: UInt64, lo: UInt64),
                                       destination: (hi: UInt64, lo: UInt64),
                                       proto: UInt8, length: Int) -> UInt32 {
        var accumulator = add(source.hi, source.lo)
        accumulator = add(accumulator, destination.hi)
        accumulator = add(accumulator, destination.lo)
        accumulator = add(accumulator, UInt64(UInt32(truncatingIfNeeded: length)) &+ UInt64(proto))
        return UInt32(fold(accumulator))
    }

    /// The pseudo-header partial sum for a flow's addresses and protocol, by its family.
    @inlinable @inline(__always)
    public static func pseudoHeaderSum(_ key: FlowKey, length: Int) -> UInt32 {
        if key.family == IPAddress.Family.ipv4.rawValue {
            return pseudoHeaderSum(ipv4Source: UInt32(truncatingIfNeeded: key.srcLo),
                                   destination: UInt32(truncatingIfNeeded: key.dstLo),
                                   proto: key.proto, length: length)
        }
        return pseudoHeaderSum(ipv6Source: (key.srcHi, key.srcLo), destination: (key.dstHi, key.dstLo),
                               proto: key.proto, length: length)
    }

    // MARK: Incremental update (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m'))

    /// The checksum after a 16-bit field covered by it changed from `old` to `new`.
    ///
    /// Eqn. 3 never yields 0xFFFF for data that is not all zeros, so the result matches a full
    /// recomputation, including the case where that is 0x0000 (RFC 1624 section 3).
    @inlinable @inline(__always)
    public static func updated(_ checksum: UInt16, replacing old: UInt16, with new: UInt16) -> UInt16 {
        var delta = ChecksumDelta()
        delta.replace(old, with: new)
        return delta.apply(to: checksum)
    }

    /// The IPv4 header checksum after the TTL (the high byte of its 16-bit word) went down by one, the
    /// checksum as it lies in the packet (network order, loaded without a byte swap): eqn. 3 with
    /// m' = m - 0x0100 is HC + 0x0100 in one's complement, -0 (0xFFFF) written as +0 as eqn. 3 gives it;
    /// one's complement sums do not depend on byte order (RFC 1071 section 2(B)), so the increment is just
    /// in network order too. The same value as `updated(_:replacing:with:)` on the TTL word, in a few
    /// instructions.
    @inlinable @inline(__always)
    public static func updatedForTTLDecrement(wire checksum: UInt16) -> UInt16 {
        var sum = UInt32(checksum) &+ UInt32(UInt16(0x0100).bigEndian)
        sum = (sum & 0xFFFF) &+ (sum >> 16)
        return sum == 0xFFFF ? 0 : UInt16(truncatingIfNeeded: sum)
    }

    /// The checksum after a 32-bit field (an IPv4 address, a TCP sequence number) changed. The field must
    /// start at an even offset of the checksummed data, as every such field does.
    @inlinable @inline(__always)
    public static func updated(_ checksum: UInt16, replacing old: UInt32, with new: UInt32) -> UInt16 {
        var delta = ChecksumDelta()
        delta.replace(old, with: new)
        return delta.apply(to: checksum)
    }

    /// The checksum after a 128-bit field (an IPv6 address, as host-order halves) changed.
    @inlinable @inline(__always)
    public static func updated(_ checksum: UInt16, replacing old: (hi: UInt64, lo: UInt64),
                               with new: (hi: UInt64, lo: UInt64)) -> UInt16 {
        var delta = ChecksumDelta()
        delta.replace(old.hi, with: new.hi)
        delta.replace(old.lo, with: new.lo)
        return delta.apply(to: checksum)
    }

    // MARK: Arithmetic

    /// One's complement addition of 64-bit words (the carry out of bit 63 wraps into bit 0).
    @inlinable @inline(__always)
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (result, overflow) = a.addingReportingOverflow(b)
        return result &+ (overflow ? 1 : 0)
    }

    /// Folds a 64-bit one's complement sum to 16 bits. Only 0 folds to 0.
    @inlinable @inline(__always)
    static func fold(_ value: UInt64) -> UInt16 {
        // A word plus itself rotated by half its width holds, in its high half, the one's complement sum of
        // its two halves: the carry out of the low half is the end-around carry (as Linux's csum_fold).
        let word = UInt32(truncatingIfNeeded: (value &+ (value << 32 | value >> 32)) >> 32)
        return UInt16(truncatingIfNeeded: (word &+ (word << 16 | word >> 16)) >> 16)
    }
}

/// Changes to 16-, 32- or 64-bit fields at even offsets of checksummed data, accumulated as ~old + new
/// and applied to a checksum in one step (RFC 1624 eqn. 3: HC' = ~(~HC + Σ~m + Σm')).
///
/// The sum does not depend on byte order (RFC 1071 section 2(B)) as long as the fields and the checksum
/// are taken alike: `replace` and `apply(to:)` in host order, or `store` and `apply(at:)` in wire order,
/// the words as they lie in the packet, which spares the rewrites every byte swap but the new values'.
@usableFromInline
struct ChecksumDelta {
    @usableFromInline var sum: UInt64 = 0

    @inlinable init() {}

    @inlinable @inline(__always)
    mutating func replace(_ old: UInt16, with new: UInt16) {
        sum = InternetChecksum.add(sum, UInt64(~old) &+ UInt64(new))
    }

    @inlinable @inline(__always)
    mutating func replace(_ old: UInt32, with new: UInt32) {
        sum = InternetChecksum.add(sum, UInt64(~old) &+ UInt64(new))
    }

    @inlinable @inline(__always)
    mutating func replace(_ old: UInt64, with new: UInt64) {
        sum = InternetChecksum.add(sum, ~old)
        sum = InternetChecksum.add(sum, new)
    }

    /// Stores `value` (host order) in the 16-, 32- or 64-bit field at `offset` of `base`, recording the
    /// change in wire order.
    @inlinable @inline(__always)
    mutating func store<Field: FixedWidthInteger & UnsignedInteger>(_ value: Field, _ base: UnsafeMutableRawPointer,
                                                                    _ offset: Int) {
        precondition(Field.bitWidth >= 16, "checksummed words are 16 bits or more")
        let old = base.loadUnaligned(fromByteOffset: offset, as: Field.self), new = value.bigEndian
        if Field.bitWidth == 64 {
            sum = InternetChecksum.add(sum, ~UInt64(truncatingIfNeeded: old))
            sum = InternetChecksum.add(sum, UInt64(truncatingIfNeeded: new))
        } else {
            sum = InternetChecksum.add(sum, UInt64(truncatingIfNeeded: ~old) &+ UInt64(truncatingIfNeeded: new))
        }
        base.storeBytes(of: new, toByteOffset: offset, as: Field.self)
    }

    /// Records TTL - 1 (the caller checked TTL > 1), in wire order: the header's 16-bit word
    /// m = TTL << 8 | protocol becomes m - 0x100, and ~m + (m - 0x100) is 0xFEFF whatever m is; as the
    /// word lies in the packet, that is 0xFEFF with its bytes in network order.
    @inlinable @inline(__always)
    mutating func decrementTTL() {
        sum = InternetChecksum.add(sum, UInt64(UInt16(0xFEFF).bigEndian))
    }

    /// The checksum after the recorded changes (host order).
    @inlinable @inline(__always)
    func apply(to checksum: UInt16) -> UInt16 {
        ~InternetChecksum.fold(InternetChecksum.add(sum, UInt64(~checksum)))
    }

    /// Updates the checksum at `offset` of `base` for the changes recorded in wire order.
    @inlinable @inline(__always)
    func apply(at base: UnsafeMutableRawPointer, _ offset: Int) {
        base.storeBytes(of: apply(to: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)),
                        toByteOffset: offset, as: UInt16.self)
    }

    /// `apply(at:_:)` for a UDP checksum: a result of 0 goes out as 0xFFFF (0 means none), and with
    /// `zeroMeansNone` (IPv4) a checksum of 0 stays 0.
    @inlinable @inline(__always)
    func applyUDP(at base: UnsafeMutableRawPointer, _ offset: Int, zeroMeansNone: Bool) {
        let checksum = base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
        guard !(zeroMeansNone && checksum == 0) else { return }
        let updated = apply(to: checksum)
        base.storeBytes(of: updated == 0 ? 0xFFFF : updated, toByteOffset: offset, as: UInt16.self)
    }
}
