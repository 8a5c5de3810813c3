import Packet

/// One real server as a scheduler sees it. A trivial struct stored in the flat buffers of a config snapshot,
/// in the service's destination order (the order of `ipvsadm -a`, which is the order IPVS walks its list).
public struct SchedulingDestination: Sendable, Equatable {
    /// ipvsadm weight, 0...65535 in practice. 0 quiesces the server: no new connections, existing ones
    /// continue. Negative values are treated like 0.
    public var weight: Int32
    /// False when the server cannot take a new connection now (e.g. its MAC address is unresolved, or a
    /// health check failed). Such a server is skipped exactly like IPVS skips one flagged
    /// `IP_VS_DEST_F_OVERLOAD`; it still counts for the weight arithmetic of weighted schedulers.
    public var isAvailable: Bool

    @inlinable
    public init(weight: Int32, isAvailable: Bool = true) {
        self.weight = weight
        self.isAvailable = isAvailable
    }

    /// True when IPVS's round robin would pick it: available and weight > 0.
    @inlinable
    public var acceptsNewConnections: Bool { isAvailable && weight > 0 }
}

/// Mutable scheduler state for one (worker, service) pair: a trivial struct, so a worker keeps one per service
/// in a flat buffer with no ARC. Only the algorithm named by the service's `SchedulerKind` reads or writes
/// it; each algorithm documents the fields it uses, and a new algorithm that needs more adds a field here.
///
/// A state belongs to one destination list. When a snapshot changes the list (servers added, removed,
/// reordered, re-weighted, availability changed), either rebuild it with `Scheduler.makeState` (as IPVS does
/// when a service is created or its scheduler changed) or carry it over with
/// `Scheduler.destinationsChanged` (as IPVS does on `ipvsadm -a/-e/-d`). Using a state with another list
/// is memory-safe (indices are range-checked) but the sequence is then no longer IPVS's.
public struct SchedulerState: Sendable, Equatable {
    /// rr, wrr: index of the destination chosen last, or -1 for "the list head" (nothing chosen yet).
    /// IPVS keeps a pointer into its circular destination list; -1 stands for the list head.
    public var cursor: Int32
    /// wrr: current weight threshold (IPVS `cw`).
    public var currentWeight: Int32
    /// wrr: adjusted maximum weight, `max - (gcd - 1)` (IPVS `mw`); 0 means no server has weight.
    public var maxWeight: Int32
    /// wrr: weight step, the gcd of the positive weights or 1 (IPVS `di`).
    public var weightStep: Int32

    @inlinable
    public init(cursor: Int32 = -1, currentWeight: Int32 = 0, maxWeight: Int32 = 0, weightStep: Int32 = 1) {
        self.cursor = cursor
        self.currentWeight = currentWeight
        self.maxWeight = maxWeight
        self.weightStep = weightStep
    }
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

/// Dispatch from a service's `SchedulerKind` to its algorithm: the one explicit list of algorithms.
/// Both switches are exhaustive, so a new `SchedulerKind` case does not compile until it is registered here.
public enum Scheduler {
    /// The concrete type for `kind`, for control-plane code and tests (not for the per-packet path).
    public static func algorithm(_ kind: SchedulerKind) -> any SchedulingAlgorithm.Type {
        switch kind {
        case .rr: return RoundRobin.self
        case .wrr: return WeightedRoundRobin.self
        }
    }

    /// A fresh state for a service using `kind` over `destinations`. Called when a snapshot creates the
    /// service or changes its scheduler; see `SchedulerState` for when to rebuild.
    public static func makeState(
        _ kind: SchedulerKind, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) -> SchedulerState {
        algorithm(kind).makeState(destinations: destinations)
    }

    /// Carries `state` over to a changed destination list of the same service, keeping the algorithm's
    /// position the way IPVS does when real servers are added, edited or deleted.
    public static func destinationsChanged(
        _ kind: SchedulerKind, state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        algorithm(kind).destinationsChanged(state: &state, destinations: destinations)
    }

    /// Index of the chosen destination, or nil if none can take a new connection (all weight 0 or
    /// unavailable, or the list is empty). Hot path: no allocation, no ARC, no existential.
    @inlinable @inline(__always)
    public static func select(
        _ kind: SchedulerKind, state: inout SchedulerState,
        destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        switch kind {
        case .rr: return RoundRobin.select(state: &state, destinations: destinations, flow: flow)
        case .wrr: return WeightedRoundRobin.select(state: &state, destinations: destinations, flow: flow)
        }
    }
}
