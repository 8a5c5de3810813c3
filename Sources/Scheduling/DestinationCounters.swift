import Synchronization

/// The connection counts of one real server, shared by every worker: IPVS's `activeconns`, `inactconns`,
/// `persistconns`, its thresholds and its `IP_VS_DEST_F_OVERLOAD` flag. Workers update it with relaxed
/// atomics (counts feed scheduling decisions, not synchronisation); the control side sets the thresholds
/// and reads the counts for listings.
///
/// Counts change by wrapping adds: a count cannot overflow (it is bounded by the connections the tables
/// hold), and a trapping `add` compiles to a compare-and-swap loop where a wrapping one is one locked add.
public struct DestinationCounterCell: ~Copyable {
    /// Connections in ESTABLISHED (IPVS `activeconns`).
    public let active = Atomic<Int32>(0)
    /// Every other connection (IPVS `inactconns`): TCP outside ESTABLISHED, and UDP.
    public let inactive = Atomic<Int32>(0)
    /// Persistence templates (IPVS `persistconns`).
    public let persistent = Atomic<Int32>(0)
    /// 1 while overloaded (IPVS `IP_VS_DEST_F_OVERLOAD`): no new connections.
    public let overloaded = Atomic<UInt32>(0)
    /// `-x`: 0 = no limit.
    public let upperThreshold = Atomic<UInt32>(0)
    /// `-y`: 0 = three quarters of the upper threshold.
    public let lowerThreshold = Atomic<UInt32>(0)

    public init() {}

    /// `activeconns + inactconns`, what the thresholds limit (IPVS `ip_vs_dest_totalconns`).
    @inlinable
    public var totalConnections: Int32 {
        active.load(ordering: .relaxed) &+ inactive.load(ordering: .relaxed)
    }

    /// A connection (or template) was bound to the server: counts it and raises the overload flag at the
    /// upper threshold (IPVS `ip_vs_bind_dest`).
    @inlinable
    public func bind(template: Bool) {
        if template {
            persistent.wrappingAdd(1, ordering: .relaxed)
        } else {
            inactive.wrappingAdd(1, ordering: .relaxed)
        }
        let upper = upperThreshold.load(ordering: .relaxed)
        if upper != 0 && totalConnections >= Int32(truncatingIfNeeded: upper) {
            overloaded.store(1, ordering: .relaxed)
        }
    }

    /// A connection (or template) let go of the server: uncounts it and clears the overload flag below the
    /// lower threshold, or below 3/4 of the upper one when no lower threshold is set (IPVS `ip_vs_unbind_dest`).
    @inlinable @inline(__always)
    public func unbind(template: Bool, active wasActive: Bool) {
        if template {
            persistent.wrappingSubtract(1, ordering: .relaxed)
        } else if wasActive {
            active.wrappingSubtract(1, ordering: .relaxed)
        } else {
            inactive.wrappingSubtract(1, ordering: .relaxed)
        }
        updateOverload()
    }

    /// Clears the overload flag once the load fell far enough; also used after the thresholds changed.
    @inlinable
    public func updateOverload() {
        let lower = Int64(lowerThreshold.load(ordering: .relaxed))
        let upper = Int64(upperThreshold.load(ordering: .relaxed))
        let total = Int64(totalConnections)
        if lower != 0 {
            if total < lower { overloaded.store(0, ordering: .relaxed) }
        } else if upper != 0 {
            if total * 4 < upper * 3 { overloaded.store(0, ordering: .relaxed) }
        } else {
            overloaded.store(0, ordering: .relaxed)
        }
    }

    /// A connection moved between ESTABLISHED and the other states.
    @inlinable
    public func transition(toActive: Bool) {
        if toActive {
            inactive.wrappingSubtract(1, ordering: .relaxed)
            active.wrappingAdd(1, ordering: .relaxed)
        } else {
            active.wrappingSubtract(1, ordering: .relaxed)
            inactive.wrappingAdd(1, ordering: .relaxed)
        }
    }
}

/// A reading of one server's counters, for listings (`ipvsadm -L`) and tests.
public struct DestinationCounts: Equatable, Sendable {
    public var active: Int32
    public var inactive: Int32
    public var persistent: Int32
    public var overloaded: Bool

    public init(active: Int32 = 0, inactive: Int32 = 0, persistent: Int32 = 0, overloaded: Bool = false) {
        self.active = active
        self.inactive = inactive
        self.persistent = persistent
        self.overloaded = overloaded
    }
}

/// A fixed pool of counter cells, one per real server, allocated once at start (or laid over memory that
/// outlives the process, see `init(capacity:memory:restoring:taken:)`) and shared by every worker.
/// A cell's index is the server's identity across configuration changes: the control side gives each real
/// server a cell when it appears and keeps it while the server stays configured, so counts survive
/// re-publishing; workers find the cell through `SchedulingDestination.counters`.
///
/// Allocation (`allocate`, `release`) is for the control thread only. Released cells are reused last
/// (first in, first out) and zeroed on reuse, so a worker that has not yet adopted the configuration that
/// dropped a server cannot skew a newcomer's counts in practice.
public final class DestinationCounterStore: @unchecked Sendable {
    public let capacity: Int
    let cells: UnsafeMutablePointer<DestinationCounterCell>
    private var free: [UInt32]
    private var freeHead = 0
    /// True when `init` allocated `cells` (freed in `deinit`).
    private let ownsMemory: Bool
    /// rr and wrr: per service index, how many new connections the director's workers have scheduled, so
    /// every worker's scheduler follows one sequence (see `ConnectionTracker`). Process memory: a restarted
    /// director starts its sequences afresh, as its workers' scheduler states do.
    public let turns: UnsafeMutablePointer<Atomic<UInt64>>
    /// Service indices `turns` covers (the XDP program's `services` map holds at most as many).
    public static let turnCapacity = 4096

