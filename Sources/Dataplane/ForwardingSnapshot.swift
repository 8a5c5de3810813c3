import Packet
import Scheduling
import Synchronization

/// A virtual service as the data plane matches it: VIP, port, protocol.
public struct VIPKey: Hashable, Sendable {
    public var addressHi: UInt64
    public var addressLo: UInt64
    public var port: UInt16
    public var proto: UInt8
    public var family: UInt8

    public init(address: IPAddress, port: UInt16, proto: UInt8) {
        let key = FlowKey(source: address, sourcePort: 0, destination: address, destinationPort: port, proto: proto)
        self.init(destinationOf: key)
    }

    @inline(__always)
    init(destinationOf key: FlowKey) {
        addressHi = key.dstHi; addressLo = key.dstLo; port = key.dstPort; proto = key.proto; family = key.family
    }

    @inline(__always)
    func matchesDestination(of key: FlowKey) -> Bool {
        addressLo == key.dstLo && port == key.dstPort && addressHi == key.dstHi && proto == key.proto && family == key.family
    }
}

/// What a snapshot is built from: one service and its real servers, in configuration order.
public struct SnapshotService: Sendable {
    public var key: VIPKey
    /// Scheduler, flags, persistence, one-packet (`first`/`count` are filled in by the snapshot).
    public var policy: ServicePolicy
    public var destinations: [SnapshotDestination]

    public var scheduler: SchedulerKind { policy.scheduler }

    public init(key: VIPKey, policy: ServicePolicy, destinations: [SnapshotDestination]) {
        self.key = key; self.policy = policy; self.destinations = destinations
    }

    public init(key: VIPKey, scheduler: SchedulerKind, destinations: [SnapshotDestination]) {
        self.init(key: key, policy: ServicePolicy(scheduler: scheduler, ipv6: key.family == 6), destinations: destinations)
    }
}

public struct SnapshotDestination: Sendable {
    public var weight: Int32
    /// nil while the neighbour table has no address for the real server: it gets no new connections.
    public var mac: MACAddress?
    /// The real server's cell in the snapshot's counter store: its identity across snapshots.
    public var counterID: UInt32?
    /// `StableHash.endpoint` of the real server's address and port (Maglev).
    public var endpointHash: UInt64

    public init(weight: Int32, mac: MACAddress?, counterID: UInt32? = nil, endpointHash: UInt64 = 0) {
        self.weight = weight; self.mac = mac; self.counterID = counterID; self.endpointHash = endpointHash
    }
}

/// An immutable configuration for the workers, in flat buffers so the per-packet path reads it through
/// a trivial `SnapshotView` with no ARC. Built by the control thread, adopted by workers between batches,
/// freed when the last worker lets go of it.
public final class ForwardingSnapshot: @unchecked Sendable {
    public let interfaceMAC: MACAddress
    /// Per-destination connection counts shared by all workers; kept by the control side across snapshots.
    public let counters: DestinationCounterStore?
    /// `ipvsadm --set`: applied by the workers when they adopt the snapshot.
    public let timeouts: ConnectionTimeouts
    let view: SnapshotView
    private let policies: UnsafeMutableBufferPointer<ServicePolicy>
    private let services: UnsafeMutableBufferPointer<ServiceSlot>
    private let destinations: UnsafeMutableBufferPointer<SchedulingDestination>
    private let macs: UnsafeMutableBufferPointer<UInt64>
    private let lookup: UnsafeMutableBufferPointer<Int32>

