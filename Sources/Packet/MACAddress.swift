/// A 48-bit Ethernet address, stored in the low 48 bits of a `UInt64` (first byte most significant).
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64

    public static let zero = MACAddress(value: 0)

    public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 6 else { return nil }
        self.init(value: bytes.reduce(0) { $0 << 8 | UInt64($1) })
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive).
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var value: UInt64 = 0
        for part in parts {
            // Two hex digits exactly (UInt8(_:radix:) alone would take "+f" or "-0").
            guard part.count == 2, part.allSatisfy({ $0.isASCII && $0.isHexDigit }),
                  let byte = UInt8(part, radix: 16) else { return nil }
            value = value << 8 | UInt64(byte)
        }
        self.init(value: value)
    }

    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * $0)) } }

    public var description: String {
        bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }

    /// Writes the six bytes at `pointer` in wire order.
    @inline(__always)
    public func write(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: UInt32(truncatingIfNeeded: value >> 16).bigEndian, as: UInt32.self)
        (pointer + 4).storeBytes(of: UInt16(truncatingIfNeeded: value).bigEndian, as: UInt16.self)
    }
}

/// An Ethernet header's destination and source MACs as their 12 bytes lie on the wire, in two words ready
/// to store: worked out once per real server (the snapshot keeps one per destination) rather than per packet.
public struct EthernetAddresses: Equatable, Sendable {
    /// Bytes 0-7 (the destination and the source's first two bytes) and 8-11 (the source's last four), each
    /// as the value whose in-memory bytes are those wire bytes.
    public let head: UInt64
    public let tail: UInt32

    @inlinable
    public init(destination: MACAddress, source: MACAddress) {
        head = (destination.value << 16 | source.value >> 32).bigEndian
        tail = UInt32(truncatingIfNeeded: source.value).bigEndian
    }

    /// Writes both MACs into the Ethernet header at `frame`.
    @inlinable @inline(__always)
    public func store(_ frame: UnsafeMutableRawPointer) {
        frame.storeBytes(of: head, toByteOffset: FieldOffset.Ethernet.destination, as: UInt64.self)
        frame.storeBytes(of: tail, toByteOffset: FieldOffset.Ethernet.destination &+ 8, as: UInt32.self)
    }
}
