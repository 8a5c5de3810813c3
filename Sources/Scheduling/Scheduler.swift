import Packet
import Synchronization

/// One real server as a scheduler sees it. A trivial struct stored in the flat buffers of a config snapshot,
/// in the service's destination order (the order of `ipvsadm -a`, which is the order IPVS walks its list).
public struct SchedulingDestination: @unchecked Sendable, Equatable {
    /// ipvsadm weight, 0...65535 in practice. 0 quiesces the server: no new connections, existing ones
    /// continue. Negative values are treated like 0.
    public var weight: Int32
    /// False when the server cannot take a new connection now (e.g. its MAC address is unresolved, or a
    /// health check failed). Such a server is skipped exactly like IPVS skips one flagged
    /// `IP_VS_DEST_F_OVERLOAD`; it still counts for the weight arithmetic of weighted schedulers.
    public var isAvailable: Bool
    /// The server's cell in the shared `DestinationCounterStore` (`noCell` when it has none): its
    /// identity across configuration changes.
    public var cell: UInt32
    /// That cell (nil without one: counts read as 0, never overloaded).
    public var counters: UnsafeMutablePointer<DestinationCounterCell>?
    /// A hash of the real server's address and port, the same on every director (`StableHash.endpoint`):
    /// Maglev places servers by it.
    public var endpointHash: UInt64

    public static let noCell = UInt32.max

    @inlinable
    public init(weight: Int32, isAvailable: Bool = true, cell: UInt32 = SchedulingDestination.noCell,
                counters: UnsafeMutablePointer<DestinationCounterCell>? = nil, endpointHash: UInt64 = 0) {
        self.weight = weight
        self.isAvailable = isAvailable
        self.cell = cell
        self.counters = counters
        self.endpointHash = endpointHash
    }

    /// IPVS `activeconns`, across all workers.
    @inlinable
    public var activeConnections: Int32 { counters?.pointee.active.load(ordering: .relaxed) ?? 0 }

    /// IPVS `inactconns`, across all workers.
    @inlinable
    public var inactiveConnections: Int32 { counters?.pointee.inactive.load(ordering: .relaxed) ?? 0 }

    /// IPVS `ip_vs_dest_conn_overhead`: active connections weigh 256 inactive ones.
    @inlinable
    public var connectionOverhead: Int64 { Int64(activeConnections) << 8 + Int64(inactiveConnections) }

    /// Over its upper threshold (`-x`) and not yet back under the lower one (IPVS `IP_VS_DEST_F_OVERLOAD`).
    @inlinable
    public var isOverloaded: Bool { (counters?.pointee.overloaded.load(ordering: .relaxed) ?? 0) != 0 }

    /// Neither unavailable nor overloaded: where IPVS tests `IP_VS_DEST_F_OVERLOAD`.
    @inlinable
    public var isUsable: Bool { isAvailable && !isOverloaded }

    /// True when IPVS's round robin would pick it: usable and weight > 0.
    @inlinable
    public var acceptsNewConnections: Bool { weight > 0 && isUsable }
}

/// Mutable scheduler state for one (worker, service) pair: a trivial struct, so a worker keeps one per service
/// in a flat buffer with no ARC. Only the algorithm named by the service's `SchedulerKind` reads or writes
/// it; each algorithm documents the fields it uses.
///
/// A state belongs to one destination list. When a snapshot changes the list (servers added, removed,
/// reordered, re-weighted, availability changed), either rebuild it with `Scheduler.makeState` (as IPVS does
/// when a service is created or its scheduler changed) or carry it over with
/// `Scheduler.destinationsChanged` (as IPVS does on `ipvsadm -a/-e/-d`). Using a state with another list
/// is memory-safe (indices are range-checked) but the sequence is then no longer IPVS's.
///
/// The hashing and locality schedulers own a table (`storage`): free a state with `Scheduler.release`.
public struct SchedulerState: @unchecked Sendable, Equatable {
    /// rr, wrr: index of the destination chosen last, or -1 for "the list head" (nothing chosen yet).
    /// IPVS keeps a pointer into its circular destination list; -1 stands for the list head.
    public var cursor: Int32
    /// wrr: current weight threshold (IPVS `cw`).
    public var currentWeight: Int32
    /// wrr: adjusted maximum weight, `max - (gcd - 1)` (IPVS `mw`); 0 means no server has weight.
    public var maxWeight: Int32
    /// wrr: weight step, the gcd of the positive weights or 1 (IPVS `di`).
    public var weightStep: Int32
    /// The service's `-b` flags (sh, mh).
    public var flags: SchedulerFlags
    /// rr, wrr: the length of one cycle of the sequence (0: unknown), set by `ConnectionTracker.adopt`.
    /// (Here and `sequence` after `clock`: they fill padding, so a state stays 56 bytes.)
    public var period: UInt32
    /// twos: the worker's random sequence (xorshift64*), never 0.
    public var random: UInt64
    /// The time of the selection in seconds, set by `Scheduler.select`; lblc and lblcr age their tables by it.
    public var clock: UInt32
    /// rr, wrr over a director's workers: the service's shared turn (mod 2^32) this state has been advanced
    /// to (see `ConnectionTracker`).
    public var sequence: UInt32
    /// dh, sh, mh: the bucket table (destination indices, -1 for none); lblc, lblcr: the locality entries.
    public var storage: UnsafeMutableRawPointer?
    /// Entries in `storage`.
    public var storageCount: Int32

