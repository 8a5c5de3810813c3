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
    /// FULLNAT source addresses (`-P`), any family; a real server uses those of its own family.
    public var localAddresses: [IPAddress]

    public var scheduler: SchedulerKind { policy.scheduler }

    public init(key: VIPKey, policy: ServicePolicy, destinations: [SnapshotDestination], localAddresses: [IPAddress] = []) {
        self.key = key; self.policy = policy; self.destinations = destinations
        self.localAddresses = localAddresses
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
    /// How packets reach it, and its address where the method needs one.
    public var route: DestinationRoute

    public init(weight: Int32, mac: MACAddress?, counterID: UInt32? = nil, endpointHash: UInt64 = 0,
                route: DestinationRoute = .directRouting) {
        self.weight = weight; self.mac = mac; self.counterID = counterID; self.endpointHash = endpointHash
        self.route = route
    }
}

/// The forwarding method of a real server, as the data plane applies it.
public enum ForwardingKind: UInt8, Sendable {
    case directRouting, tunnel, masquerading, fullNAT
}

/// How a destination is reached: method, real server address and port, tunnel parameters. Trivial, so it
/// lives in the snapshot's flat buffers.
public struct DestinationRoute: Sendable, Equatable {
    public var kind: ForwardingKind
    public var addressHi: UInt64
    public var addressLo: UInt64
    public var family: UInt8
    public var port: UInt16
    public var tunnel: TunnelParameters

    public init(kind: ForwardingKind, address: IPAddress, port: UInt16, tunnel: TunnelParameters = TunnelParameters(type: .ipip)) {
        let key = FlowKey(source: address, sourcePort: port, destination: address, destinationPort: port, proto: 0)
        self.kind = kind; addressHi = key.srcHi; addressLo = key.srcLo; family = key.family; self.port = port
        self.tunnel = tunnel
    }

    public static let directRouting = DestinationRoute(kind: .directRouting, address: .v4(0), port: 0)

    @inline(__always)
    var address: IPAddress { family == 4 ? .v4(UInt32(truncatingIfNeeded: addressLo)) : .v6(hi: addressHi, lo: addressLo) }
}

/// One FULLNAT local address in the snapshot's flat buffer.
struct LocalAddressSlot: Equatable {
    var hi: UInt64
    var lo: UInt64
    var family: UInt8
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
    private let routes: UnsafeMutableBufferPointer<DestinationRoute>
    private let localAddresses: UnsafeMutableBufferPointer<LocalAddressSlot>
    /// Per service: its local addresses of each family, as (first, count) into `localAddresses`, IPv4 then IPv6.
    private let serviceLocalAddresses: UnsafeMutableBufferPointer<LocalAddressRange>
    private let lookup: UnsafeMutableBufferPointer<Int32>