    public init(capacity: Int = 65536) {
        Self.checkCapacity(capacity)
        self.capacity = capacity
        cells = .allocate(capacity: capacity)
        for index in 0..<capacity { (cells + index).initialize(to: DestinationCounterCell()) }
        free = (0..<UInt32(capacity)).map { $0 }
        ownsMemory = true
        turns = Self.makeTurns()
    }

    private static func makeTurns() -> UnsafeMutablePointer<Atomic<UInt64>> {
        let turns = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: turnCapacity)
        for index in 0..<turnCapacity { (turns + index).initialize(to: Atomic(0)) }
        return turns
    }

    /// A store over `memory`, which the caller provides and keeps valid while the store (and every table
    /// and snapshot that counts in it) lives: `byteCount(capacity:)` bytes, 64-byte aligned, e.g. a shared
    /// file mapping that outlives the process; nothing is freed in `deinit`.
    ///
    /// `restoring` false: every cell starts zeroed and free (`taken` must be empty). `restoring` true: the
    /// cells keep their counts and thresholds, and the cells in `taken` (those whose real servers were
    /// recorded as holding them) are not handed out by `allocate` until `release`d; the others are free, in
    /// increasing order.
    public init(capacity: Int, memory: UnsafeMutableRawPointer, restoring: Bool, taken: Set<UInt32> = []) {
        Self.checkCapacity(capacity)
        precondition(Int(bitPattern: memory) & 63 == 0, "counter store memory must be 64-byte aligned")
        precondition(restoring || taken.isEmpty, "a fresh counter store has no taken cells")
        self.capacity = capacity
        if restoring {
            // Zeroed or earlier cells: a cell is three counts and three words of plain atomics, valid as found.
            cells = memory.bindMemory(to: DestinationCounterCell.self, capacity: capacity)
        } else {
            let typed = memory.bindMemory(to: DestinationCounterCell.self, capacity: capacity)
            for index in 0..<capacity { (typed + index).initialize(to: DestinationCounterCell()) }
            cells = typed
        }
        free = (0..<UInt32(capacity)).filter { !taken.contains($0) }
        ownsMemory = false
        turns = Self.makeTurns()
    }

    deinit {
        turns.deinitialize(count: Self.turnCapacity)
        turns.deallocate()
        guard ownsMemory else { return }
        cells.deinitialize(count: capacity)
        cells.deallocate()
    }

    private static func checkCapacity(_ capacity: Int) {
        precondition(capacity > 0 && capacity < Int(UInt32.max), "counter store capacity out of range")
    }

    /// The bytes a store of `capacity` cells needs over caller-provided memory.
    public static func byteCount(capacity: Int) -> Int {
        checkCapacity(capacity)
        return MemoryLayout<DestinationCounterCell>.stride * capacity
    }

    /// What cells kept in memory that outlives the process depend on: a cell's size, stride and alignment.
    public static var persistedLayout: [Int] {
        [MemoryLayout<DestinationCounterCell>.size, MemoryLayout<DestinationCounterCell>.stride,
         MemoryLayout<DestinationCounterCell>.alignment]
    }

    /// How many cells `allocate` can still give.
    public var available: Int { free.count - freeHead }

    /// A zeroed cell for a new real server, or nil when every cell is taken.
    public func allocate() -> UInt32? {
        guard freeHead < free.count else { return nil }
        let id = free[freeHead]
        freeHead += 1
        if freeHead > 4096 && freeHead * 2 > free.count {
            free.removeFirst(freeHead)
            freeHead = 0
        }
        let cell = cells + Int(id)
        cell.pointee.active.store(0, ordering: .relaxed)
        cell.pointee.inactive.store(0, ordering: .relaxed)
        cell.pointee.persistent.store(0, ordering: .relaxed)
        cell.pointee.overloaded.store(0, ordering: .relaxed)
        cell.pointee.upperThreshold.store(0, ordering: .relaxed)
        cell.pointee.lowerThreshold.store(0, ordering: .relaxed)
        return id
    }

    /// Gives back the cell of a real server that left the configuration.
    public func release(_ id: UInt32) {
        precondition(Int(id) < capacity, "counter cell out of range")
        free.append(id)
    }

    /// The cell `id`, valid while the store lives.
    public func cell(_ id: UInt32) -> UnsafeMutablePointer<DestinationCounterCell> {
        precondition(Int(id) < capacity, "counter cell out of range")
        return cells + Int(id)
    }

    /// Sets a server's `-x`/`-y` thresholds (0 = none) and re-evaluates its overload flag.
    public func setThresholds(_ id: UInt32, upper: UInt32, lower: UInt32) {
        let cell = self.cell(id)
        cell.pointee.upperThreshold.store(upper, ordering: .relaxed)
        cell.pointee.lowerThreshold.store(lower, ordering: .relaxed)
        if upper != 0 && cell.pointee.totalConnections >= Int32(truncatingIfNeeded: upper) {
            cell.pointee.overloaded.store(1, ordering: .relaxed)
        } else {
            cell.pointee.updateOverload()
        }
    }

    /// The counts of cell `id`.
    public func counts(_ id: UInt32) -> DestinationCounts {
        let cell = self.cell(id)
        return DestinationCounts(
            active: cell.pointee.active.load(ordering: .relaxed),
            inactive: cell.pointee.inactive.load(ordering: .relaxed),
            persistent: cell.pointee.persistent.load(ordering: .relaxed),
            overloaded: cell.pointee.overloaded.load(ordering: .relaxed) != 0)
    }
}
