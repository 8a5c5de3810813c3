import Packet
import Scheduling
import Synchronization

/// What a NAT or FULLNAT reply needs to be translated back, found by the reply's own tuple.
public struct ReplyTranslation: Equatable, Sendable {
    /// The reply's new source: the service's VIP and port.
    public var source: L4Endpoint
    /// The client. For NAT it is already the reply's destination; FULLNAT changes the destination to it.
    public var client: L4Endpoint
    /// The next hop towards the client: the source MAC of the connection's first packet.
    public var clientMAC: UInt64
    public var fullNAT: Bool
    /// The real server's counter cell (`SchedulingDestination.noCell` for none), so the worker that
    /// translates a reply counts it for that server.
    public var cell: UInt32

    public init(source: L4Endpoint, client: L4Endpoint, clientMAC: UInt64, fullNAT: Bool,
                cell: UInt32 = SchedulingDestination.noCell) {
        self.source = source; self.client = client; self.clientMAC = clientMAC; self.fullNAT = fullNAT
        self.cell = cell
    }
}

/// The replies of translated connections, indexed by the tuple the real server answers with, readable by
/// every worker: a reply usually arrives on another queue than its request. A `SharedFlowTable` (one
/// partition per worker, single writer, seqlocked entries); this type only says how a translation is stored.
public final class ReplyIndex: @unchecked Sendable {
    public let table: SharedFlowTable
    public var partitions: Int { table.partitions }

    public init(partitions: Int, entriesPerPartition: Int) {
        table = SharedFlowTable(partitions: partitions, entriesPerPartition: entriesPerPartition)
    }

    /// An index over an existing table, e.g. one laid over a `ConnectionStateFile` (which keeps it).
    public init(table: SharedFlowTable) {
        self.table = table
    }

    /// The handle of the worker that owns `partition`. Valid while the index lives.
    public func view(partition: Int) -> ReplyIndexView { ReplyIndexView(table: table.view(partition: partition)) }
}

/// A worker's access to the reply index: it writes its own partition and reads all of them.
public struct ReplyIndexView {
    let table: SharedFlowTableView
    /// The partition this worker writes.
    public var own: Int { table.own }

    private static let fullNATFlag: UInt8 = 1

    /// Publishes the reply tuple `key` of a connection this worker owns; returns the entry's index (to refresh
    /// or retire it later), or nil when every probed entry holds a live connection.
    @inline(__always)
    public func insert(_ key: FlowKey, _ value: ReplyTranslation, expires: UInt32, now: UInt32) -> Int32? {
        let (sourceHi, sourceLo) = Self.words(value.source.address)
        let (clientHi, clientLo) = Self.words(value.client.address)
        var words = SIMD8<UInt64>.zero
        (words[0], words[1], words[2], words[3], words[4]) = (sourceHi, sourceLo, clientHi, clientLo, value.clientMAC)
        words[5] = UInt64(value.cell)
        let ports = UInt32(value.source.port) | UInt32(value.client.port) << 16
        let record = SharedFlowRecord(words: words, small: ports, flags: value.fullNAT ? Self.fullNATFlag : 0)
        return table.insert(key, record, expires: expires, now: now)
    }

    @inline(__always)
    public func refresh(_ index: Int32, expires: UInt32) { table.refresh(index, expires: expires) }

    @inline(__always)
    public func retire(_ index: Int32) { table.retire(index) }

    /// The live translation for reply tuple `key`, this worker's first; `partition` tells whose it was.
    @inline(__always)
    public func lookup(_ key: FlowKey, now: UInt32, partition: inout Int) -> ReplyTranslation? {
        guard let record = table.lookup(key, now: now, partition: &partition) else { return nil }
        return ReplyTranslation(
            source: L4Endpoint(address: Self.address(key.family, record.words[0], record.words[1]),
                               port: UInt16(truncatingIfNeeded: record.small)),
            client: L4Endpoint(address: Self.address(key.family, record.words[2], record.words[3]),
                               port: UInt16(truncatingIfNeeded: record.small >> 16)),
            clientMAC: record.words[4], fullNAT: record.flags & Self.fullNATFlag != 0,
            cell: UInt32(truncatingIfNeeded: record.words[5]))
    }

    /// An address as two words (IPv4 in the low word), as `FlowKey` holds them.
    @inline(__always)
    static func words(_ address: IPAddress) -> (UInt64, UInt64) {
        switch address {
        case .v4(let value): return (0, UInt64(value))
        case .v6(let hi, let lo): return (hi, lo)
        }
    }

    @inline(__always)
    static func address(_ family: UInt8, _ hi: UInt64, _ lo: UInt64) -> IPAddress {
        family == IPAddress.Family.ipv4.rawValue ? .v4(UInt32(truncatingIfNeeded: lo)) : .v6(hi: hi, lo: lo)
    }
}
