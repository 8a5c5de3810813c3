import Dataplane
import Foundation
import Packet

// A reload as a pure plan: from the running state and the requested configuration, what the cells, the
// draining set and the XDP maps become, or why the change is refused. No kernel, no clock, no allocation of
// cells: `Director` commits a plan (`MapSyncer`, `CellRegistry`), and a refused change has changed nothing.

/// A real server of a service: what keeps its cell (its identity) across configuration changes.
struct RealServerIdentity: Hashable, Sendable {
    var service: ServiceKey
    var endpoint: L4Endpoint
}

/// A real server removed from the configuration whose connections have not all ended.
struct DrainingServer: Equatable, Sendable {
    /// Its settings when it left: its connections are still forwarded by them.
    var real: RealServerConfig
    var cell: UInt32
    var since: Date
}

/// Who holds which cell: the configured real servers and the draining ones.
struct CellState: Equatable, Sendable {
    var cells: [RealServerIdentity: UInt32] = [:]
    var draining: [RealServerIdentity: DrainingServer] = [:]
}

/// How a configured real server of the next configuration gets its cell.
enum CellAssignment: Equatable, Sendable {
    /// It had this cell and keeps it.
    case kept(UInt32)
    /// It was draining with this cell and is configured again: it takes the cell (and its connections) back.
    case returning(UInt32)
    /// A new real server: a free cell is taken when the plan is committed.
    case fresh
}

/// What the XDP maps hold, in the project's types: the virtual services with their snapshot index, every real
/// server (draining ones flagged), the NAT real servers whose replies come back through us (draining ones
/// too: their connections still reply), the FULLNAT local addresses, and the addresses of the services and
/// NAT real servers again, by protocol alone, for fragments.
struct MapState: Equatable, Sendable {
    var services: [ServiceKey: Int] = [:]
    var reals: [RealServerIdentity: RealServerEntry] = [:]
    var natReals: Set<ServiceKey> = []
    var localAddresses: Set<IPAddress> = []
    var fragmentAddresses: Set<FragmentAddress> = []

    /// The maps for `configuration` with `draining` servers (those of services that still exist are listed).
    init(_ configuration: DirectorConfig, draining: [RealServerIdentity: DrainingServer]) {
        for (index, service) in configuration.services.enumerated() {
            services[service.key] = index
            for real in service.reals {
                reals[RealServerIdentity(service: service.key, endpoint: real.endpoint)] = Self.entry(real, draining: false)
                if real.method == .masquerading { natReals.insert(ServiceKey(proto: service.proto, endpoint: real.endpoint)) }
            }
            localAddresses.formUnion(service.localAddresses)
        }
        for (identity, server) in draining {
            if services[identity.service] != nil { reals[identity] = Self.entry(server.real, draining: true) }
            if server.real.method == .masquerading { natReals.insert(ServiceKey(proto: identity.service.proto, endpoint: identity.endpoint)) }
        }
        for service in services.keys {
            fragmentAddresses.insert(FragmentAddress(address: service.endpoint.address, proto: service.proto, role: .toService))
        }
        for real in natReals {
            fragmentAddresses.insert(FragmentAddress(address: real.endpoint.address, proto: real.proto, role: .fromNATReal))
        }
    }

    init() {}

    static func entry(_ real: RealServerConfig, draining: Bool) -> RealServerEntry {
        RealServerEntry(weight: real.weight, method: real.method, tunnel: real.tunnel.type, draining: draining,
                        upperThreshold: real.upperThreshold, lowerThreshold: real.lowerThreshold)
    }

    /// What must be written to go from `mapped` to this: new entries and changed values.
    func writes(from mapped: MapState) -> MapState {
        var writes = MapState()
        writes.services = services.filter { mapped.services[$0.key] != $0.value }
        writes.reals = reals.filter { mapped.reals[$0.key] != $0.value }
        writes.natReals = natReals.subtracting(mapped.natReals)
        writes.localAddresses = localAddresses.subtracting(mapped.localAddresses)
        writes.fragmentAddresses = fragmentAddresses.subtracting(mapped.fragmentAddresses)
        return writes
    }

    /// The entries of `mapped` this lacks: removed once nothing needs them.
    func deletes(from mapped: MapState) -> MapKeys {
        MapKeys(services: Set(mapped.services.keys).subtracting(services.keys),
                reals: Set(mapped.reals.keys).subtracting(reals.keys),
                natReals: mapped.natReals.subtracting(natReals),
                localAddresses: mapped.localAddresses.subtracting(localAddresses),
                fragmentAddresses: mapped.fragmentAddresses.subtracting(fragmentAddresses))
    }

    var isEmpty: Bool {
        services.isEmpty && reals.isEmpty && natReals.isEmpty && localAddresses.isEmpty && fragmentAddresses.isEmpty
    }
}

/// Map entries to delete, by key.
struct MapKeys: Equatable, Sendable {
    var services: Set<ServiceKey> = []
    var reals: Set<RealServerIdentity> = []
    var natReals: Set<ServiceKey> = []
    var localAddresses: Set<IPAddress> = []
    var fragmentAddresses: Set<FragmentAddress> = []

