import Packet
import Scheduling
import Synchronization

/// A `ServiceKey` packed as the per-packet lookup compares it with a `FlowKey`'s destination half.
struct ServiceMatch: Hashable, Sendable {
    var addressHi: UInt64
    var addressLo: UInt64
    /// The destination port, protocol and family where `FlowKey.portsAndProtocol` holds them, the rest zero.
    var portProtocolFamily: UInt64

    /// The bits of `FlowKey.portsAndProtocol` a service matches: all but the source port.
    static let destinationBits: UInt64 = 0xFFFF_FFFF_0000

    init(_ key: ServiceKey) {
        let flow = FlowKey(source: key.endpoint.address, sourcePort: 0, destination: key.endpoint.address,
                           destinationPort: key.endpoint.port, proto: key.proto.number)
        self.init(destinationOf: flow)
    }

    @inline(__always)
    init(destinationOf key: FlowKey) {
        addressHi = key.dstHi; addressLo = key.dstLo; portProtocolFamily = key.portsAndProtocol & Self.destinationBits
    }

    @inline(__always)
    func matchesDestination(of key: FlowKey) -> Bool {
        addressLo == key.dstLo && addressHi == key.dstHi && portProtocolFamily == key.portsAndProtocol & Self.destinationBits
    }
}

/// What a snapshot is built from: one service and its real servers, in configuration order.
public struct SnapshotService: Sendable {
    public var key: ServiceKey
    /// Scheduler, flags, persistence, one-packet (`first`/`count` are filled in by the snapshot).
    public var policy: ServicePolicy
    public var destinations: [SnapshotDestination]
    /// FULLNAT source addresses (`-P`), any family; a real server uses those of its own family.
    public var localAddresses: [IPAddress]
    /// Real servers removed from the service that still hold connections (IPVS with `expire_nodest_conn`
    /// 0): their connections keep reaching them, but nothing new is scheduled to them. Each needs its
    /// counter cell (its identity); the control side drops it once the cell counts nothing.
    public var draining: [SnapshotDestination]

    public var scheduler: SchedulerKind { policy.scheduler }

    public init(key: ServiceKey, policy: ServicePolicy, destinations: [SnapshotDestination], localAddresses: [IPAddress] = [],
                draining: [SnapshotDestination] = []) {
        self.key = key; self.policy = policy; self.destinations = destinations
        self.localAddresses = localAddresses
        self.draining = draining
    }

    public init(key: ServiceKey, scheduler: SchedulerKind, destinations: [SnapshotDestination]) {
        self.init(key: key, policy: ServicePolicy(scheduler: scheduler, ipv6: key.endpoint.address.family == .ipv6), destinations: destinations)
    }
}

public struct SnapshotDestination: Sendable {
    public var weight: Int32
    /// nil while the neighbour table has no address for the real server: it gets no new connections.
    public var mac: MACAddress?
    /// The real server's cell in the snapshot's counter store: its identity across snapshots.
    public var cell: UInt32?
    /// `StableHash.endpoint` of the real server's address and port (Maglev).
    public var endpointHash: UInt64
    /// How packets reach it, and its address where the method needs one.
    public var route: DestinationRoute

    public init(weight: Int32, mac: MACAddress?, cell: UInt32? = nil, endpointHash: UInt64 = 0,
                route: DestinationRoute = .directRouting) {
        self.weight = weight; self.mac = mac; self.cell = cell; self.endpointHash = endpointHash
        self.route = route
    }
}

/// How a destination is reached: method, real server address and port, tunnel parameters. Trivial (an
/// `IPAddress` is a plain enum), so it lives in the snapshot's flat buffers.
public struct DestinationRoute: Sendable, Equatable {
    public var method: ForwardingMethod
    public var address: IPAddress
    public var port: UInt16
    public var tunnel: TunnelParameters

    public init(method: ForwardingMethod, address: IPAddress, port: UInt16, tunnel: TunnelParameters = TunnelParameters(type: .ipip)) {
        self.method = method; self.address = address; self.port = port; self.tunnel = tunnel
    }

