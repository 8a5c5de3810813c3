import Packet
import Scheduling

/// How the first fragment of a datagram was forwarded, so its later fragments (which carry no ports) go the
/// same way whichever worker receives them. The rewrite's own parameters are recorded rather than a
/// snapshot index: a worker on an older or newer snapshot applies exactly what the first fragment got.
public struct FragmentRewrite: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        /// The first fragment was dropped (or answered with an ICMP error): the datagram is lost, so are these.
        case drop = 0
        /// Direct routing: MACs and TTL only.
        case directRouting = 1
        /// Encapsulated as it is towards `destination` (the real server reassembles after decapsulation).
        case tunnel = 2
        /// NAT or FULLNAT, either way: the addresses only (the ports are in the first fragment).
        case translation = 3
    }

    public var kind: Kind
    /// Translation: the new source address (nil: unchanged).
    public var source: IPAddress?
    /// Translation: the new destination address (nil: unchanged); tunnel: the outer destination.
    public var destination: IPAddress?
    /// The next hop's MAC, as `MACAddress.value` holds it.
    public var mac: UInt64
    public var tunnel: TunnelParameters
    /// The first fragment's ports (source, destination): a tunnelled fragment takes the same flow hash, so
    /// the network spreads it (GUE source port, IPv6 flow label) with its first.
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// The real server's counter cell, for its traffic.
    public var cell: UInt32
    /// A real server's reply (counted as outgoing traffic) rather than a client's packet.
    public var isReply: Bool

    public init(kind: Kind, source: IPAddress? = nil, destination: IPAddress? = nil, mac: UInt64 = 0,
                tunnel: TunnelParameters = TunnelParameters(type: .ipip), sourcePort: UInt16 = 0,
                destinationPort: UInt16 = 0, cell: UInt32 = SchedulingDestination.noCell, isReply: Bool = false) {
        self.kind = kind; self.source = source; self.destination = destination; self.mac = mac; self.tunnel = tunnel
        self.sourcePort = sourcePort; self.destinationPort = destinationPort; self.cell = cell; self.isReply = isReply
    }
}

/// The datagrams whose first fragment a worker forwarded, by (source, destination, protocol, identification),
/// readable by every worker: a datagram's fragments may arrive on different queues. A `SharedFlowTable` of its
/// own (one partition per worker, single writer, seqlocked entries), with a short expiry: a datagram's
/// fragments arrive together, and an identification is reused once the sender wraps (RFC 6864).
public final class FragmentTable: @unchecked Sendable {
    public let table: SharedFlowTable
    /// Seconds a first fragment's record lives (on the coarse clock of whole seconds: 2 to 3 s).
    public static let lifetime: UInt32 = 3
    /// Records per worker: at 128 bytes each, 512 KiB, some thousands of datagrams in flight per worker.
    public static let defaultEntriesPerPartition = 4096

    public init(partitions: Int, entriesPerPartition: Int = FragmentTable.defaultEntriesPerPartition) {
        table = SharedFlowTable(partitions: partitions, entriesPerPartition: entriesPerPartition)
    }

    /// The handle of the worker that owns `partition`. Valid while the table lives.
    public func view(partition: Int) -> FragmentTableView { FragmentTableView(table: table.view(partition: partition)) }
}

/// A worker's access to the fragment table: it writes its own partition and reads all of them.
public struct FragmentTableView {
    let table: SharedFlowTableView

    // Flag bits of the record beside the kind (low two bits).
    private static let hasSource: UInt8 = 0x04, hasDestination: UInt8 = 0x08, reply: UInt8 = 0x10
    private static let sourceIPv6: UInt8 = 0x20, destinationIPv6: UInt8 = 0x40

    /// The table's key for a fragment of `parsed` (`.firstFragment` or `.fragment`): its addresses, protocol
    /// and family, the identification in place of the ports.
    @inline(__always)
    public static func key(of parsed: ParsedFrame) -> FlowKey {
        var key = parsed.key
        key.srcPort = UInt16(truncatingIfNeeded: parsed.fragmentID >> 16)
        key.dstPort = UInt16(truncatingIfNeeded: parsed.fragmentID)
        return key
    }

    /// Records how the first fragment keyed `key` was forwarded; false when every probed entry holds another
    /// live datagram.
    @inline(__always)
    public func insert(_ key: FlowKey, _ rewrite: FragmentRewrite, now: UInt32) -> Bool {
        var words = SIMD8<UInt64>.zero
        var flags = rewrite.kind.rawValue
        if rewrite.isReply { flags |= Self.reply }
        if let source = rewrite.source {
            (words[0], words[1]) = ReplyIndexView.words(source)
            flags |= Self.hasSource | (source.family == .ipv6 ? Self.sourceIPv6 : 0)
        }
        if let destination = rewrite.destination {
            (words[2], words[3]) = ReplyIndexView.words(destination)
            flags |= Self.hasDestination | (destination.family == .ipv6 ? Self.destinationIPv6 : 0)
        }
        words[4] = rewrite.mac
        words[5] = UInt64(rewrite.tunnel.type.rawValue) | (rewrite.tunnel.checksum ? 1 << 8 : 0)
            | UInt64(rewrite.tunnel.port) << 16
        words[6] = UInt64(rewrite.sourcePort) | UInt64(rewrite.destinationPort) << 16
        let record = SharedFlowRecord(words: words, small: rewrite.cell, flags: flags)
        return table.insert(key, record, expires: now &+ FragmentTable.lifetime, now: now) != nil
    }

    /// How the first fragment of `key`'s datagram went, if a worker recorded it and it is still live.
    @inline(__always)
    public func lookup(_ key: FlowKey, now: UInt32) -> FragmentRewrite? {
        var partition = 0
        guard let record = table.lookup(key, now: now, partition: &partition) else { return nil }
        let flags = record.flags
        let words = record.words
        let tunnel = TunnelParameters(type: TunnelType(rawValue: UInt8(truncatingIfNeeded: words[5])) ?? .ipip,
                                      port: UInt16(truncatingIfNeeded: words[5] >> 16), checksum: words[5] & 1 << 8 != 0)
        return FragmentRewrite(
            kind: FragmentRewrite.Kind(rawValue: flags & 0x03) ?? .drop,
            source: flags & Self.hasSource != 0 ? Self.address(ipv6: flags & Self.sourceIPv6 != 0, words[0], words[1]) : nil,
            destination: flags & Self.hasDestination != 0
                ? Self.address(ipv6: flags & Self.destinationIPv6 != 0, words[2], words[3]) : nil,
            mac: words[4], tunnel: tunnel, sourcePort: UInt16(truncatingIfNeeded: words[6]),
            destinationPort: UInt16(truncatingIfNeeded: words[6] >> 16), cell: record.small,
            isReply: flags & Self.reply != 0)
    }

    @inline(__always)
    private static func address(ipv6: Bool, _ hi: UInt64, _ lo: UInt64) -> IPAddress {
        ipv6 ? .v6(hi: hi, lo: lo) : .v4(UInt32(truncatingIfNeeded: lo))
    }
}
