import Glibc
import Packet
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

    public init(source: L4Endpoint, client: L4Endpoint, clientMAC: UInt64, fullNAT: Bool) {
        self.source = source; self.client = client; self.clientMAC = clientMAC; self.fullNAT = fullNAT
    }
}

/// The replies of translated connections, indexed by the tuple the real server answers with, readable by
/// every worker: a reply usually arrives on another queue than its request. One partition per worker, each
/// written only by its worker (single writer, so no lock); entries are published with a per-entry sequence
/// number (a seqlock), so a reader on another core sees an entry whole or not at all. Entries expire with
/// their connection; the owner refreshes the expiry and reuses expired entries. Memory is reserved once
/// (anonymous mmap: pages cost nothing until written).
public final class ReplyIndex: @unchecked Sendable {
    /// Words of one entry: a cache line pair.
    static let entryWords = 16
    /// Entries probed from the hashed position before giving up.
    static let probeLimit = 16

    public let partitions: Int
    public let entriesPerPartition: Int
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    private let byteCount: Int

    /// `entriesPerPartition` is rounded up to a power of two.
    public init(partitions: Int, entriesPerPartition: Int) throws(DataplaneError) {
        var entries = 64
        while entries < entriesPerPartition { entries <<= 1 }
        self.partitions = max(partitions, 1)
        self.entriesPerPartition = entries
        byteCount = self.partitions * entries * Self.entryWords * 8
        let memory = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            throw DataplaneError("cannot reserve \(byteCount >> 20) MiB for the reply index", errno: errno)
        }
        // Zeroed memory is a valid array of Atomic<UInt64>(0): every entry empty.
        words = memory.bindMemory(to: Atomic<UInt64>.self, capacity: byteCount / 8)
    }

    deinit { munmap(UnsafeMutableRawPointer(words), byteCount) }

    /// The trivial handle a worker's engine uses: no ARC on the packet path. Valid while the index lives.
    public func view(partition: Int) -> ReplyIndexView {
        ReplyIndexView(words: words, partitions: partitions, mask: entriesPerPartition - 1,
                       own: min(max(partition, 0), partitions - 1))
    }
}

/// A worker's access to the reply index: it writes its own partition and reads all of them.
public struct ReplyIndexView {
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    let partitions: Int
    let mask: Int
    /// The partition this worker writes.
    public let own: Int

    // Word offsets within an entry.
    private static let seq = 0, meta = 1, keySrc = 2, keyDst = 4, ports = 6, newSrc = 7, newDst = 9, mac = 11

    @inline(__always)
    private func entry(_ partition: Int, _ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        words + ((partition &* (mask &+ 1) &+ index) &* ReplyIndex.entryWords)
    }

    @inline(__always)
    private static func meta(expires: UInt32, key: FlowKey, fullNAT: Bool) -> UInt64 {
        UInt64(expires) | UInt64(key.proto) << 32 | UInt64(key.family) << 40 | (fullNAT ? 1 << 48 : 0)
    }

    /// Publishes the reply tuple `key` of a connection this worker owns; returns the entry's index (to refresh
    /// or retire it later), or nil when every probed entry holds a live connection.
    @inline(__always)
    public func insert(_ key: FlowKey, _ value: ReplyTranslation, expires: UInt32, now: UInt32) -> Int32? {
        let start = Int(key.flowHash) & mask
        for probe in 0..<ReplyIndex.probeLimit {
            let index = (start &+ probe) & mask
            let e = entry(own, index)
            let meta = e[Self.meta].load(ordering: .relaxed)
            let current = UInt32(truncatingIfNeeded: meta)
            if meta != 0 && Self.isLive(current, now) && !matches(e, key) { continue }
            let sequence = e[Self.seq].load(ordering: .relaxed)
            e[Self.seq].store(sequence &+ 1, ordering: .relaxed)  // odd: being written
            atomicMemoryFence(ordering: .releasing)
            e[Self.keySrc].store(key.srcHi, ordering: .relaxed)
            e[Self.keySrc + 1].store(key.srcLo, ordering: .relaxed)
            e[Self.keyDst].store(key.dstHi, ordering: .relaxed)
            e[Self.keyDst + 1].store(key.dstLo, ordering: .relaxed)
            e[Self.ports].store(UInt64(key.srcPort) | UInt64(key.dstPort) << 16 | UInt64(value.source.port) << 32
                                | UInt64(value.client.port) << 48, ordering: .relaxed)
            let (sourceHi, sourceLo) = Self.words(value.source.address)
            let (clientHi, clientLo) = Self.words(value.client.address)
            e[Self.newSrc].store(sourceHi, ordering: .relaxed)
            e[Self.newSrc + 1].store(sourceLo, ordering: .relaxed)
            e[Self.newDst].store(clientHi, ordering: .relaxed)
            e[Self.newDst + 1].store(clientLo, ordering: .relaxed)
            e[Self.mac].store(value.clientMAC, ordering: .relaxed)
            e[Self.meta].store(Self.meta(expires: expires, key: key, fullNAT: value.fullNAT), ordering: .relaxed)
            e[Self.seq].store(sequence &+ 2, ordering: .releasing)  // even: published
            return Int32(index)
        }
        return nil
    }

