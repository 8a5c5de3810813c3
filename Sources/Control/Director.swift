import CXDirectorShared
import Dataplane
import Foundation
import Logging
import Packet
import Scheduling
import Synchronization

/// How to run the director on an interface.
public struct DirectorOptions: Sendable {
    public var interface: String
    public var queues: [Int]?
    public var cores: [Int]?
    public var waitMode: WaitMode = .poll
    public var xdpMode: XDPProgram.AttachMode = .native
    public var allowZeroCopy = true
    /// Connection-table slots per worker, allocated at start.
    public var connectionsPerWorker = 1 << 18
    /// The director's own addresses: the outer source of tunnelled packets and the source of the ICMP errors
    /// it sends. Empty: the interface's first global address of each family.
    public var sourceAddresses: [IPAddress] = []
    /// How long the program holds the frames of a queue whose worker stopped (a crash, `kill -9`) before it
    /// hands them to the kernel: a director restarted within it resumes the connections (`--restart-grace`).
    public var restartGrace: Double = 30
    /// Where the running configuration is saved after every accepted change (nil: nowhere).
    public var rulesStateFile: RulesStateFile?
    /// The file under /dev/shm holding the workers' connections; nil: `ConnectionStateFile.defaultPath`.
    public var connectionStatePath: String?
    /// FULLNAT local addresses the connection state has room for (all services together).
    public var localAddressCapacity = 64

    public init(interface: String) { self.interface = interface }
}

/// The running director: XDP program, one AF_XDP socket and worker per queue, and the control loop that
/// keeps the workers' snapshot in step with the configuration and the neighbour table. `stop()` undoes
/// everything `start()` did. Only the control thread calls it (the metrics thread reads `latestReading`).
public final class Director {
    public private(set) var configuration: DirectorConfig
    /// Connection counts per real server, shared by the workers and kept across reloads; from `start` on,
    /// the connection state file's cells, so they survive a restart with the connections they count.
    public private(set) var counters = DestinationCounterStore(capacity: Director.counterCells)
    static let counterCells = 65536
    /// Where the workers' connections live, so that a restarted director resumes them (`start` maps it).
    private var connectionState: ConnectionStateFile?
    /// The cells whose holder is recorded in the connection state file.
    private var recordedCells: Set<UInt32> = []
    /// Each configured real server's cell in `counters` (and in `traffic`): its identity for the workers.
    var counterIDs: [RealServerIdentity: UInt32] = [:]
    /// Real servers removed from the configuration that still hold connections (IPVS's default: they keep
    /// their connections until those end, and get no new ones). Their cells are released once empty.
    var draining: [RealServerIdentity: DrainingServer] = [:]
    /// Per-worker traffic of each cell; `cellBase` is a cell's reading when it was last handed out.
    public let traffic: DestinationTrafficStore
    var cellBase: [UInt32: TrafficStats] = [:]
    /// Traffic of a service's real servers that have left it, so the service's totals never go down.
    var serviceHistory: [ServiceKey: TrafficStats] = [:]
    /// `ipvsadm -Z`: readings subtracted from what listings show.
    var zeroed: [StatisticsKey: TrafficStats] = [:]
    var estimator = RateEstimator()
    public let interface: NetworkInterface
    /// The interface's name, unique per network namespace: names the pins (and the control socket).
    public let instance: String
    public let plan: QueuePlan
    /// The program a director that died left attached, which `start` replaces in one step.
    private let stale: AttachedProgram?
    let options: DirectorOptions
    private let logger: Logger
    var program: XDPProgram?
    private(set) var workers: [Worker] = []
    var exchange: SnapshotExchange?
    private var resolver: RealServerResolver?
    private var finalXDPCounters: [UInt64] = []
    /// The addresses tunnelled packets and ICMP errors leave from, one per family at most.
    public let sourceAddresses: [IPAddress]
    /// The last reading the control loop took (at most a second old), for other threads (the metrics endpoint).
    public let latestReading = LatestReading()

