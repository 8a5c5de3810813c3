import Glibc
import Packet
import Synchronization

/// What an entry of a `SharedFlowTable` carries for its flow: eight words, a 32-bit field and 8 flag bits,
/// whose meaning is the user's (a reply's translation, a persistence template's real server, ...).
public struct SharedFlowRecord: Equatable, Sendable {
    public var words: SIMD8<UInt64>
    public var small: UInt32
    public var flags: UInt8

    public init(words: SIMD8<UInt64> = .zero, small: UInt32 = 0, flags: UInt8 = 0) {
        self.words = words; self.small = small; self.flags = flags
    }
}

/// Flow state that every worker must be able to read, without a lock: one partition per worker, each
/// written only by its worker (single writer), and every 128-byte entry published under its own sequence
/// number (a seqlock over relaxed atomic words), so a reader on another core sees an entry whole or not at
/// all. Entries expire at the time their owner gives and refreshes; expired entries are reused. Memory is
/// allocated zeroed at start (calloc: large blocks come as untouched zero pages) and never grows, or is the
/// caller's (`init(partitions:entriesPerPartition:memory:restoring:)`, e.g. a shared file mapping that
/// outlives the process). All-zero memory is an empty table.
public final class SharedFlowTable: @unchecked Sendable {
    /// Words of one entry: a cache line pair.
    static let entryWords = 16
    /// Entries probed from the hashed position before giving up.
    public static let probeLimit = 16

    public let partitions: Int
    public let entriesPerPartition: Int
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    /// True when `init` allocated `words` (freed in `deinit`).
    private let ownsMemory: Bool

    /// `entriesPerPartition` is rounded up to a power of two. Memory the process cannot have stops it, as
    /// Swift's own allocator does (the convention for every table reserved in process memory; what comes
    /// from outside, a file or a map, throws instead).
    public init(partitions: Int, entriesPerPartition: Int) {
        let entries = Self.roundedEntries(entriesPerPartition)
        self.partitions = max(partitions, 1)
        self.entriesPerPartition = entries
        guard let memory = calloc(self.partitions * entries, Self.entryWords * 8) else {
            fatalError("cannot reserve \(self.partitions * entries * Self.entryWords * 8) bytes for a shared flow table")
        }
        // Zeroed memory is a valid array of Atomic<UInt64>(0): every entry empty.
        words = memory.bindMemory(to: Atomic<UInt64>.self, capacity: self.partitions * entries * Self.entryWords)
        ownsMemory = true
    }

    /// A table over `memory`, which the caller provides and keeps valid while the table (and every view of
    /// it) lives: `byteCount(partitions:entriesPerPartition:)` bytes, 64-byte aligned; nothing is freed in
    /// `deinit`. `restoring` false: the table starts empty (the memory is zeroed, unless `zeroed` says it
    /// already is: fresh file pages stay untouched). `restoring` true: the entries found there are kept, the
    /// memory holding a table of the same shape; an entry its writer left half-written (the writer died
    /// between the two halves of its seqlock) is retired, so readers and the next writer are not stuck on it.
    /// Finding those reads every entry's first word, except in the byte ranges (from `memory`) for which
    /// `mayHoldData` answers false: a file mapping's holes, which reading would fill with pages.
    public init(partitions: Int, entriesPerPartition: Int, memory: UnsafeMutableRawPointer, restoring: Bool,
                zeroed: Bool = false, mayHoldData: ((_ offset: Int, _ length: Int) -> Bool)? = nil) {
        precondition(Int(bitPattern: memory) & 63 == 0, "shared flow table memory must be 64-byte aligned")
        let entries = Self.roundedEntries(entriesPerPartition)
        self.partitions = max(partitions, 1)
        self.entriesPerPartition = entries
        let total = self.partitions * entries
        if !restoring && !zeroed { memory.initializeMemory(as: UInt8.self, repeating: 0, count: total * Self.entryWords * 8) }
        words = memory.bindMemory(to: Atomic<UInt64>.self, capacity: total * Self.entryWords)
        ownsMemory = false
        if restoring {
            let chunk = 512  // entries: 64 KiB
            for first in stride(from: 0, to: total, by: chunk) {
                let count = min(chunk, total - first)
                if let mayHoldData, !mayHoldData(first * Self.entryWords * 8, count * Self.entryWords * 8) { continue }
                for entry in first..<first + count {
                    let e = words + entry * Self.entryWords
                    let sequence = e[0].load(ordering: .relaxed)
                    guard sequence & 1 != 0 else { continue }
                    e[1].store(e[1].load(ordering: .relaxed) & ~0xFFFF_FFFF, ordering: .relaxed)  // expiry 0: retired
                    e[0].store(sequence &+ 1, ordering: .relaxed)
                }
            }
        }
    }