    public static let directRouting = DestinationRoute(method: .directRouting, address: .v4(0), port: 0)
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
    /// Per-real-server traffic, by counter cell; kept by the control side across snapshots like `counters`.
    public let traffic: DestinationTrafficStore?
    let view: SnapshotView
    private let policies: UnsafeMutableBufferPointer<ServicePolicy>
    private let services: UnsafeMutableBufferPointer<ServiceMatch>
    private let destinations: UnsafeMutableBufferPointer<SchedulingDestination>
    private let macs: UnsafeMutableBufferPointer<UInt64>
    private let ethernet: UnsafeMutableBufferPointer<EthernetAddresses>
    private let resolvedMethods: UnsafeMutableBufferPointer<ForwardingMethod?>
    private let routes: UnsafeMutableBufferPointer<DestinationRoute>
    /// Every FULLNAT local address once: a FULLNAT port belongs to (address, port), whichever services share it.
    private let localAddresses: UnsafeMutableBufferPointer<IPAddress>
    /// Indices into `localAddresses`, grouped per service and family (see `LocalAddressRange`).
    private let localAddressIndices: UnsafeMutableBufferPointer<Int32>
    private let serviceLocalAddresses: UnsafeMutableBufferPointer<LocalAddressRange>
    private let lookup: UnsafeMutableBufferPointer<Int32>
    /// The NAT and FULLNAT real servers' endpoints, sorted (see `SnapshotView.mayBeReply`).
    private let translatingServers: UnsafeMutableBufferPointer<ServerEndpoint>

    /// `mtu` bounds what tunnelling may send; `sourceAddresses` are the director's own (one per family is
    /// used): the outer source of tunnelled packets and the source of the ICMP errors the director sends.
    ///
    /// Destinations lie in the flat buffers service by service, each service's range in configuration
    /// order, then every service's draining servers after all the ranges, where no scheduler sees them.
    public init(interfaceMAC: MACAddress, services input: [SnapshotService],
                counters: DestinationCounterStore? = nil, timeouts: ConnectionTimeouts = .init(), mtu: Int = 1500,
                sourceAddresses: [IPAddress] = [], traffic: DestinationTrafficStore? = nil) {
        self.interfaceMAC = interfaceMAC
        self.counters = counters
        self.timeouts = timeouts
        self.traffic = traffic
        let destinationCount = input.reduce(0) { $0 + $1.destinations.count + $1.draining.count }
        services = .allocate(capacity: max(input.count, 1))
        policies = .allocate(capacity: max(input.count, 1))
        destinations = .allocate(capacity: max(destinationCount, 1))
        macs = .allocate(capacity: max(destinationCount, 1))
        ethernet = .allocate(capacity: max(destinationCount, 1))
        resolvedMethods = .allocate(capacity: max(destinationCount, 1))
        routes = .allocate(capacity: max(destinationCount, 1))
        serviceLocalAddresses = .allocate(capacity: max(input.count, 1))
        var unique: [IPAddress] = []
        var indices: [Int32] = []
        var next = 0
        for (index, service) in input.enumerated() {
            services[index] = ServiceMatch(service.key)
            var policy = service.policy
            policy.first = Int32(next)
            policy.count = Int32(service.destinations.count)
            policies[index] = policy
            for destination in service.destinations {
                Self.place(destination, at: next, counters: counters, destinations: destinations, macs: macs, routes: routes)
                next += 1
            }
            var range = LocalAddressRange()
            for family in [IPAddress.Family.ipv4, .ipv6] {
                let first = Int32(indices.count)
                for address in service.localAddresses where address.family == family {
                    if let known = unique.firstIndex(of: address) {
                        indices.append(Int32(known))
                    } else {
                        indices.append(Int32(unique.count))
                        unique.append(address)
                    }
                }
                let count = Int32(indices.count) - first
                if family == .ipv4 { (range.first4, range.count4) = (first, count) } else { (range.first6, range.count6) = (first, count) }
            }
            serviceLocalAddresses[index] = range
        }
        for service in input {
            for destination in service.draining {
                Self.place(destination, at: next, counters: counters, destinations: destinations, macs: macs, routes: routes)
                next += 1
            }
        }
        for index in 0..<destinationCount {
            ethernet[index] = EthernetAddresses(destination: MACAddress(value: macs[index]), source: interfaceMAC)
            resolvedMethods[index] = macs[index] != 0 ? routes[index].method : nil
        }
        localAddresses = .allocate(capacity: max(unique.count, 1))
        _ = localAddresses.initialize(from: unique)
        localAddressIndices = .allocate(capacity: max(indices.count, 1))
        _ = localAddressIndices.initialize(from: indices)
        let source4 = sourceAddresses.first { $0.family == .ipv4 }
        let source6 = sourceAddresses.first { $0.family == .ipv6 }
        // Open addressing, at most half full, so a probe ends quickly on a miss.
        var capacity = 8
        while capacity < input.count * 2 { capacity <<= 1 }
        lookup = .allocate(capacity: capacity)
        lookup.initialize(repeating: -1)
        for (index, service) in input.enumerated() {
            var slot = Int(SnapshotView.hash(ServiceMatch(service.key))) & (capacity - 1)
            while lookup[slot] >= 0 { slot = (slot + 1) & (capacity - 1) }
            lookup[slot] = Int32(index)
        }
        // Sorted once here, so a stray reply (anyone may send one from a real server's address) costs a
        // binary search rather than a walk of every route.
        var servers: [ServerEndpoint] = []
        for route in routes[0..<destinationCount] where route.method == .masquerading || route.method == .fullNAT {
            servers.append(ServerEndpoint(route.address, port: route.port))
        }
        servers.sort()
        translatingServers = .allocate(capacity: max(servers.count, 1))
        _ = translatingServers.initialize(from: servers)
        view = SnapshotView(services: UnsafeBufferPointer(rebasing: services[0..<input.count]),
                            policies: UnsafeBufferPointer(rebasing: policies[0..<input.count]),
                            destinations: UnsafeBufferPointer(rebasing: destinations[0..<destinationCount]),
                            macs: UnsafeBufferPointer(rebasing: macs[0..<destinationCount]),
                            ethernet: UnsafeBufferPointer(rebasing: ethernet[0..<destinationCount]),
                            resolvedMethods: UnsafeBufferPointer(rebasing: resolvedMethods[0..<destinationCount]),
                            routes: UnsafeBufferPointer(rebasing: routes[0..<destinationCount]),
                            localAddresses: UnsafeBufferPointer(rebasing: localAddresses[0..<unique.count]),
                            localAddressIndices: UnsafeBufferPointer(rebasing: localAddressIndices[0..<indices.count]),
                            serviceLocalAddresses: UnsafeBufferPointer(rebasing: serviceLocalAddresses[0..<input.count]),
                            lookup: UnsafeBufferPointer(lookup),
                            translatingServers: UnsafeBufferPointer(rebasing: translatingServers[0..<servers.count]),
                            interfaceMAC: interfaceMAC, mtu: mtu,
                            source4: source4, source6: source6)
    }

