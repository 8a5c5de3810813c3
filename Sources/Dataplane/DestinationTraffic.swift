import Glibc
import Synchronization

/// Traffic per real server (`ipvsadm -L --stats/--rate`, Prometheus), counted by the workers: one row per
/// worker, one cell per counter cell of the `DestinationCounterStore` (the server's identity), each written
/// by its row's worker alone with relaxed loads and stores (no read-modify-write) and read by anyone.
///
/// A cell is one cache line (five counters, padded), so two servers never share a line and a worker's
/// writes never touch a line another worker writes. The rows are one anonymous `MAP_NORESERVE` mapping:
/// the pages of cells no server ever used are never backed by memory.
public final class DestinationTrafficStore: @unchecked Sendable {
    public let workers: Int
    public let capacity: Int
    private let base: UnsafeMutablePointer<Atomic<UInt64>>
    private let byteCount: Int

    /// Counters in a cell, padded to a cache line.
    static let stride = 8
    static let connections = 0, inPackets = 1, outPackets = 2, inBytes = 3, outBytes = 4

    /// `capacity`: the counter store's cell count.
    public init(workers: Int, capacity: Int) {
        precondition(workers > 0 && capacity > 0, "traffic store size out of range")
        self.workers = workers
        self.capacity = capacity
        byteCount = workers * capacity * Self.stride * MemoryLayout<UInt64>.stride
        let memory = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let memory, memory != MAP_FAILED else { fatalError("cannot map the per-server traffic counters") }
        // Anonymous pages read as zero, and a zero word is an `Atomic<UInt64>` holding 0.
        base = memory.bindMemory(to: Atomic<UInt64>.self, capacity: byteCount / MemoryLayout<UInt64>.stride)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(base), byteCount)
    }

    /// The traffic of server `cell` summed over the workers.
    public func totals(_ cell: UInt32) -> TrafficStats {
        var sum = TrafficStats.zero
        for worker in 0..<workers { sum += self.worker(worker, cell) }
        return sum
    }

    /// The traffic of server `cell` counted by worker `w`.
    public func worker(_ w: Int, _ cell: UInt32) -> TrafficStats {
        guard w >= 0 && w < workers && Int(cell) < capacity else { return .zero }
        let counters = base + (w * capacity + Int(cell)) * Self.stride
        func load(_ index: Int) -> UInt64 { counters[index].load(ordering: .relaxed) }
        return TrafficStats(connections: load(Self.connections), inPackets: load(Self.inPackets),
                            outPackets: load(Self.outPackets), inBytes: load(Self.inBytes),
                            outBytes: load(Self.outBytes))
    }

    /// Worker `w`'s writer (a trivial handle for the hot path). Valid while the store lives.
    func writer(worker w: Int) -> DestinationTrafficWriter {
        precondition(w >= 0 && w < workers, "worker out of range")
        return DestinationTrafficWriter(row: base + w * capacity * Self.stride, capacity: capacity)
    }
}

/// One worker's row of a `DestinationTrafficStore`; counts nothing without a row or for a cell outside it.
struct DestinationTrafficWriter {
    let row: UnsafeMutablePointer<Atomic<UInt64>>?
    let capacity: Int

    static var none: DestinationTrafficWriter { DestinationTrafficWriter(row: nil, capacity: 0) }

    /// A packet of `bytes` to the real server of `cell`, `newConnection` when it opened a connection.
    @inline(__always)
    func countIn(_ cell: UInt32, bytes: Int, newConnection: Bool) {
        guard let row, Int(cell) < capacity else { return }
        let counters = row + Int(cell) * DestinationTrafficStore.stride
        if newConnection { Self.add(counters + DestinationTrafficStore.connections, 1) }
        Self.add(counters + DestinationTrafficStore.inPackets, 1)
        Self.add(counters + DestinationTrafficStore.inBytes, UInt64(truncatingIfNeeded: bytes))
    }

    /// A packet of `bytes` from the real server of `cell` back to its client.
    @inline(__always)
    func countOut(_ cell: UInt32, bytes: Int) {
        guard let row, Int(cell) < capacity else { return }
        let counters = row + Int(cell) * DestinationTrafficStore.stride
        Self.add(counters + DestinationTrafficStore.outPackets, 1)
        Self.add(counters + DestinationTrafficStore.outBytes, UInt64(truncatingIfNeeded: bytes))
    }

    @inline(__always)
    private static func add(_ counter: UnsafeMutablePointer<Atomic<UInt64>>, _ amount: UInt64) {
        counter.pointee.store(counter.pointee.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }
}