    deinit { if ownsMemory { free(UnsafeMutableRawPointer(words)) } }

    /// The entries a partition gets for `entriesPerPartition`: a power of two, at least 64.
    public static func roundedEntries(_ entriesPerPartition: Int) -> Int {
        var entries = 64
        while entries < entriesPerPartition { entries <<= 1 }
        return entries
    }

    /// The bytes a table needs over caller-provided memory (128 per entry).
    public static func byteCount(partitions: Int, entriesPerPartition: Int) -> Int {
        max(partitions, 1) * roundedEntries(entriesPerPartition) * entryWords * 8
    }

    /// The trivial handle of the worker that owns `partition`: no ARC on the packet path. Valid while the
    /// table lives; it writes only its own partition.
    public func view(partition: Int) -> SharedFlowTableView {
        SharedFlowTableView(words: words, partitions: partitions, mask: entriesPerPartition - 1,
                            own: min(max(partition, 0), partitions - 1))
    }
}

/// A worker's access to a `SharedFlowTable`: it writes its own partition and reads all of them.
public struct SharedFlowTableView {
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    public let partitions: Int
    let mask: Int
    /// The partition this worker writes.
    public let own: Int

    // Word offsets within an entry: sequence, meta (expiry, protocol, family, flags), the key's addresses,
    // the key's ports with the record's 32-bit field, the record's eight words.
    private static let seq = 0, meta = 1, keySrc = 2, keyDst = 4, ports = 6, record = 7

    @inline(__always)
    private func entry(_ partition: Int, _ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        words + ((partition &* (mask &+ 1) &+ index) &* SharedFlowTable.entryWords)
    }

    /// Publishes `record` for `key` in this worker's partition, over an expired entry or the key's own;
    /// returns the entry's index (to refresh or retire it), or nil when every probed entry holds another
    /// live key (nothing live is ever evicted).
    @inline(__always)
    public func insert(_ key: FlowKey, _ record: SharedFlowRecord, expires: UInt32, now: UInt32) -> Int32? {
        let start = Int(key.flowHash) & mask
        for probe in 0..<SharedFlowTable.probeLimit {
            let index = (start &+ probe) & mask
            let e = entry(own, index)
            let meta = e[Self.meta].load(ordering: .relaxed)
            if meta != 0 && Self.isLive(UInt32(truncatingIfNeeded: meta), now) && !matches(e, key) { continue }
            let sequence = e[Self.seq].load(ordering: .relaxed)
            e[Self.seq].store(sequence &+ 1, ordering: .relaxed)  // odd: being written
            atomicMemoryFence(ordering: .releasing)
            e[Self.keySrc].store(key.srcHi, ordering: .relaxed)
            e[Self.keySrc + 1].store(key.srcLo, ordering: .relaxed)
            e[Self.keyDst].store(key.dstHi, ordering: .relaxed)
            e[Self.keyDst + 1].store(key.dstLo, ordering: .relaxed)
            e[Self.ports].store(UInt64(key.srcPort) | UInt64(key.dstPort) << 16 | UInt64(record.small) << 32,
                                ordering: .relaxed)
            for word in 0..<8 { e[Self.record + word].store(record.words[word], ordering: .relaxed) }
            e[Self.meta].store(UInt64(expires) | UInt64(key.proto) << 32 | UInt64(key.family) << 40
                               | UInt64(record.flags) << 48, ordering: .relaxed)
            e[Self.seq].store(sequence &+ 2, ordering: .releasing)  // even: published
            return Int32(index)
        }
        return nil
    }

