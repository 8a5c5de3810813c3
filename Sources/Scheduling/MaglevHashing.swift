import Packet

/// `mh`: Maglev hashing (`ip_vs_mh.c`, after Google's Maglev paper, section 3.4).
///
/// A lookup table of `tableSize` entries (IPVS's default prime, 4093) is filled by letting every server with
/// weight claim entries in turn along its own permutation of the table (`offset`, `offset + skip`, ...
/// mod size, skipping taken entries), `turns` claims per round: its weight divided by the gcd of the
/// weights, shifted right so the largest is at most 6 bits (IPVS's `rshift`), at least 1. A client address
/// (plus its port with `mh-port`) hashes to one entry. Without `mh-fallback` an unusable server means no
/// server; with it the following hash offsets are tried.
///
/// The permutations depend only on each server's `endpointHash` and the hashes use fixed keys, so every
/// director with the same real-server list builds the same table and ECMP may send a flow to any of them.
/// The hash function is this project's (`StableHash`), not the kernel's hsiphash: tables agree between
/// xdirectors, not with a kernel IPVS. The table is built from the current weights, where IPVS uses each
/// server's last non-zero weight: here quiescing a server (weight 0) hands its entries to the others,
/// where IPVS keeps them and its clients get no server (or, with mh-fallback, the next entry's).
public enum MaglevHashing: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .mh }

    /// IPVS's default table size (`CONFIG_IP_VS_MH_TAB_INDEX` 12: the fifth prime, 4093).
    public static let tableSize = 4093
    /// IPVS `IP_VS_MH_TAB_BITS` for that size: weights are scaled to at most this many bits.
    static let weightBits = 6
    @usableFromInline static let offsetKey: UInt64 = 2_654_435_761
    static let skipKey: UInt64 = 2_654_446_892

    public static func makeState(destinations: UnsafeBufferPointer<SchedulingDestination>) -> SchedulerState {
        var state = SchedulerState()
        destinationsChanged(state: &state, destinations: destinations)
        return state
    }

    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        HashBuckets.refill(&state, count: tableSize) { populate($0, destinations) }
    }

    /// The lookup table for `destinations` (entries are destination indices, -1 when no server has weight).
    public static func lookupTable(_ destinations: UnsafeBufferPointer<SchedulingDestination>) -> [Int32] {
        var table = [Int32](repeating: -1, count: tableSize)
        table.withUnsafeMutableBufferPointer { populate($0.baseAddress!, destinations) }
        return table
    }

    static func populate(_ table: UnsafeMutablePointer<Int32>, _ destinations: UnsafeBufferPointer<SchedulingDestination>) {
        table.update(repeating: -1, count: tableSize)
        var divisor: Int32 = 0
        var heaviest: Int32 = 0
        for destination in destinations where destination.weight > 0 {
            divisor = divisor == 0 ? destination.weight : WeightedRoundRobin.gcd(divisor, destination.weight)
            heaviest = max(heaviest, destination.weight)
        }
        guard divisor > 0 else { return }
        let scaledMax = heaviest / divisor
        let shift = max(0, (32 - scaledMax.leadingZeroBitCount) - weightBits)
        var next = [Int](repeating: 0, count: destinations.count)
        var skip = [Int](repeating: 1, count: destinations.count)
        var turns = [Int](repeating: 0, count: destinations.count)
        for (index, destination) in destinations.enumerated() {
            next[index] = Int(StableHash.mix(destination.endpointHash, key: offsetKey) % UInt64(tableSize))
            skip[index] = Int(StableHash.mix(destination.endpointHash, key: skipKey) % UInt64(tableSize - 1)) + 1
            let weight = max(destination.weight, 0)
            let scaled = Int((weight / divisor) >> shift)
            turns[index] = scaled > 0 ? scaled : (weight != 0 ? 1 : 0)
        }
        var taken = [Bool](repeating: false, count: tableSize)
        var filled = 0
        while filled < tableSize {
            for index in destinations.indices where turns[index] > 0 {
                for _ in 0..<turns[index] {
                    var entry = next[index]
                    while taken[entry] {
                        entry += skip[index]
                        if entry >= tableSize { entry -= tableSize }
                    }
                    next[index] = entry
                    taken[entry] = true
                    table[entry] = Int32(index)
                    filled += 1
                    if filled == tableSize { return }
                }
            }
        }
    }

    @inlinable @inline(__always)
    static func entry(_ flow: FlowKey, port: UInt16, offset: Int) -> Int {
        let address = flow.srcHi &* 0x9E37_79B9_7F4A_7C15 ^ flow.srcLo
        let input = address ^ (UInt64(port) << 32 | UInt64(UInt32(truncatingIfNeeded: offset)))
        return Int(StableHash.mix(input, key: offsetKey) % UInt64(tableSize))
    }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        let port = state.flags.contains(.port) ? flow.srcPort : 0
        let home = entry(flow, port: port, offset: 0)
        guard let table = state.buckets, Int(state.storageCount) == tableSize else { return nil }
        let first = Int(table[home])
        guard first >= 0 && first < destinations.count else { return nil }
        if destinations[first].acceptsNewConnections { return first }
        guard state.flags.contains(.fallback) else { return nil }
        for offset in 0..<tableSize {
            let index = Int(table[entry(flow, port: port, offset: (offset + home) % tableSize)])
            guard index >= 0 && index < destinations.count else { return nil }
            if destinations[index].acceptsNewConnections { return index }
        }
        return nil
    }
}

/// Hashes that are the same in every process and on every machine (unlike Swift's seeded `Hasher`), for
/// what several directors must agree on.
public enum StableHash {
    /// A 64-bit finaliser (splitmix64's) of `value` under `key`.
    @inlinable @inline(__always)
    public static func mix(_ value: UInt64, key: UInt64) -> UInt64 {
        var z = value &+ key &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A real server's identity for Maglev: its address (16 bytes, IPv4 in the low 4 of an IPv4-mapped
    /// form is not used: the family is mixed in) and port.
    public static func endpoint(_ address: IPAddress, port: UInt16) -> UInt64 {
        let hi: UInt64, lo: UInt64
        switch address {
        case .v4(let value): (hi, lo) = (0, UInt64(value))
        case .v6(let h, let l): (hi, lo) = (h, l)
        }
        let family = UInt64(address.family.rawValue)
        return mix(mix(hi ^ family << 56, key: 0x5EED) ^ lo, key: UInt64(port) << 8 | family)
    }
}