    /// Validates everything that can be checked before touching the kernel; nothing is attached yet.
    public init(configuration: DirectorConfig, options: DirectorOptions, logger: Logger) throws {
        self.configuration = configuration
        self.options = options
        self.logger = logger
        interface = try NetworkInterface(name: options.interface)
        instance = DirectorInstance.name(interface: options.interface)
        stale = try Self.checkOwnership(of: interface)
        plan = try QueuePlan(queues: options.queues, cores: options.cores, interfaceQueueCount: interface.rxQueueCount)
        sourceAddresses = options.sourceAddresses.isEmpty ? InterfaceAddresses.primary(of: options.interface)
                                                           : options.sourceAddresses
        traffic = DestinationTrafficStore(workers: plan.assignments.count, capacity: counters.capacity)
        try checkCapacity(configuration)
        try Self.checkMethods(configuration, sources: sourceAddresses)
    }

    /// Refuses an interface that a live director serves (whatever its queues) or that carries another XDP
    /// program; returns the program of a director that died, to be taken over.
    static func checkOwnership(of interface: NetworkInterface) throws -> AttachedProgram? {
        guard let attached = AttachedProgram.inspect(interfaceIndex: interface.index) else { return nil }
        guard let owner = attached.owner else {
            throw ControlError("\(interface.name) already has an XDP program (id \(attached.id), '\(attached.name)') that is not a "
                + "director's; remove it first (ip link set dev \(interface.name) xdp off)")
        }
        guard !owner.isAlive else {
            throw ControlError("\(interface.name) is served by a running director (pid \(owner.pid)); stop it first")
        }
        return attached
    }

