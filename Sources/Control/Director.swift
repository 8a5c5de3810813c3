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
    /// Who holds which counter cell (configured and draining real servers), recorded in the connection state.
    let cells = CellRegistry(capacity: Director.counterCells)
    static let counterCells = 65536
    /// Traffic per cell, service histories, `-Z` baselines and rates.
    let ledger: TrafficLedger
    /// The XDP maps' contents, kept in step with each committed plan (nil until `start` loads the program).
    private var syncer: MapSyncer?
    /// Where the workers' connections live, so that a restarted director resumes them (`start` maps it).
    private var connectionState: ConnectionStateFile?
    /// Connection counts per real server, shared by the workers and kept across reloads.
    public var counters: DestinationCounterStore { cells.counters }
    /// Per-worker traffic of each cell.
    public var traffic: DestinationTrafficStore { ledger.traffic }
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
        try Self.checkMTU(of: interface)
        stale = try Self.checkOwnership(of: interface)
        plan = try QueuePlan(queues: options.queues, cores: options.cores, interfaceQueueCount: interface.rxQueueCount)
        sourceAddresses = options.sourceAddresses.isEmpty ? InterfaceAddresses.primary(of: options.interface)
                                                           : options.sourceAddresses
        ledger = TrafficLedger(workers: plan.assignments.count, capacity: Self.counterCells)
        _ = try planChange(to: configuration)
    }

    /// Refuses an interface whose MTU makes frames larger than a UMEM frame holds: the kernel would drop
    /// them (or the driver refuse native XDP), and the director serves no multi-buffer frames.
    static func checkMTU(of interface: NetworkInterface, frames: XSKConfiguration = XSKConfiguration()) throws {
        guard interface.mtu > frames.largestMTU else { return }
        throw ControlError("\(interface.name) has MTU \(interface.mtu): its frames do not fit the director's \(frames.frameSize)-byte "
            + "UMEM frames (\(XSKConfiguration.kernelHeadroom) bytes of headroom, an Ethernet header with a VLAN tag); the largest MTU "
            + "that works is \(frames.largestMTU) (ip link set dev \(interface.name) mtu \(frames.largestMTU))")
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

    /// The limits a configuration must fit: the maps', and the local addresses the connection state has room for.
    private var limits: ReloadLimits {
        var limits = ReloadLimits()
        limits.localAddresses = min(limits.localAddresses, options.localAddressCapacity)
        return limits
    }

    /// Plans replacing the running configuration with `next` (pure: nothing changes), or refuses it.
    private func planChange(to next: DirectorConfig) throws(ControlError) -> ReloadPlan {
        try ReloadPlanner.plan(current: configuration, state: cells.state, mapped: syncer?.mapped ?? MapState(), next: next,
                               sources: sourceAddresses, limits: limits, availableCells: counters.available, now: Date())
    }

    /// Commits a plan in an order that never leaves a half state: the maps' new entries first (they steer
    /// traffic only to what the next snapshot serves; a refused write is undone and nothing else changes),
    /// then the cells and the snapshot the workers adopt between batches, then the stale map entries.
    private func commit(_ plan: ReloadPlan) throws {
        try syncer?.write(plan.writes)
        for cell in cells.commit(plan) { ledger.handOut(cell) }
        configuration = plan.configuration
        _ = resolver?.refresh(realAddresses)
        republish()
        syncer?.delete(plan.deletes)
    }

    deinit { stop() }

    /// Replaces the running configuration with `next`: services, real servers, weights, thresholds,
    /// schedulers, local addresses, timeouts. The maps are written first (new entries steer traffic only to
    /// what the next snapshot serves), the workers adopt the snapshot between batches, and existing
    /// connections keep their real servers, removed ones included (they drain). On any error the running
    /// configuration stays as it was.
    public func reload(_ next: DirectorConfig) throws {
        try commit(try planChange(to: next))
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
            resolver = RealServerResolver(table: try NeighbourTable(interface: interface), interfaceName: interface.name, logger: logger)
            _ = resolver?.refresh(realAddresses)
            let state = try openConnectionState()
            let syncer = MapSyncer(maps: program, logger: logger)
            self.syncer = syncer
            let initial = try planChange(to: configuration)
            try syncer.write(initial.writes)
            for cell in cells.commit(initial) { ledger.handOut(cell) }
            let exchange = SnapshotExchange(makeSnapshot())
            self.exchange = exchange
            var socketConfig = XSKConfiguration()
            socketConfig.allowZeroCopy = options.allowZeroCopy
            // Fragments are remembered for seconds only: nothing to resume after a restart.
            let fragments = FragmentTable(partitions: plan.assignments.count)
            for (partition, assignment) in plan.assignments.enumerated() {
                let queue = try XSKQueue(interface: interface, queue: assignment.queue, configuration: socketConfig)
                let worker = Worker(queue: queue, core: assignment.core, exchange: exchange, waitMode: options.waitMode,
                                    connectionCapacity: options.connectionsPerWorker, fragments: fragments,
                                    partition: partition, state: state.partition(partition),
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
            syncHostAddresses()
            try program.attach(mode: options.xdpMode, replacing: stale)
            // Pinned once attached: until then a dead director's pins (if any) still describe the interface.
            program.pin()
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
        let restored = cells.attach(state, configured: ReloadPlanner.identities(of: configuration), now: Date())
        for cell in restored { ledger.handOut(cell) }
        if state.restored {
            logger.notice("resuming the connections in \(path): \(restored.count) real servers (\(cells.state.draining.count) no longer configured, draining)")
        }
        return state
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
                ledger.updateRates(rawTraffic(), seconds: now.timeIntervalSince(lastEstimate))
                lastEstimate = now
            }
            guard changed || now.timeIntervalSince(lastRefresh) >= 1 else { continue }
            lastRefresh = now
            if resolver?.refresh(realAddresses, now: now) == true { republish() }
            releaseDrained(now: now)
            syncHostAddresses()
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
        cells.detach()
        syncer = nil
    }

    /// Ends this director for a successor (`SIGUSR2`, an upgrade): the workers stop, but the program stays
    /// attached and pinned and the connection state stays, so frames are held for the restart grace and the
    /// next `xdirector run` on the interface takes over and resumes every connection, as after a crash.
    public func handOver() {
        for worker in workers { worker.stop() }
        connectionState = nil
        cells.detach()
        syncer = nil
        if let program { finalXDPCounters = program.counters() }
        program?.leaveAttached()
        program = nil
        logger.notice("handed over: the XDP program stays attached on \(interface.name) and holds its frames for \(options.restartGrace) s; start the next director now")
    }

    /// Per-queue worker counters, with each socket's kernel counts read now, and the XDP program's counters.
    /// Called on request and once a second by the control loop, never per batch.
    public func statistics() -> DirectorStatistics {
        DirectorStatistics(
            workers: workers.map { worker in
                if let socket = worker.queue.statistics() { worker.counters.record(socket) }
                return DirectorStatistics.WorkerRow(queue: worker.queue.queue, core: worker.core, cpu: worker.cpu,
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
        Set(configuration.services.flatMap { $0.reals.map(\.endpoint.address) } + cells.state.draining.values.map(\.real.endpoint.address))
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
                                route: CellRegistry.route(of: real))
        }
        let services = configuration.services.map { service in
            SnapshotService(
                key: service.key,
                policy: service.policy,
                destinations: service.reals.map { real in
                    destination(real, cell: cells.cell(of: RealServerIdentity(service: service.key, endpoint: real.endpoint)))
                },
                localAddresses: service.localAddresses,
                draining: cells.state.draining.filter { $0.key.service == service.key }
                    .sorted { $0.value.cell < $1.value.cell }
                    .map { destination($0.value.real, cell: $0.value.cell) })
        }
        return ForwardingSnapshot(interfaceMAC: interface.mac, services: services, counters: counters,
                                  timeouts: configuration.connectionTimeouts, mtu: interface.mtu,
                                  sourceAddresses: sourceAddresses, traffic: traffic)
    }

    /// The interface's addresses as the program last had them.
    private var hostAddresses: Set<IPAddress> = []

    /// Tells the program the host's own addresses (read once a second: an operator may add one), so a NAT
    /// real server's answers to the host itself (health checks) reach the kernel, not the workers.
    private func syncHostAddresses() {
        guard let program else { return }
        let current = Set(InterfaceAddresses.all(of: interface.name))
        guard current != hostAddresses else { return }
        do {
            for address in current.subtracting(hostAddresses) { try program.setHostAddress(address) }
            for address in hostAddresses.subtracting(current) { try program.removeHostAddress(address) }
            hostAddresses = current
        } catch {
            logger.error("\(error)")
        }
    }

    /// Releases the cells of draining real servers whose connections and templates have all ended (at least
    /// a second after they left, so every worker has adopted the snapshot without them), keeping their
    /// traffic in their service's totals, then drops their map entries.
    private func releaseDrained(now: Date) {
        var changed = false
        let drained = cells.drained(now: now)
        for (identity, server) in drained {
            let serviceExists = configuration.serviceIndex(of: identity.service) != nil
            ledger.release(server.cell, of: identity, serviceExists: serviceExists)
            cells.release(identity)
            changed = changed || serviceExists
        }
        guard !drained.isEmpty else { return }
        if changed { republish() }
        do { try syncer?.sync(to: MapState(configuration, draining: cells.state.draining)) } catch { logger.error("\(error)") }
    }

    /// Active, inactive and persistent connection counts of a real server, across all workers.
    public func counts(service: ServiceKey, server: L4Endpoint) -> DestinationCounts? {
        cells.cell(of: RealServerIdentity(service: service, endpoint: server)).map { counters.counts($0) }
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