    /// Moves the expiry of this worker's entry `index` (the connection's timer moved).
    @inline(__always)
    public func refresh(_ index: Int32, expires: UInt32) {
        let e = entry(own, Int(index))
        let meta = e[Self.meta].load(ordering: .relaxed)
        guard UInt32(truncatingIfNeeded: meta) != expires else { return }
        e[Self.meta].store(meta & ~0xFFFF_FFFF | UInt64(expires), ordering: .relaxed)
    }

    /// Retires this worker's entry `index` at once (its connection ended early).
    @inline(__always)
    public func retire(_ index: Int32) {
        let e = entry(own, Int(index))
        let meta = e[Self.meta].load(ordering: .relaxed)
        e[Self.meta].store(meta & ~0xFFFF_FFFF, ordering: .relaxed)
    }

    /// Finds the live entry for reply tuple `key`, in this worker's partition first, then in the others.
    /// `partition` tells whose it was.
    @inline(__always)
    public func lookup(_ key: FlowKey, now: UInt32, partition: inout Int) -> ReplyTranslation? {
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

    @inline(__always)
    private func lookup(in partition: Int, start: Int, _ key: FlowKey, now: UInt32) -> ReplyTranslation? {
        for probe in 0..<ReplyIndex.probeLimit {
            let e = entry(partition, (start &+ probe) & mask)
            for _ in 0..<4 {  // a few retries while the owner rewrites the entry
                let before = e[Self.seq].load(ordering: .acquiring)
                if before & 1 != 0 { continue }
                let meta = e[Self.meta].load(ordering: .relaxed)
                if meta == 0 { return nil }  // never used: the probe sequence ends here
                let hit = matches(e, key) && Self.isLive(UInt32(truncatingIfNeeded: meta), now)
                var result: ReplyTranslation? = nil
                if hit {
                    let ports = e[Self.ports].load(ordering: .relaxed)
                    result = ReplyTranslation(
                        source: L4Endpoint(address: Self.address(key.family, e[Self.newSrc].load(ordering: .relaxed),
                                                                 e[Self.newSrc + 1].load(ordering: .relaxed)),
                                           port: UInt16(truncatingIfNeeded: ports >> 32)),
                        client: L4Endpoint(address: Self.address(key.family, e[Self.newDst].load(ordering: .relaxed),
                                                                 e[Self.newDst + 1].load(ordering: .relaxed)),
                                           port: UInt16(truncatingIfNeeded: ports >> 48)),
                        clientMAC: e[Self.mac].load(ordering: .relaxed), fullNAT: meta & (1 << 48) != 0)
                }
                atomicMemoryFence(ordering: .acquiring)
                guard e[Self.seq].load(ordering: .relaxed) == before else { continue }
                if hit { return result }
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

    /// An address as the two words an entry stores (IPv4 in the low word), as `FlowKey` holds them.
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

    /// Wrap-safe: live while `expires` is ahead of `now`.
    @inline(__always)
    static func isLive(_ expires: UInt32, _ now: UInt32) -> Bool { Int32(bitPattern: expires &- now) > 0 }
}