    /// What the forwarding methods need from the rest of the configuration: FULLNAT a local address of the
    /// real server's family, tunnelling a director address of the real server's family.
    static func checkMethods(_ configuration: DirectorConfig, sources: [IPAddress]) throws {
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

    /// The limits of the XDP maps and the counter store, checked before anything changes.
    private func checkCapacity(_ next: DirectorConfig) throws {
        if next.services.count > Int(XD_MAX_SERVICES) {
            throw ControlError("too many virtual services: at most \(XD_MAX_SERVICES)")
        }
        let identities = Self.identities(of: next)
        if identities.count + draining.count > Int(XD_MAX_REALS) {
            throw ControlError("too many real servers: at most \(XD_MAX_REALS), draining ones included")
        }
        let needed = identities.filter { counterIDs[$0] == nil && draining[$0] == nil }.count
        if needed > counters.available {
            throw ControlError("too many real servers: no counter cell left for \(needed - counters.available) of them")
        }
        let localAddressLimit = min(Int(XD_MAX_LOCAL_ADDRS), options.localAddressCapacity)
        if Set(next.services.flatMap(\.localAddresses)).count > localAddressLimit {
            throw ControlError("too many local addresses: at most \(localAddressLimit)")
        }
    }

    deinit { stop() }

    /// Replaces the running configuration with `next`: services, real servers, weights, thresholds,
    /// schedulers, local addresses, timeouts. The maps are written first (new entries steer traffic only to
    /// what the next snapshot serves), the workers adopt the snapshot between batches, and existing
    /// connections keep their real servers, removed ones included (they drain). On any error the running
    /// configuration stays as it was.
    public func reload(_ next: DirectorConfig) throws {
        try Self.checkMethods(next, sources: sourceAddresses)
        try checkCapacity(next)
        let previous = configuration
        let (previousIDs, previousDraining) = (counterIDs, draining)
        configuration = next
        assignCounters(leaving: previous)
        if let program {
            do {
                try writeMaps(program)
            } catch {
                // A map refused an entry (the limits are checked, so hardly ever): put everything back.
                for (identity, id) in counterIDs where previousIDs[identity] == nil && previousDraining[identity] == nil {
                    counters.release(id)
                }
                (configuration, counterIDs, draining) = (previous, previousIDs, previousDraining)
                assignCounters(leaving: previous)  // the thresholds as they were; every server keeps its cell
                try? writeMaps(program)
                removeStaleMapEntries(program)
                throw error
            }
        }
        _ = resolver?.refresh(realAddresses)
        republish()
        if let program { removeStaleMapEntries(program) }
        logger.info("configuration changed: \(next.services.count) services, \(next.services.reduce(0) { $0 + $1.reals.count }) real servers")
        saveConfiguration()
    }

    /// Saves the running configuration for a restart. The change is already applied: a failure to save is
    /// reported, not a reason to undo it.
    private func saveConfiguration() {
        guard let file = options.rulesStateFile else { return }
        do { try file.save(configuration) } catch { logger.error("\(error)") }
    }

    /// Applies ipvsadm commands to the running configuration, all of them or none.
    public func apply(_ commands: [IPVSCommand]) throws {
        var next = configuration
        for command in commands { try next.apply(command) }
        try reload(next)
    }

    /// Loads the program, opens the sockets, starts the workers, and attaches last, so no frame is
    /// redirected before a worker is there to take it. On failure everything made so far is undone.
    public func start() throws {
        do {
            let program = try XDPProgram(interface: interface, instance: instance, logger: logger)
            self.program = program
            try program.setOwner(.current, restartGrace: options.restartGrace)
            program.pin()
            resolver = RealServerResolver(table: try NeighbourTable(interface: interface), interfaceName: interface.name, logger: logger)
            _ = resolver?.refresh(realAddresses)
            let state = try openConnectionState()
            assignCounters(leaving: configuration)
            let exchange = SnapshotExchange(makeSnapshot())
            self.exchange = exchange
            try writeMaps(program)
            var socketConfig = XSKConfiguration()
            socketConfig.allowZeroCopy = options.allowZeroCopy
            for (partition, assignment) in plan.assignments.enumerated() {
                let queue = try XSKQueue(interface: interface, queue: assignment.queue, configuration: socketConfig)
                let worker = Worker(queue: queue, core: assignment.core, exchange: exchange, waitMode: options.waitMode,
                                    connectionCapacity: options.connectionsPerWorker, state: state.partition(partition),
                                    heartbeat: program.heartbeat(queue: assignment.queue), logger: logger)
                try program.registerSocket(queue: assignment.queue, fd: queue.fd)
                try worker.start()
                workers.append(worker)
                logger.info("queue \(assignment.queue): worker on core \(assignment.core), \(queue.zeroCopy ? "zero-copy" : "copy") mode")
            }
            awaitResolution(seconds: 3)
            if let stale, let owner = stale.owner {
                logger.notice("taking over \(interface.name) from a director that died (pid \(owner.pid), XDP program \(stale.id))")
            }
            try program.attach(preferring: options.xdpMode, replacing: stale)
            saveConfiguration()
            logger.info("XDP program attached to \(interface.name) (\(program.attachedMode?.rawValue ?? "?")), maps pinned at \(program.pinDirectory ?? "(not pinned)")")
        } catch {
            stop(keepingConnections: connectionState?.restored == true)
            throw error
        }
    }

    /// Maps the connection state file. When it holds a dead director's connections (same layout), every
    /// real server it names takes its cell back: configured ones keep their connections, the others drain
    /// with their recorded settings, exactly as if they had just been removed.
    private func openConnectionState() throws -> ConnectionStateFile {
        let layout = ConnectionStateFile.Layout(workers: plan.assignments.count, connectionsPerWorker: options.connectionsPerWorker,
                                                counterCells: Self.counterCells, localAddresses: options.localAddressCapacity)
        let path = options.connectionStatePath ?? ConnectionStateFile.defaultPath(instance: instance)
        let state = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        connectionState = state
        counters = state.counters
        guard state.restored else { return state }
        let configured = Self.identities(of: configuration)
        let recorded = state.recordedRealServers()
        for (cell, server) in recorded {
            let identity = RealServerIdentity(service: server.service,
                                              endpoint: L4Endpoint(address: server.route.address, port: server.route.port))
            recordedCells.insert(cell)
            cellBase[cell] = traffic.totals(cell)
            if configured.contains(identity) {
                counterIDs[identity] = cell
            } else {
                draining[identity] = DrainingServer(real: Self.realServer(identity.endpoint, server), cell: cell, since: Date())
            }
        }
        logger.notice("resuming the connections in \(path): \(recorded.count) real servers (\(draining.count) no longer configured, draining)")
        return state
    }

    /// A real server as the connection state recorded it.
    private static func realServer(_ endpoint: L4Endpoint, _ server: PersistedRealServer) -> RealServerConfig {
        RealServerConfig(endpoint: endpoint, weight: server.weight, method: server.route.method,
                                tunnel: server.route.tunnel,
                                upperThreshold: server.upperThreshold, lowerThreshold: server.lowerThreshold)
    }

    /// Records in the connection state file which real server holds each cell (configured and draining), and
    /// forgets released cells, so a restarted director knows whose connections it resumes.
    private func recordCells() {
        guard let state = connectionState else { return }
        var current: Set<UInt32> = []
        func record(_ service: ServiceKey, _ real: RealServerConfig, _ cell: UInt32) {
            state.record(cell: cell, PersistedRealServer(
                service: service,
                route: Self.route(of: real), weight: real.weight,
                upperThreshold: real.upperThreshold, lowerThreshold: real.lowerThreshold))
            current.insert(cell)
        }
        for service in configuration.services {
            for real in service.reals {
                if let cell = counterIDs[RealServerIdentity(service: service.key, endpoint: real.endpoint)] {
                    record(service.key, real, cell)
                }
            }
        }
        for (identity, server) in draining { record(identity.service, server.real, server.cell) }
        for cell in recordedCells.subtracting(current) { state.record(cell: cell, nil) }
        recordedCells = current
    }

    /// Writes the running configuration into the XDP program's maps (adds and updates only): the virtual
    /// services, every real server (draining ones flagged), the NAT real servers whose replies come back
    /// through us (draining ones too: their connections still reply), and the FULLNAT local addresses.
    private func writeMaps(_ program: XDPProgram) throws {
        for (index, service) in configuration.services.enumerated() {
            try program.setService(Self.mapKey(service.endpoint, service.proto),
                                   xd_service_value(index: UInt32(index), flags: UInt32(XD_SVC_F_NONE)))
        }
        for service in configuration.services {
            for real in service.reals {
                try program.setRealServer(Self.mapKey(service.key, real.endpoint), Self.mapValue(real, draining: false))
            }
        }
        for (identity, server) in draining where configuration.serviceIndex(of: identity.service) != nil {
            try program.setRealServer(Self.mapKey(identity.service, identity.endpoint), Self.mapValue(server.real, draining: true))
        }
        for real in steeredNATReals { try program.setNATReal(Self.mapKey(real.endpoint, real.proto)) }
        for address in Self.localAddresses(of: configuration) { try program.setLocalAddress(Self.mapKey(address)) }
        mapped = MappedState(services: Set(configuration.services.map(\.key)), reals: listedRealServers,
                             natReals: steeredNATReals, localAddresses: Self.localAddresses(of: configuration))
            .union(mapped)
    }

    /// Removes the map entries the running configuration no longer has.
    private func removeStaleMapEntries(_ program: XDPProgram) {
        let keep = MappedState(services: Set(configuration.services.map(\.key)), reals: listedRealServers,
                               natReals: steeredNATReals, localAddresses: Self.localAddresses(of: configuration))
        for key in mapped.services.subtracting(keep.services) { program.removeService(Self.mapKey(key.endpoint, key.proto)) }
        for identity in mapped.reals.subtracting(keep.reals) {
            program.removeRealServer(Self.mapKey(identity.service, identity.endpoint))
        }
        for real in mapped.natReals.subtracting(keep.natReals) { program.removeNATReal(Self.mapKey(real.endpoint, real.proto)) }
        for address in mapped.localAddresses.subtracting(keep.localAddresses) { program.removeLocalAddress(Self.mapKey(address)) }
        mapped = keep
    }

    /// What the maps hold, so that what leaves the configuration leaves the maps.
    private var mapped = MappedState()

    /// The real servers listed in the `real_servers` map: the configured ones, and the draining ones of
    /// services that still exist.
    private var listedRealServers: Set<RealServerIdentity> {
        Self.identities(of: configuration).union(draining.keys.filter { configuration.serviceIndex(of: $0.service) != nil })
    }

    /// The NAT real servers whose replies are steered to the workers: configured or draining.
    private var steeredNATReals: Set<ServiceKey> {
        var reals = Set(configuration.services.flatMap { service in
            service.reals.filter { $0.method == .masquerading }.map { ServiceKey(proto: service.proto, endpoint: $0.endpoint) }
        })
        for (identity, server) in draining where server.real.method == .masquerading {
            reals.insert(ServiceKey(proto: identity.service.proto, endpoint: identity.endpoint))
        }
        return reals
    }

    private static func localAddresses(of config: DirectorConfig) -> Set<IPAddress> {
        Set(config.services.flatMap(\.localAddresses))
    }

    static func identities(of config: DirectorConfig) -> Set<RealServerIdentity> {
        Set(config.services.flatMap { service in
            service.reals.map { RealServerIdentity(service: service.key, endpoint: $0.endpoint) }
        })
    }

    /// Gives the kernel a moment to resolve the real servers before traffic is taken, so the first
    /// connections are not refused for want of a MAC address. Unresolved ones are reported and retried.
    private func awaitResolution(seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while !unresolvedRealServers.isEmpty && Date() < deadline {
            _ = resolver?.waitForChange(milliseconds: 100)
            if resolver?.refresh(realAddresses) == true { republish() }
        }
        for address in unresolvedRealServers.sorted(by: { $0.description < $1.description }) {
            logger.warning("real server \(address) is not resolved yet on \(interface.name): it gets no new connections until it is")
        }
    }

    /// Runs the control loop until `shouldStop` returns true (asked every 50 ms, so a reload or a stop is
    /// prompt): reads the neighbour table when the kernel reports a change, and at least every second for
    /// the resolver's retries (republishing only when a real server's MAC changed); once a second releases
    /// drained real servers and takes a reading; every two seconds updates the rate estimates. `idle` runs
    /// on each turn (the control socket).
    public func run(until shouldStop: () -> Bool, idle: () -> Void = {}) {
        var lastRefresh = Date.distantPast
        var lastEstimate = Date()
        while !shouldStop() {
            let changed = resolver?.waitForChange(milliseconds: 50) ?? false
            idle()
            let now = Date()
            if now.timeIntervalSince(lastEstimate) >= RateEstimator.interval {
                estimator.update(rawTraffic(), seconds: now.timeIntervalSince(lastEstimate))
                lastEstimate = now
            }
            guard changed || now.timeIntervalSince(lastRefresh) >= 1 else { continue }
            lastRefresh = now
            if resolver?.refresh(realAddresses, now: now) == true { republish() }
            releaseDrained(now: now)
            latestReading.store(DirectorReading(statistics: statistics(), services: listing(connections: false).services))
        }
    }

    /// Detaches first (traffic falls back to the kernel), then stops workers and frees sockets and maps; the
    /// connection state goes too, unless `keepingConnections` (a refused start that found a dead director's
    /// connections leaves them for the next try).
    public func stop(keepingConnections: Bool = false) {
        program?.detach()
        for worker in workers { worker.stop() }
        if let program { finalXDPCounters = program.counters() }
        program?.close()
        program = nil
        if !keepingConnections { connectionState?.remove() }
        connectionState = nil
    }

    /// Ends this director for a successor (`SIGUSR2`, an upgrade): the workers stop, but the program stays
    /// attached and pinned and the connection state stays, so frames are held for the restart grace and the
    /// next `xdirector run` on the interface takes over and resumes every connection, as after a crash.
    public func handOver() {
        for worker in workers { worker.stop() }
        connectionState = nil
        if let program { finalXDPCounters = program.counters() }
        program?.leaveAttached()
        program = nil
        logger.notice("handed over: the XDP program stays attached on \(interface.name) and holds its frames for \(options.restartGrace) s; start the next director now")
    }

    /// Per-queue worker counters and the XDP program's counters.
    public func statistics() -> DirectorStatistics {
        DirectorStatistics(
            workers: workers.map { worker in
                DirectorStatistics.WorkerRow(queue: worker.queue.queue, core: worker.core, cpu: worker.cpu,
                                             zeroCopy: worker.queue.zeroCopy, threadID: worker.threadID,
                                             rings: worker.queue.configuration, counters: worker.counters.values())
            },
            xdp: program?.counters() ?? finalXDPCounters)
    }

    /// Moves queue `queue`'s worker to `core`, which must exist, be allowed to this process and serve no other
    /// queue (as `run --cores` requires).
    public func pin(queue: UInt32, core: Int) throws {
        guard let worker = workers.first(where: { $0.queue.queue == queue }) else {
            let served = workers.map { String($0.queue.queue) }.joined(separator: ",")
            throw ControlError("queue \(queue) is not served (served: \(served))")
        }
        let usable = CPUs.usable()
        guard usable.contains(core) else {
            throw ControlError("core \(core) does not exist or is not allowed for this process (usable: \(QueuePlan.format(usable)))")
        }
        if let other = workers.first(where: { $0 !== worker && $0.core == core }) {
            throw ControlError("core \(core) already runs the worker of queue \(other.queue.queue); each worker needs its own core")
        }
        try worker.pin(to: core)
        logger.info("queue \(queue): worker moved to core \(core)")
    }

    /// Real servers without a resolved MAC address.
    public var unresolvedRealServers: Set<IPAddress> {
        Set(realAddresses.filter { resolver?.macs[$0] == nil })
    }

    /// Configured and draining real servers: all need their MAC.
    private var realAddresses: Set<IPAddress> {
        Set(configuration.services.flatMap { $0.reals.map(\.endpoint.address) } + draining.values.map(\.real.endpoint.address))
    }

    private func republish() {
        exchange?.publish(makeSnapshot())
    }

    /// Set by `quiesce`: every real server is published with weight 0.
    private var quiesced = false

    /// Takes no new connections from now on (every real server quiesced, as weight 0 does) while existing
    /// ones carry on: the start of a drain before stopping (`run --drain`).
    public func quiesce() {
        quiesced = true
        republish()
        logger.info("quiesced: no new connections")
    }

    private func makeSnapshot() -> ForwardingSnapshot {
        let macs = resolver?.macs ?? [:]
        func destination(_ real: RealServerConfig, cell: UInt32?) -> SnapshotDestination {
            SnapshotDestination(weight: quiesced ? 0 : real.weight, mac: macs[real.endpoint.address], cell: cell,
                                endpointHash: StableHash.endpoint(real.endpoint.address, port: real.endpoint.port),
                                route: Self.route(of: real))
        }
        let services = configuration.services.map { service in
            SnapshotService(
                key: service.key,
                policy: service.policy,
                destinations: service.reals.map { real in
                    destination(real, cell: counterIDs[RealServerIdentity(service: service.key, endpoint: real.endpoint)])
                },
                localAddresses: service.localAddresses,
                draining: draining.filter { $0.key.service == service.key }
                    .sorted { $0.value.cell < $1.value.cell }
                    .map { destination($0.value.real, cell: $0.value.cell) })
        }
        return ForwardingSnapshot(interfaceMAC: interface.mac, services: services, counters: counters,
                                  timeouts: configuration.connectionTimeouts, mtu: interface.mtu,
                                  sourceAddresses: sourceAddresses, traffic: traffic)
    }

    /// Gives every configured real server a counter cell (keeping the one it had, or taking back its cell
    /// when it was draining), moves servers that left to `draining` with their settings in `previous`, and
    /// writes the thresholds. `checkCapacity` has made sure there are cells enough.
    private func assignCounters(leaving previous: DirectorConfig) {
        var next: [RealServerIdentity: UInt32] = [:]
        for service in configuration.services {
            for real in service.reals {
                let identity = RealServerIdentity(service: service.key, endpoint: real.endpoint)
                let id: UInt32
                if let known = counterIDs[identity] {
                    id = known
                } else if let returning = draining.removeValue(forKey: identity) {
                    id = returning.cell
                } else {
                    guard let fresh = counters.allocate() else { continue }
                    id = fresh
                    cellBase[fresh] = traffic.totals(fresh)
                }
                next[identity] = id
                counters.setThresholds(id, upper: real.upperThreshold, lower: real.lowerThreshold)
            }
        }
        for (identity, id) in counterIDs where next[identity] == nil {
            let real = previous.service(identity.service)?.reals.first { $0.endpoint == identity.endpoint }
            draining[identity] = DrainingServer(real: real ?? RealServerConfig(endpoint: identity.endpoint),
                                                cell: id, since: Date())
        }
        counterIDs = next
        recordCells()
    }

    /// Releases the cells of draining real servers whose connections and templates have all ended (at least
    /// a second after they left, so every worker has adopted the snapshot without them), keeping their
    /// traffic in their service's totals.
    private func releaseDrained(now: Date) {
        var changed = false
        for (identity, server) in draining where now.timeIntervalSince(server.since) >= 1 {
            let counts = counters.counts(server.cell)
            guard counts.active <= 0 && counts.inactive <= 0 && counts.persistent <= 0 else { continue }
            if configuration.serviceIndex(of: identity.service) != nil {
                serviceHistory[identity.service, default: .zero] += cellTraffic(server.cell)
                changed = true
            }
            draining[identity] = nil
            zeroed[.real(identity)] = nil
            cellBase[server.cell] = nil
            counters.release(server.cell)
            connectionState?.record(cell: server.cell, nil)
            recordedCells.remove(server.cell)
        }
        guard changed else { return }
        republish()
        if let program { removeStaleMapEntries(program) }
    }

    /// Active, inactive and persistent connection counts of a real server, across all workers.
    public func counts(service: ServiceKey, server: L4Endpoint) -> DestinationCounts? {
        counterIDs[RealServerIdentity(service: service, endpoint: server)].map { counters.counts($0) }
    }

    static func route(of real: RealServerConfig) -> DestinationRoute {
        DestinationRoute(method: real.method, address: real.endpoint.address, port: real.endpoint.port, tunnel: real.tunnel)
    }

    static func mapKey(_ service: ServiceKey, _ real: L4Endpoint) -> xd_real_key {
        var key = xd_real_key()
        key.service = mapKey(service.endpoint, service.proto)
        withUnsafeMutableBytes(of: &key.addr) { raw in
            for (i, byte) in real.address.bytes.enumerated() { raw[i] = byte }
        }
        key.port = real.port.bigEndian
        key.family = real.address.family == .ipv4 ? UInt8(XD_FAMILY_IPV4) : UInt8(XD_FAMILY_IPV6)
        return key
    }

    static func mapValue(_ real: RealServerConfig, draining: Bool) -> xd_real_value {
        let method: Int32
        switch real.method {
        case .directRouting: method = XD_METHOD_DR
        case .tunnel: method = XD_METHOD_TUNNEL
        case .masquerading: method = XD_METHOD_MASQ
        case .fullNAT: method = XD_METHOD_FULLNAT
        }
        let tunnel: Int32
        switch real.tunnel.type {
        case .ipip: tunnel = XD_TUNNEL_IPIP
        case .gue: tunnel = XD_TUNNEL_GUE
        case .gre: tunnel = XD_TUNNEL_GRE
        }
        return xd_real_value(weight: UInt32(max(real.weight, 0)), method: UInt8(method),
                             tunnel: real.method == .tunnel ? UInt8(tunnel) : 0,
                             flags: UInt16(draining ? XD_REAL_F_DRAINING : XD_REAL_F_NONE),
                             upper_threshold: real.upperThreshold, lower_threshold: real.lowerThreshold)
    }

    static func mapKey(_ address: IPAddress) -> xd_local_addr_key {
        var key = xd_local_addr_key()
        withUnsafeMutableBytes(of: &key.addr) { raw in
            for (i, byte) in address.bytes.enumerated() { raw[i] = byte }
        }
        key.family = address.family == .ipv4 ? UInt8(XD_FAMILY_IPV4) : UInt8(XD_FAMILY_IPV6)
        return key
    }

    static func mapKey(_ endpoint: L4Endpoint, _ proto: L4Protocol) -> xd_service_key {
        var key = xd_service_key()
        withUnsafeMutableBytes(of: &key.addr) { raw in
            for (i, byte) in endpoint.address.bytes.enumerated() { raw[i] = byte }
        }
        key.port = endpoint.port.bigEndian
        key.proto = proto.number
        key.family = endpoint.address.family == .ipv4 ? UInt8(XD_FAMILY_IPV4) : UInt8(XD_FAMILY_IPV6)
        return key
    }
}

/// A real server of a service: what keeps its counters across configuration changes.
struct RealServerIdentity: Hashable {
    var service: ServiceKey
    var endpoint: L4Endpoint
}

/// A real server removed from the configuration whose connections have not all ended.
struct DrainingServer {
    /// Its settings when it left: its connections are still forwarded by them.
    var real: RealServerConfig
    var cell: UInt32
    var since: Date
}

/// The entries the director has written into the XDP maps.
struct MappedState {
    var services: Set<ServiceKey> = []
    var reals: Set<RealServerIdentity> = []
    var natReals: Set<ServiceKey> = []
    var localAddresses: Set<IPAddress> = []

    func union(_ other: MappedState) -> MappedState {
        MappedState(services: services.union(other.services), reals: reals.union(other.reals),
                    natReals: natReals.union(other.natReals), localAddresses: localAddresses.union(other.localAddresses))
    }
}

/// A reading for other threads: the workers' and XDP counters, and the services with their traffic.
public struct DirectorReading: Sendable {
    public var statistics: DirectorStatistics
    public var services: [ServiceListing]
}

/// The control loop's last reading, shared with other threads.
public final class LatestReading: Sendable {
    private let value = Mutex<DirectorReading?>(nil)

    public var current: DirectorReading? { value.withLock { $0 } }

    func store(_ reading: DirectorReading) { value.withLock { $0 = reading } }
}