    var isEmpty: Bool {
        services.isEmpty && reals.isEmpty && natReals.isEmpty && localAddresses.isEmpty && fragmentAddresses.isEmpty
    }
}

/// The limits a configuration must fit: the XDP maps' and the counter store's.
struct ReloadLimits: Sendable {
    var services = XDPProgram.Limits.services
    var realServers = XDPProgram.Limits.realServers
    var localAddresses = XDPProgram.Limits.localAddresses
}

/// A change ready to commit.
struct ReloadPlan: Equatable, Sendable {
    /// The configuration the snapshot is built from once committed.
    var configuration: DirectorConfig
    /// Every configured real server's cell.
    var cells: [RealServerIdentity: CellAssignment]
    /// The draining servers after the change: those that stay, and those the change removes (with their
    /// settings of the running configuration).
    var draining: [RealServerIdentity: DrainingServer]
    /// What the maps hold once committed.
    var maps: MapState
    /// Written before the snapshot is published (new entries steer traffic only to what it serves).
    var writes: MapState
    /// Deleted after it is published (workers no longer need them).
    var deletes: MapKeys
}

enum ReloadPlanner {
    /// Plans replacing `current` (whose servers hold `state`'s cells, and whose maps hold `mapped`) with
    /// `next`, or refuses it with the reason an operator reads. `availableCells`: free cells in the counter
    /// store; `sources`: the director's own addresses (tunnels need one of the real server's family); `now`
    /// stamps servers that start draining.
    static func plan(current: DirectorConfig, state: CellState, mapped: MapState, next: DirectorConfig,
                     sources: [IPAddress], limits: ReloadLimits, availableCells: Int, now: Date) throws(ControlError) -> ReloadPlan {
        try checkMethods(next, sources: sources)
        try checkCapacity(next, state: state, limits: limits, availableCells: availableCells)
        var cells: [RealServerIdentity: CellAssignment] = [:]
        var draining = state.draining
        for service in next.services {
            for real in service.reals {
                let identity = RealServerIdentity(service: service.key, endpoint: real.endpoint)
                if let known = state.cells[identity] {
                    cells[identity] = .kept(known)
                } else if let returning = draining.removeValue(forKey: identity) {
                    cells[identity] = .returning(returning.cell)
                } else {
                    cells[identity] = .fresh
                }
            }
        }
        for (identity, cell) in state.cells where cells[identity] == nil {
            let real = current.service(identity.service)?.reals.first { $0.endpoint == identity.endpoint }
            draining[identity] = DrainingServer(real: real ?? RealServerConfig(endpoint: identity.endpoint), cell: cell, since: now)
        }
        let maps = MapState(next, draining: draining)
        return ReloadPlan(configuration: next, cells: cells, draining: draining, maps: maps,
                          writes: maps.writes(from: mapped), deletes: maps.deletes(from: mapped))
    }

    /// What the forwarding methods need from the rest of the configuration: FULLNAT a local address of the
    /// real server's family, tunnelling a director address of the real server's family.
    static func checkMethods(_ configuration: DirectorConfig, sources: [IPAddress]) throws(ControlError) {
        for service in configuration.services {
            for real in service.reals {
                let family = real.endpoint.address.family
                if real.method == .fullNAT && !service.localAddresses.contains(where: { $0.family == family }) {
                    throw ControlError("real server \(real.endpoint) of \(service.key) uses --fullnat, but the service "
                        + "has no local address of its family: add one with -P \(service.key) -z ADDRESS")
                }
                if real.method == .tunnel && !sources.contains(where: { $0.family == family }) {
                    throw ControlError("real server \(real.endpoint) of \(service.key) is tunnelled, but the director "
                        + "has no \(family == .ipv4 ? "IPv4" : "IPv6") address to send from: give one with --source-address")
                }
            }
        }
    }

    /// The limits of the XDP maps and the counter store.
    static func checkCapacity(_ next: DirectorConfig, state: CellState, limits: ReloadLimits,
                              availableCells: Int) throws(ControlError) {
        if next.services.count > limits.services {
            throw ControlError("too many virtual services: at most \(limits.services)")
        }
        let identities = Self.identities(of: next)
        if identities.count + state.draining.count > limits.realServers {
            throw ControlError("too many real servers: at most \(limits.realServers), draining ones included")
        }
        let needed = identities.filter { state.cells[$0] == nil && state.draining[$0] == nil }.count
        if needed > availableCells {
            throw ControlError("too many real servers: no counter cell left for \(needed - availableCells) of them")
        }
        if Set(next.services.flatMap(\.localAddresses)).count > limits.localAddresses {
            throw ControlError("too many local addresses: at most \(limits.localAddresses)")
        }
    }

    static func identities(of config: DirectorConfig) -> Set<RealServerIdentity> {
        Set(config.services.flatMap { service in
            service.reals.map { RealServerIdentity(service: service.key, endpoint: $0.endpoint) }
        })
    }
}