    /// `mtu` bounds what tunnelling may send; `sourceAddresses` are the director's own (one per family is
    /// used): the outer source of tunnelled packets and the source of the ICMP errors the director sends.
    public init(interfaceMAC: MACAddress, services input: [SnapshotService],
                counters: DestinationCounterStore? = nil, timeouts: ConnectionTimeouts = .init(), mtu: Int = 1500,
                sourceAddresses: [IPAddress] = []) {
        self.interfaceMAC = interfaceMAC
        self.counters = counters
        self.timeouts = timeouts
        let destinationCount = input.reduce(0) { $0 + $1.destinations.count }
        services = .allocate(capacity: max(input.count, 1))
        policies = .allocate(capacity: max(input.count, 1))
        destinations = .allocate(capacity: max(destinationCount, 1))
        macs = .allocate(capacity: max(destinationCount, 1))
        routes = .allocate(capacity: max(destinationCount, 1))
        serviceLocalAddresses = .allocate(capacity: max(input.count, 1))
        // Local addresses, each once, in order of appearance; services refer to them by index.
        var unique: [LocalAddressSlot] = []
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
                routes[next] = destination.route
                next += 1
            }
            var range = LocalAddressRange()
            for family in [IPAddress.Family.ipv4, .ipv6] {
                let own = service.localAddresses.filter { $0.family == family }.map { address in
                    let route = DestinationRoute(kind: .fullNAT, address: address, port: 0)
                    return LocalAddressSlot(hi: route.addressHi, lo: route.addressLo, family: route.family)
                }
                // Contiguous per service and family: append this service's list unless it is already there.
                var first = unique.count
                if let found = (0..<max(unique.count - own.count + 1, 0)).first(where: { Array(unique[$0..<$0 + own.count]) == own }),
                   !own.isEmpty {
                    first = found
                } else {
                    unique += own
                }
                if family == .ipv4 { range.first4 = Int32(first); range.count4 = Int32(own.count) }
                else { range.first6 = Int32(first); range.count6 = Int32(own.count) }
            }
            serviceLocalAddresses[index] = range
        }
        localAddresses = .allocate(capacity: max(unique.count, 1))
        for (index, slot) in unique.enumerated() { localAddresses[index] = slot }
        var none = DestinationRoute.directRouting
        none.family = 0
        var sources = (v4: none, v6: none)
        for address in sourceAddresses {
            let route = DestinationRoute(kind: .directRouting, address: address, port: 0)
            if address.family == .ipv4, sources.v4.family == 0 { sources.v4 = route }
            if address.family == .ipv6, sources.v6.family == 0 { sources.v6 = route }
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
                            routes: UnsafeBufferPointer(rebasing: routes[0..<destinationCount]),
                            localAddresses: UnsafeBufferPointer(rebasing: localAddresses[0..<unique.count]),
                            serviceLocalAddresses: UnsafeBufferPointer(rebasing: serviceLocalAddresses[0..<input.count]),
                            lookup: UnsafeBufferPointer(lookup), interfaceMAC: interfaceMAC, mtu: mtu,
                            source4: sources.v4, source6: sources.v6)
    }

    deinit {
        services.deallocate(); policies.deallocate(); destinations.deallocate(); macs.deallocate(); lookup.deallocate()
        routes.deallocate(); localAddresses.deallocate(); serviceLocalAddresses.deallocate()
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

struct LocalAddressRange {
    var first4: Int32 = 0, count4: Int32 = 0, first6: Int32 = 0, count6: Int32 = 0
}

/// The snapshot as the hot path reads it: pointers only, valid while the snapshot is held.
struct SnapshotView {
    let services: UnsafeBufferPointer<ServiceSlot>
    /// Parallel to `services`: what the connection tracker needs.
    let policies: UnsafeBufferPointer<ServicePolicy>
    let destinations: UnsafeBufferPointer<SchedulingDestination>
    let macs: UnsafeBufferPointer<UInt64>
    let routes: UnsafeBufferPointer<DestinationRoute>
    let localAddresses: UnsafeBufferPointer<LocalAddressSlot>
    let serviceLocalAddresses: UnsafeBufferPointer<LocalAddressRange>
    let lookup: UnsafeBufferPointer<Int32>
    let interfaceMAC: MACAddress
    let mtu: Int
    /// The director's own addresses (family 0 when it has none of that family).
    let source4: DestinationRoute
    let source6: DestinationRoute

    /// The local addresses service `service` uses towards real servers of `family`, as (first, count).
    @inline(__always)
    func localAddresses(of service: Int, family: UInt8) -> (first: Int, count: Int) {
        let range = serviceLocalAddresses[service]
        return family == 4 ? (Int(range.first4), Int(range.count4)) : (Int(range.first6), Int(range.count6))
    }

    /// The director's address of `family`, if it has one.
    @inline(__always)
    func source(family: UInt8) -> IPAddress? {
        let route = family == 4 ? source4 : source6
        return route.family == family ? route.address : nil
    }

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