    private static func place(_ destination: SnapshotDestination, at index: Int, counters: DestinationCounterStore?,
                              destinations: UnsafeMutableBufferPointer<SchedulingDestination>,
                              macs: UnsafeMutableBufferPointer<UInt64>, routes: UnsafeMutableBufferPointer<DestinationRoute>) {
        let cell = destination.cell.flatMap { id in counters.map { $0.cell(id) } }
        destinations[index] = SchedulingDestination(
            weight: destination.weight, isAvailable: destination.mac != nil,
            cell: cell == nil ? SchedulingDestination.noCell : destination.cell!,
            counters: cell, endpointHash: destination.endpointHash)
        macs[index] = destination.mac?.value ?? 0
        routes[index] = destination.route
    }

    deinit {
        services.deallocate(); policies.deallocate(); destinations.deallocate(); macs.deallocate(); lookup.deallocate()
        ethernet.deallocate(); resolvedMethods.deallocate()
        routes.deallocate(); localAddresses.deallocate(); localAddressIndices.deallocate()
        serviceLocalAddresses.deallocate(); translatingServers.deallocate()
    }

    public var serviceCount: Int { view.services.count }
}

/// Where a service's local addresses of each family stand in the snapshot's `localAddressIndices`.
struct LocalAddressRange {
    var first4: Int32 = 0, count4: Int32 = 0, first6: Int32 = 0, count6: Int32 = 0
}

/// The snapshot as the hot path reads it: pointers only, valid while the snapshot is held.
struct SnapshotView {
    let services: UnsafeBufferPointer<ServiceMatch>
    /// Parallel to `services`: scheduler and options, and the service's destinations[first ..< first + count].
    let policies: UnsafeBufferPointer<ServicePolicy>
    let destinations: UnsafeBufferPointer<SchedulingDestination>
    let macs: UnsafeBufferPointer<UInt64>
    /// Parallel to `macs`: the MACs a frame to the destination carries, in wire order (meaningless while its
    /// MAC is 0, unresolved).
    let ethernet: UnsafeBufferPointer<EthernetAddresses>
    /// Parallel to `macs`: the destination's forwarding method once its MAC is resolved, nil while it is
    /// not: the one test by which the fast paths pick the rewrite they do in place.
    let resolvedMethods: UnsafeBufferPointer<ForwardingMethod?>
    let routes: UnsafeBufferPointer<DestinationRoute>
    let localAddresses: UnsafeBufferPointer<IPAddress>
    let localAddressIndices: UnsafeBufferPointer<Int32>
    let serviceLocalAddresses: UnsafeBufferPointer<LocalAddressRange>
    let lookup: UnsafeBufferPointer<Int32>
    let translatingServers: UnsafeBufferPointer<ServerEndpoint>
    let interfaceMAC: MACAddress
    let mtu: Int
    /// The director's own addresses, when it has one of that family.
    let source4: IPAddress?
    let source6: IPAddress?