    /// Moves the expiry of this worker's entry `index`.
    @inline(__always)
    public func refresh(_ index: Int32, expires: UInt32) {
        let e = entry(own, Int(index))
        let meta = e[Self.meta].load(ordering: .relaxed)
        guard UInt32(truncatingIfNeeded: meta) != expires else { return }
        e[Self.meta].store(meta & ~0xFFFF_FFFF | UInt64(expires), ordering: .relaxed)
    }

    /// Retires this worker's entry `index` at once.
    @inline(__always)
    public func retire(_ index: Int32) { refresh(index, expires: 0) }

    /// The live record of `key`, from this worker's partition first, then the others; `partition` tells
    /// whose it was.
    @inline(__always)
    public func lookup(_ key: FlowKey, now: UInt32, partition: inout Int) -> SharedFlowRecord? {
        let start = Int(key.flowHash) & mask
        for step in 0..<partitions {
            let p = step == 0 ? own : (step <= own ? step &- 1 : step)
            if let found = lookup(in: p, start: start, key, now: now) {
                partition = p
                return found
            }
        }
        return nil
    }

    /// Calls `body` with every partition's live record of `key` (at most one per partition), own first.
    @inline(__always)
    public func forEachLive(_ key: FlowKey, now: UInt32, _ body: (_ partition: Int, SharedFlowRecord) -> Void) {
        let start = Int(key.flowHash) & mask
        for step in 0..<partitions {
            let p = step == 0 ? own : (step <= own ? step &- 1 : step)
            if let found = lookup(in: p, start: start, key, now: now) { body(p, found) }
        }
    }

    @inline(__always)
    private func lookup(in partition: Int, start: Int, _ key: FlowKey, now: UInt32) -> SharedFlowRecord? {
        for probe in 0..<SharedFlowTable.probeLimit {
            let e = entry(partition, (start &+ probe) & mask)
            for _ in 0..<4 {  // a few retries while the owner rewrites the entry
                let before = e[Self.seq].load(ordering: .acquiring)
                if before & 1 != 0 { continue }
                let meta = e[Self.meta].load(ordering: .relaxed)
                if meta == 0 { return nil }  // never used: the probe sequence ends here
                let hit = matches(e, key) && Self.isLive(UInt32(truncatingIfNeeded: meta), now)
                var record = SharedFlowRecord()
                if hit {
                    for word in 0..<8 { record.words[word] = e[Self.record + word].load(ordering: .relaxed) }
                    record.small = UInt32(truncatingIfNeeded: e[Self.ports].load(ordering: .relaxed) >> 32)
                    record.flags = UInt8(truncatingIfNeeded: meta >> 48)
                }
                atomicMemoryFence(ordering: .acquiring)
                guard e[Self.seq].load(ordering: .relaxed) == before else { continue }
                if hit { return record }
                break
            }
        }
        return nil
    }

    @inline(__always)
    private func matches(_ e: UnsafeMutablePointer<Atomic<UInt64>>, _ key: FlowKey) -> Bool {
        let meta = e[Self.meta].load(ordering: .relaxed)
        let ports = e[Self.ports].load(ordering: .relaxed)
        return e[Self.keySrc + 1].load(ordering: .relaxed) == key.srcLo
            && e[Self.keyDst + 1].load(ordering: .relaxed) == key.dstLo
            && UInt16(truncatingIfNeeded: ports) == key.srcPort
            && UInt16(truncatingIfNeeded: ports >> 16) == key.dstPort
            && e[Self.keySrc].load(ordering: .relaxed) == key.srcHi
            && e[Self.keyDst].load(ordering: .relaxed) == key.dstHi
            && UInt8(truncatingIfNeeded: meta >> 32) == key.proto
            && UInt8(truncatingIfNeeded: meta >> 40) == key.family
    }

    /// Wrap-safe: live while `expires` is ahead of `now`.
    @inline(__always)
    public static func isLive(_ expires: UInt32, _ now: UInt32) -> Bool { Int32(bitPattern: expires &- now) > 0 }
}
