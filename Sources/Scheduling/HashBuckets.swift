import Packet

/// The static bucket tables of `dh` and `sh`: 256 buckets, each naming a destination index (-1 when the
/// list is empty), filled as IPVS fills them: the list is walked in order, each server taking `weight`
/// consecutive buckets (at least one, so a weight-0 server takes one and is skipped at lookup), wrapping
/// around until every bucket is assigned.
public enum HashBuckets {
    public static let count = 256

    /// Gives `state` a table of `count` destination indices (keeping the one it has when the size matches, so
    /// flags and everything else in the state stay) and lets `fill` write it. dh, sh and mh keep theirs so.
    static func refill(_ state: inout SchedulerState, count: Int, _ fill: (UnsafeMutablePointer<Int32>) -> Void) {
        if state.buckets == nil || Int(state.storageCount) != count {
            Scheduler.release(&state)
            state.storage = UnsafeMutableRawPointer(UnsafeMutablePointer<Int32>.allocate(capacity: count))
            state.storageCount = Int32(count)
        }
        fill(state.buckets!)
    }

    /// Refills the 256 buckets, `weighted` as sh (true) or one bucket per turn as dh (false).
    static func refill(_ state: inout SchedulerState, _ destinations: UnsafeBufferPointer<SchedulingDestination>,
                       weighted: Bool) {
        refill(&state, count: count) { fill($0, destinations, weighted: weighted) }
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
        var state = SchedulerState()
        HashBuckets.refill(&state, destinations, weighted: false)
        return state
    }

    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        HashBuckets.refill(&state, destinations, weighted: false)
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
        var state = SchedulerState()
        HashBuckets.refill(&state, destinations, weighted: true)
        return state
    }

    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        HashBuckets.refill(&state, destinations, weighted: true)
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