    /// The local addresses (indices into `localAddresses`) service `service` uses towards real servers of
    /// `family`.
    @inline(__always)
    func localAddresses(of service: Int, family: IPAddress.Family) -> UnsafeBufferPointer<Int32> {
        let range = serviceLocalAddresses[service]
        let (first, count) = family == .ipv4 ? (range.first4, range.count4) : (range.first6, range.count6)
        return UnsafeBufferPointer(rebasing: localAddressIndices[Int(first)..<Int(first + count)])
    }

    /// The director's address of `family`, if it has one.
    @inline(__always)
    func source(family: IPAddress.Family) -> IPAddress? { family == .ipv4 ? source4 : source6 }

    /// Whether `key` can be the reply of a translated connection: from a NAT or FULLNAT real server's address
    /// and port (a binary search), or to a local address. Only for frames nothing else claimed.
    func mayBeReply(_ key: FlowKey) -> Bool {
        let source = ServerEndpoint(hi: key.srcHi, lo: key.srcLo, port: key.srcPort)
        var low = 0, high = translatingServers.count
        while low < high {
            let middle = (low + high) / 2
            if translatingServers[middle] < source { low = middle + 1 } else { high = middle }
        }
        if low < translatingServers.count && translatingServers[low] == source { return true }
        return localAddresses.contains(key.destination)
    }

    @inline(__always)
    static func hash(_ key: ServiceMatch) -> UInt32 {
        hash(hi: key.addressHi, lo: key.addressLo, portProtocolFamily: key.portProtocolFamily)
    }

    /// A few instructions, not the flow hash: a snapshot holds few services and its table is at most half
    /// full, so a multiplicative mix of the destination is spread enough.
    @inline(__always)
    static func hash(hi: UInt64, lo: UInt64, portProtocolFamily: UInt64) -> UInt32 {
        // The port, protocol and family moved above an IPv4 address's bits before they meet it.
        let word = hi ^ lo ^ portProtocolFamily << 16
        return UInt32(truncatingIfNeeded: (word &* 0x9E37_79B9_7F4A_7C15) >> 32)
    }

    /// Whether service `index` (the XDP program's `services` map index for the packet) is the packet's in
    /// this snapshot: the map and the snapshot come from the same configuration, except for the moment a
    /// reload takes to reach both.
    @inline(__always)
    func isService(_ index: Int, of key: FlowKey) -> Bool {
        // One unsigned test for both bounds: a negative index wraps above every count.
        UInt(bitPattern: index) < UInt(bitPattern: services.count) && services[index].matchesDestination(of: key)
    }

    /// The index of the service the packet is addressed to.
    @inline(__always)
    func service(for key: FlowKey) -> Int? {
        let mask = lookup.count - 1
        var slot = Int(Self.hash(hi: key.dstHi, lo: key.dstLo,
                                 portProtocolFamily: key.portsAndProtocol & ServiceMatch.destinationBits)) & mask
        while true {
            let index = Int(lookup[slot])
            if index < 0 { return nil }
            if services[index].matchesDestination(of: key) { return index }
            slot = (slot + 1) & mask
        }
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

/// A real server's address (as `FlowKey` holds it: host-order halves, IPv4 in the low one) and port.
struct ServerEndpoint: Comparable {
    let hi: UInt64, lo: UInt64, port: UInt16

    init(hi: UInt64, lo: UInt64, port: UInt16) { self.hi = hi; self.lo = lo; self.port = port }

    init(_ address: IPAddress, port: UInt16) {
        (hi, lo) = ReplyIndexView.words(address)
        self.port = port
    }

    static func < (a: ServerEndpoint, b: ServerEndpoint) -> Bool { (a.hi, a.lo, a.port) < (b.hi, b.lo, b.port) }
}
