import Packet

/// The static bucket tables of `dh` and `sh`: 256 buckets, each naming a destination index (-1 when the
/// list is empty), filled as IPVS fills them: the list is walked in order, each server taking `weight`
/// consecutive buckets (at least one, so a weight-0 server takes one and is skipped at lookup), wrapping
/// around until every bucket is assigned.
public enum HashBuckets {
    public static let count = 256

    /// A new table for `destinations`, `weighted` as sh (true) or one bucket per turn as dh (false).
    static func make(_ destinations: UnsafeBufferPointer<SchedulingDestination>, weighted: Bool) -> SchedulerState {
        var state = SchedulerState()
        let table = UnsafeMutablePointer<Int32>.allocate(capacity: count)
        state.storage = UnsafeMutableRawPointer(table)
        state.storageCount = Int32(count)
        fill(table, destinations, weighted: weighted)
        return state
    }

    static func fill(_ table: UnsafeMutablePointer<Int32>, _ destinations: UnsafeBufferPointer<SchedulingDestination>,
                     weighted: Bool) {
        guard !destinations.isEmpty else {
            table.update(repeating: -1, count: count)
            return
        }
        var current = 0
        var taken: Int32 = 0
        for bucket in 0..<count {
            table[bucket] = Int32(current)
            taken += 1
            if !weighted || taken >= destinations[current].weight {
                current = (current + 1) % destinations.count
                taken = 0
            }
        }
    }

    /// IPVS folds an IPv6 address into 32 bits by XOR of its four words (host order here).
    @inlinable @inline(__always)
    static func fold(hi: UInt64, lo: UInt64, family: UInt8) -> UInt32 {
        if family == IPAddress.Family.ipv4.rawValue { return UInt32(truncatingIfNeeded: lo) }
        let words = (hi >> 32) ^ hi ^ (lo >> 32) ^ lo
        return UInt32(truncatingIfNeeded: words)
    }

    /// The destination in `bucket` if it can take a connection now.
    @inlinable @inline(__always)
    static func usable(_ state: SchedulerState, _ bucket: Int,
                       _ destinations: UnsafeBufferPointer<SchedulingDestination>) -> Int? {
        guard let table = state.buckets, bucket < Int(state.storageCount) else { return nil }
        let index = Int(table[bucket])
        guard index >= 0 && index < destinations.count, destinations[index].acceptsNewConnections else { return nil }
        return index
    }
}

/// `dh`: destination hashing (`ip_vs_dh.c`): the packet's destination address picks one of 256 buckets
/// (`address * 2654435761`, low 8 bits), filled with the servers in turn; nil when that server cannot take
/// the connection (no fallback, as in IPVS).
public enum DestinationHashing: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .dh }

    public static func makeState(destinations: UnsafeBufferPointer<SchedulingDestination>) -> SchedulerState {
        HashBuckets.make(destinations, weighted: false)
    }

    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        guard let table = state.buckets else { state = makeState(destinations: destinations); return }
        HashBuckets.fill(table, destinations, weighted: false)
    }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        let folded = HashBuckets.fold(hi: flow.dstHi, lo: flow.dstLo, family: flow.family)
        let bucket = Int((folded &* 2_654_435_761) & 0xFF)
        return HashBuckets.usable(state, bucket, destinations)
    }
}

/// `sh`: source hashing (`ip_vs_sh.c`): the client address (plus its port with `sh-port`) picks one of 256
/// buckets, `hash_32(port + address, 8)`, where each server holds `weight` buckets. Without `sh-fallback` an
/// unusable server means no server; with it the following hash offsets are tried, up to all 256.
public enum SourceHashing: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .sh }

    public static func makeState(destinations: UnsafeBufferPointer<SchedulingDestination>) -> SchedulerState {
        HashBuckets.make(destinations, weighted: true)
    }

    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        guard let table = state.buckets else {
            let flags = state.flags
            state = makeState(destinations: destinations)
            state.flags = flags
            return
        }
        HashBuckets.fill(table, destinations, weighted: true)
    }

    /// IPVS `ip_vs_sh_hashkey`.
    @inlinable @inline(__always)
    static func bucket(_ folded: UInt32, port: UInt16, offset: Int) -> Int {
        let hashed = ((UInt32(port) &+ folded) &* 0x61C8_8647) >> 24
        return (offset &+ Int(hashed)) & (HashBuckets.count - 1)
    }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        let folded = HashBuckets.fold(hi: flow.srcHi, lo: flow.srcLo, family: flow.family)
        let port = state.flags.contains(.port) ? flow.srcPort : 0
        let home = bucket(folded, port: port, offset: 0)
        if let chosen = HashBuckets.usable(state, home, destinations) { return chosen }
        guard state.flags.contains(.fallback) else { return nil }
        for offset in 0..<HashBuckets.count {
            let next = bucket(folded, port: port, offset: (offset + home) % HashBuckets.count)
            if let chosen = HashBuckets.usable(state, next, destinations) { return chosen }
        }
        return nil
    }
}