    public init(interfaceMAC: MACAddress, services input: [SnapshotService],
                counters: DestinationCounterStore? = nil, timeouts: ConnectionTimeouts = .init()) {
        self.interfaceMAC = interfaceMAC
        self.counters = counters
        self.timeouts = timeouts
        let destinationCount = input.reduce(0) { $0 + $1.destinations.count }
        services = .allocate(capacity: max(input.count, 1))
        policies = .allocate(capacity: max(input.count, 1))
        destinations = .allocate(capacity: max(destinationCount, 1))
        macs = .allocate(capacity: max(destinationCount, 1))
        var next = 0
        for (index, service) in input.enumerated() {
            services[index] = ServiceSlot(key: service.key, scheduler: service.scheduler,
                                          first: Int32(next), count: Int32(service.destinations.count))
            var policy = service.policy
            policy.first = Int32(next)
            policy.count = Int32(service.destinations.count)
            policies[index] = policy
            for destination in service.destinations {
                let cell = destination.counterID.flatMap { id in counters.map { $0.cell(id) } }
                destinations[next] = SchedulingDestination(
                    weight: destination.weight, isAvailable: destination.mac != nil,
                    counterID: cell == nil ? SchedulingDestination.noCounters : destination.counterID!,
                    counters: cell, endpointHash: destination.endpointHash)
                macs[next] = destination.mac?.value ?? 0
                next += 1
            }
        }
        // Open addressing, at most half full, so a probe ends quickly on a miss.
        var capacity = 8
        while capacity < input.count * 2 { capacity <<= 1 }
        lookup = .allocate(capacity: capacity)
        lookup.initialize(repeating: -1)
        for (index, service) in input.enumerated() {
            var slot = Int(SnapshotView.hash(service.key)) & (capacity - 1)
            while lookup[slot] >= 0 { slot = (slot + 1) & (capacity - 1) }
            lookup[slot] = Int32(index)
        }
        view = SnapshotView(services: UnsafeBufferPointer(rebasing: services[0..<input.count]),
                            policies: UnsafeBufferPointer(rebasing: policies[0..<input.count]),
                            destinations: UnsafeBufferPointer(rebasing: destinations[0..<destinationCount]),
                            macs: UnsafeBufferPointer(rebasing: macs[0..<destinationCount]),
                            lookup: UnsafeBufferPointer(lookup), interfaceMAC: interfaceMAC)
    }

    deinit {
        services.deallocate(); policies.deallocate(); destinations.deallocate(); macs.deallocate(); lookup.deallocate()
    }

    public var serviceCount: Int { view.services.count }
}

struct ServiceSlot {
    var key: VIPKey
    var scheduler: SchedulerKind
    /// The service's real servers are destinations[first ..< first + count].
    var first: Int32
    var count: Int32
}

/// The snapshot as the hot path reads it: pointers only, valid while the snapshot is held.
struct SnapshotView {
    let services: UnsafeBufferPointer<ServiceSlot>
    /// Parallel to `services`: what the connection tracker needs.
    let policies: UnsafeBufferPointer<ServicePolicy>
    let destinations: UnsafeBufferPointer<SchedulingDestination>
    let macs: UnsafeBufferPointer<UInt64>
    let lookup: UnsafeBufferPointer<Int32>
    let interfaceMAC: MACAddress

    @inline(__always)
    static func hash(_ key: VIPKey) -> UInt32 {
        var flow = FlowKey()
        flow.dstHi = key.addressHi; flow.dstLo = key.addressLo; flow.dstPort = key.port
        flow.proto = key.proto; flow.family = key.family
        return flow.flowHash
    }

    /// The index of the service the packet is addressed to.
    @inline(__always)
    func service(for key: FlowKey) -> Int? {
        var flow = FlowKey()
        flow.dstHi = key.dstHi; flow.dstLo = key.dstLo; flow.dstPort = key.dstPort
        flow.proto = key.proto; flow.family = key.family
        let mask = lookup.count - 1
        var slot = Int(flow.flowHash) & mask
        while true {
            let index = Int(lookup[slot])
            if index < 0 { return nil }
            if services[index].key.matchesDestination(of: key) { return index }
            slot = (slot + 1) & mask
        }
    }

    @inline(__always)
    func destinations(of service: Int) -> UnsafeBufferPointer<SchedulingDestination> {
        let slot = services[service]
        return UnsafeBufferPointer(rebasing: destinations[Int(slot.first)..<Int(slot.first + slot.count)])
    }
}

/// Hands snapshots from the control thread to the workers. Publishing takes a lock; a worker only reads
/// an atomic generation per batch and takes the lock when it changed, i.e. once per configuration change.
public final class SnapshotExchange: Sendable {
    private let generationCounter = Atomic<UInt64>(0)
    private let current: Mutex<ForwardingSnapshot>

    public init(_ snapshot: ForwardingSnapshot) { current = Mutex(snapshot) }

    public func publish(_ snapshot: ForwardingSnapshot) {
        current.withLock { $0 = snapshot }
        generationCounter.add(1, ordering: .releasing)
    }

    @inline(__always)
    var generation: UInt64 { generationCounter.load(ordering: .acquiring) }

    func load() -> (ForwardingSnapshot, UInt64) {
        current.withLock { snapshot in (snapshot, generationCounter.load(ordering: .acquiring)) }
    }

    public var snapshot: ForwardingSnapshot { current.withLock { $0 } }
}