    @inlinable
    public init(cursor: Int32 = -1, currentWeight: Int32 = 0, maxWeight: Int32 = 0, weightStep: Int32 = 1,
                flags: SchedulerFlags = [], random: UInt64 = 0x9E37_79B9_7F4A_7C15) {
        self.cursor = cursor
        self.currentWeight = currentWeight
        self.maxWeight = maxWeight
        self.weightStep = weightStep
        self.flags = flags
        self.random = random == 0 ? 1 : random
        self.clock = 0
        self.storage = nil
        self.storageCount = 0
        self.sequence = 0
        self.period = 0
    }

    /// The bucket table of dh, sh and mh.
    @inlinable
    var buckets: UnsafeMutablePointer<Int32>? { storage?.assumingMemoryBound(to: Int32.self) }
}

/// One scheduling algorithm as a concrete type (a caseless enum; all members static). The data plane never
/// calls these through an existential: `Scheduler` switches over `SchedulerKind` and calls the concrete
/// type, so each `select` is a direct, inlinable call.
public protocol SchedulingAlgorithm {
    /// The ipvsadm name this type implements.
    static var kind: SchedulerKind { get }

    /// A fresh state for `destinations` (IPVS `init_service`).
    static func makeState(destinations: UnsafeBufferPointer<SchedulingDestination>) -> SchedulerState

    /// Carries `state` over to a changed destination list (IPVS `add_dest`/`upd_dest`/`del_dest`).
    static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>)

    /// The index of the destination for a new connection, or nil when none can take one. `flow` is for
    /// hashing schedulers; others ignore it.
    static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int?
}

extension SchedulingAlgorithm {
    /// Stateless algorithms keep nothing between selections.
    public static func makeState(destinations: UnsafeBufferPointer<SchedulingDestination>) -> SchedulerState {
        SchedulerState()
    }

    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {}
}

/// Dispatch from a service's `SchedulerKind` to its algorithm: the one explicit list of algorithms.
/// The switches are exhaustive, so a new `SchedulerKind` case does not compile until it is registered here.
public enum Scheduler {
    /// The concrete type for `kind`, for control-plane code and tests (not for the per-packet path).
    public static func algorithm(_ kind: SchedulerKind) -> any SchedulingAlgorithm.Type {
        switch kind {
        case .rr: return RoundRobin.self
        case .wrr: return WeightedRoundRobin.self
        case .lc: return LeastConnection.self
        case .wlc: return WeightedLeastConnection.self
        case .sed: return ShortestExpectedDelay.self
        case .nq: return NeverQueue.self
        case .lblc: return LocalityBasedLeastConnection.self
        case .lblcr: return LocalityBasedReplication.self
        case .dh: return DestinationHashing.self
        case .sh: return SourceHashing.self
        case .mh: return MaglevHashing.self
        case .fo: return WeightedFailover.self
        case .ovf: return WeightedOverflow.self
        case .twos: return TwoRandomChoices.self
        }
    }

    /// A fresh state for a service using `kind` over `destinations`. Called when a snapshot creates the
    /// service or changes its scheduler; see `SchedulerState` for when to rebuild. May allocate a table:
    /// free the state with `release`.
    public static func makeState(
        _ kind: SchedulerKind, destinations: UnsafeBufferPointer<SchedulingDestination>,
        flags: SchedulerFlags = [], seed: UInt64 = 0x9E37_79B9_7F4A_7C15
    ) -> SchedulerState {
        var state = algorithm(kind).makeState(destinations: destinations)
        state.flags = flags
        state.random = seed == 0 ? 1 : seed
        return state
    }

    /// Carries `state` over to a changed destination list of the same service, keeping the algorithm's
    /// position the way IPVS does when real servers are added, edited or deleted.
    public static func destinationsChanged(
        _ kind: SchedulerKind, state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        algorithm(kind).destinationsChanged(state: &state, destinations: destinations)
    }

    /// Frees what `makeState` allocated for the state.
    public static func release(_ state: inout SchedulerState) {
        state.storage?.deallocate()
        state.storage = nil
        state.storageCount = 0
    }

    /// Index of the chosen destination, or nil if none can take a new connection (all weight 0, unavailable
    /// or overloaded, or the list is empty). `now` (seconds) matters to lblc and lblcr only.
    /// Hot path: no allocation, no ARC, no existential.
    @inlinable @inline(__always)
    public static func select(
        _ kind: SchedulerKind, state: inout SchedulerState,
        destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey, now: UInt32 = 0
    ) -> Int? {
        state.clock = now
        switch kind {
        case .rr: return RoundRobin.select(state: &state, destinations: destinations, flow: flow)
        case .wrr: return WeightedRoundRobin.select(state: &state, destinations: destinations, flow: flow)
        case .lc: return LeastConnection.select(state: &state, destinations: destinations, flow: flow)
        case .wlc: return WeightedLeastConnection.select(state: &state, destinations: destinations, flow: flow)
        case .sed: return ShortestExpectedDelay.select(state: &state, destinations: destinations, flow: flow)
        case .nq: return NeverQueue.select(state: &state, destinations: destinations, flow: flow)
        case .lblc: return LocalityBasedLeastConnection.select(state: &state, destinations: destinations, flow: flow)
        case .lblcr: return LocalityBasedReplication.select(state: &state, destinations: destinations, flow: flow)
        case .dh: return DestinationHashing.select(state: &state, destinations: destinations, flow: flow)
        case .sh: return SourceHashing.select(state: &state, destinations: destinations, flow: flow)
        case .mh: return MaglevHashing.select(state: &state, destinations: destinations, flow: flow)
        case .fo: return WeightedFailover.select(state: &state, destinations: destinations, flow: flow)
        case .ovf: return WeightedOverflow.select(state: &state, destinations: destinations, flow: flow)
        case .twos: return TwoRandomChoices.select(state: &state, destinations: destinations, flow: flow)
        }
    }
}
