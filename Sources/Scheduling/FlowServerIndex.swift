import Glibc
import Packet
import Synchronization

/// Which real server each connection went to, by flow, readable by every worker: an ICMP error about a
/// connection (a router on the client's path quoting the server's reply VIP:VPORT → client) comes from a
/// third address, so the NIC hashes it to another queue than the connection's, whose worker does not hold
/// the connection. That worker looks the flow up here when its own table misses.
///
/// Why this shape: errors are rare and connections many, so the cost belongs on the error, not on packets.
/// A new connection costs one relaxed 64-bit store (any worker, no lock, no probing); established packets
/// cost nothing. The table is direct-mapped by the flow hash and a newer connection simply overwrites an
/// older one's word, so it needs no expiry, no sequence number and no partitions: a word is the whole
/// entry, written and read atomically. What is lost is only the odd overwritten (or ended) connection,
/// whose error is then dropped as before.
///
/// A word (0: empty): bits 32...63 the flow's fingerprint (the high half of `FlowKey.flowHash64`, whose low
/// half placed it), bit 31 set, bits 24...30 a tag of the server's endpoint hash, bits 0...23 the server's
/// counter cell (its identity across configurations; the reader resolves it to the current server). A
/// reader accepts a word only when the fingerprint is its flow's (another flow passes with probability
/// 2^-32) and the tag is the endpoint's the cell now names, so a cell released and given to another server
/// (cells are reused last) is refused but for a 1 in 128 tag collision on top of that. A word left by an
/// ended connection still names the server that served the flow.
///
/// Memory is allocated zeroed (calloc: untouched zero pages) or is the caller's (e.g. a file mapping that
/// outlives the process, where a word stays valid as it is).
public final class FlowServerIndex: @unchecked Sendable {
    public let entries: Int
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    /// True when `init` allocated `words` (freed in `deinit`).
    private let ownsMemory: Bool

    /// Cells this table can name (24 bits): a `ConnectionStateFile` has at most this many.
    public static let cellLimit = 1 << 24

    /// `entries` rounded up to a power of two. Memory the process cannot have stops it, as for every table
    /// reserved in process memory (see `SharedFlowTable`).
    public init(entries: Int) {
        self.entries = Self.roundedEntries(entries)
        guard let memory = calloc(self.entries, 8) else {
            fatalError("cannot reserve \(self.entries * 8) bytes for the flow server index")
        }
        words = memory.bindMemory(to: Atomic<UInt64>.self, capacity: self.entries)
        ownsMemory = true
    }

    /// A table over `memory` (`byteCount(entries:)` bytes, 8-byte aligned), which the caller keeps valid while
    /// the table and its views live. `restoring`: the words found there are kept (any word is valid, a torn
    /// one cannot exist); otherwise the table starts empty, zeroing the memory unless `zeroed` says it is.
    public init(entries: Int, memory: UnsafeMutableRawPointer, restoring: Bool, zeroed: Bool = false) {
        precondition(Int(bitPattern: memory) & 7 == 0, "flow server index memory must be 8-byte aligned")
        self.entries = Self.roundedEntries(entries)
        if !restoring && !zeroed { memory.initializeMemory(as: UInt8.self, repeating: 0, count: self.entries * 8) }
        words = memory.bindMemory(to: Atomic<UInt64>.self, capacity: self.entries)
        ownsMemory = false
    }

    deinit { if ownsMemory { free(UnsafeMutableRawPointer(words)) } }

    /// A power of two, at least 64.
    public static func roundedEntries(_ entries: Int) -> Int {
        var rounded = 64
        while rounded < entries { rounded <<= 1 }
        return rounded
    }

    /// The bytes a table needs over caller-provided memory (8 per entry).
    public static func byteCount(entries: Int) -> Int { roundedEntries(entries) * 8 }

    /// The trivial handle workers use (no ARC on the packet path); valid while the table lives.
    public var view: FlowServerIndexView { FlowServerIndexView(words: words, mask: entries - 1) }
}

/// What a `FlowServerIndex` word says about a flow: the cell its server held, and a tag to check that the
/// cell still names that server.
public struct FlowServer: Equatable, Sendable {
    public var cell: UInt32
    @usableFromInline let tag: UInt64

    @inlinable
    init(cell: UInt32, tag: UInt64) { self.cell = cell; self.tag = tag }

    /// Whether the server that now holds `cell`, whose endpoint hash is `endpointHash`, can be the one the
    /// flow went to.
    @inlinable @inline(__always)
    public func isHeld(byEndpoint endpointHash: UInt64) -> Bool { FlowServerIndexView.tag(endpointHash) == tag }
}

/// A worker's access to the `FlowServerIndex`: every worker writes and reads all of it.
public struct FlowServerIndexView {
    @usableFromInline let words: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let mask: Int

    @usableFromInline static let present: UInt64 = 1 << 31
    @usableFromInline static let cellMask: UInt64 = 0xFF_FFFF

    @inlinable @inline(__always)
    static func tag(_ endpointHash: UInt64) -> UInt64 { (endpointHash >> 57) << 24 }

    /// Records that the connection of `key` went to the server holding `cell` (its endpoint hash
    /// `endpointHash`), over whatever the word held. A server without a cell (beyond `cellLimit`) is not
    /// recorded: nothing could name it across configurations.
    @inlinable @inline(__always)
    public func record(_ key: FlowKey, cell: UInt32, endpointHash: UInt64) {
        guard Int(cell) < FlowServerIndex.cellLimit else { return }
        let hash = key.flowHash64
        let word = hash & 0xFFFF_FFFF_0000_0000 | Self.present | Self.tag(endpointHash) | UInt64(cell)
        words[Int(truncatingIfNeeded: hash) & mask].store(word, ordering: .relaxed)
    }

    /// The address of `key`'s word, to prefetch before `record`.
    @inlinable @inline(__always)
    public func line(of key: FlowKey) -> UnsafeRawPointer {
        UnsafeRawPointer(words + (Int(truncatingIfNeeded: key.flowHash64) & mask))
    }

    /// `line(of:)` from the flow's `flowHash`, the low half of the `flowHash64` that places its word, which
    /// a packet has already computed: the prefetch waits for no hashing. (Only for a prefetch: a table of
    /// 2^32 words or more is placed by more bits than these.)
    @inlinable @inline(__always)
    public func line(flowHash: UInt32) -> UnsafeRawPointer {
        UnsafeRawPointer(words + (Int(truncatingIfNeeded: flowHash) & mask))
    }

    /// The server last recorded for `key`, if the word there is `key`'s (by fingerprint).
    @inlinable @inline(__always)
    public func lookup(_ key: FlowKey) -> FlowServer? {
        let hash = key.flowHash64
        let word = words[Int(truncatingIfNeeded: hash) & mask].load(ordering: .relaxed)
        guard word & Self.present != 0, word >> 32 == hash >> 32 else { return nil }
        return FlowServer(cell: UInt32(word & Self.cellMask), tag: word & (0x7F << 24))
    }
}
