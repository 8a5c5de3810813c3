import Synchronization

/// Everything a worker counts, the unglamorous events included. The last case sizes the block.
public enum WorkerCounter: Int, CaseIterable, Sendable {
    case rxPackets, rxBytes, txPackets, txBytes
    case newConnections
    /// Forwarded without connection state because the table had no free slot.
    case connectionTableFull
    // Drops, by reason. The first six mirror Packet.ParseStatus.
    case dropTruncated, dropNotIP, dropFragment, dropUnsupportedProtocol, dropMalformed, dropBadIPv4Checksum
    case dropNoService
    /// The service has no real server that can take a new connection (all weight 0 or unresolved).
    case dropNoDestination
    /// The connection's real server has no known MAC address (neighbour failed).
    case dropUnresolvedDestination
    /// A TCP segment other than SYN with no connection (as IPVS, never scheduled).
    case dropTCPWithoutConnection
    case dropHopLimitExceeded
    case dropTXRingFull
    // Ring and wake-up events.
    case emptyPolls, fillRingShortfalls, rxWakeups, txKicks, txKickErrors

    public var name: String {
        // camelCase to snake_case, for listings and JSON.
        String(String(describing: self).flatMap { $0.isUppercase ? ["_", Character($0.lowercased())] : [$0] })
    }
}

/// One worker's counters: a cache-line-aligned block written by that worker alone (relaxed loads and
/// stores, no read-modify-write), read by anyone.
public final class WorkerCounterBlock: @unchecked Sendable {
    let base: UnsafeMutablePointer<Atomic<UInt64>>
    private static let slots = (WorkerCounter.allCases.count + 7) / 8 * 8

    public init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Self.slots * 8, alignment: 64)
        base = raw.bindMemory(to: Atomic<UInt64>.self, capacity: Self.slots)
        for i in 0..<Self.slots { (base + i).initialize(to: Atomic(0)) }
    }

    deinit {
        base.deinitialize(count: Self.slots)
        UnsafeMutableRawPointer(base).deallocate()
    }

    public subscript(counter: WorkerCounter) -> UInt64 { base[counter.rawValue].load(ordering: .relaxed) }

    public func values() -> [UInt64] { WorkerCounter.allCases.map { self[$0] } }

    /// A trivial handle for the hot path (no ARC when copied).
    var writer: CounterWriter { CounterWriter(base: base) }
}

/// The single writer's view of a counter block.
struct CounterWriter {
    let base: UnsafeMutablePointer<Atomic<UInt64>>

    @inline(__always)
    func add(_ counter: WorkerCounter, _ amount: UInt64 = 1) {
        let slot = base + counter.rawValue
        slot.pointee.store(slot.pointee.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }
}
