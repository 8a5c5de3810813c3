import CXDirectorShared
import Dataplane
import Foundation
import Logging
import Packet
import Scheduling

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

    public init(interface: String) { self.interface = interface }
}

/// The running director: XDP program, one AF_XDP socket and worker per queue, and the control loop that
/// keeps the workers' snapshot in step with the neighbour table. `stop()` undoes everything `start()` did.
public final class Director {
    public private(set) var configuration: DirectorConfig
    /// Connection counts per real server, shared by the workers and kept across reloads.
    public let counters = DestinationCounterStore()
    /// Each configured real server's cell in `counters`.
    private var counterIDs: [RealServerIdentity: UInt32] = [:]
    public let interface: NetworkInterface
    public let plan: QueuePlan
    private let options: DirectorOptions
    private let logger: Logger
    private var program: XDPProgram?
    private var workers: [Worker] = []
    private var exchange: SnapshotExchange?
    private var resolver: RealServerResolver?
    private var finalXDPCounters: [UInt64] = []
    /// The addresses tunnelled packets and ICMP errors leave from, one per family at most.
    public let sourceAddresses: [IPAddress]

    /// Validates everything that can be checked before touching the kernel; nothing is attached yet.
    public init(configuration: DirectorConfig, options: DirectorOptions, logger: Logger) throws {
        self.configuration = configuration
        self.options = options
        self.logger = logger
        interface = try NetworkInterface(name: options.interface)
        plan = try QueuePlan(queues: options.queues, cores: options.cores, interfaceQueueCount: interface.rxQueueCount)
        sourceAddresses = options.sourceAddresses.isEmpty ? InterfaceAddresses.primary(of: options.interface)
                                                           : options.sourceAddresses
        try Self.checkMethods(configuration, sources: sourceAddresses)
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

    deinit { stop() }

    /// Replaces the running configuration with `next` (weights, thresholds, schedulers, real servers,
    /// timeouts): the workers adopt it between batches and existing connections keep their real servers
    /// where those stay. On any error the running configuration stays. The set of virtual services cannot
    /// change yet (their XDP map entries are written at start).
    public func reload(_ next: DirectorConfig) throws {
        try Self.checkMethods(next, sources: sourceAddresses)
        guard next.services.map(\.key) == configuration.services.map(\.key) else {
            throw ControlError("adding or removing virtual services needs a restart")
        }
        // New NAT real servers and local addresses are steered before the workers may send them packets;
        // those that left stop being steered once the workers no longer use them.
        if let program { try writeMaps(program, for: next) }
        let previous = configuration
        configuration = next
        _ = resolver?.refresh(realAddresses)
        republish()
        if let program { removeStaleMapEntries(program, previous: previous) }
        logger.info("configuration reloaded: \(next.services.count) services, \(next.services.reduce(0) { $0 + $1.reals.count }) real servers")
    }

    /// Loads the program, opens the sockets, starts the workers, and attaches last, so no frame is
    /// redirected before a worker is there to take it. On failure everything made so far is undone.
    public func start() throws {
        do {
            let program = try XDPProgram(interface: interface, logger: logger)
            self.program = program
            resolver = RealServerResolver(table: try NeighbourTable(interface: interface), interfaceName: interface.name, logger: logger)
            _ = resolver?.refresh(realAddresses)
            let exchange = SnapshotExchange(makeSnapshot())
            self.exchange = exchange
            try writeMaps(program, for: configuration)
            let replies = try ReplyIndex(partitions: plan.assignments.count, entriesPerPartition: options.connectionsPerWorker)
            guard let templates = SharedFlowTable(partitions: plan.assignments.count,
                                                  entriesPerPartition: max(options.connectionsPerWorker / 4, 64)) else {
                throw ControlError("cannot allocate the persistence template directory")
            }
            var socketConfig = XSKConfiguration()
            socketConfig.allowZeroCopy = options.allowZeroCopy
            for (partition, assignment) in plan.assignments.enumerated() {
                let queue = try XSKQueue(interface: interface, queue: assignment.queue, configuration: socketConfig)
                let worker = Worker(queue: queue, core: assignment.core, exchange: exchange, waitMode: options.waitMode,
                                    connectionCapacity: options.connectionsPerWorker, replies: replies,
                                    templates: templates, partition: partition, logger: logger)
                try program.registerSocket(queue: assignment.queue, fd: queue.fd)
                try worker.start()
                workers.append(worker)
                logger.info("queue \(assignment.queue): worker on core \(assignment.core), \(queue.zeroCopy ? "zero-copy" : "copy") mode")
            }
            awaitResolution(seconds: 3)
            try program.attach(preferring: options.xdpMode)
            logger.info("XDP program attached to \(interface.name) (\(program.attachedMode?.rawValue ?? "?")), maps pinned at \(program.pinDirectory ?? "(not pinned)")")
        } catch {
            stop()
            throw error
        }
    }

    /// Fills the XDP program's maps for `config`: the virtual services, the NAT real servers whose replies
    /// come back through us, and the FULLNAT local addresses.
    private func writeMaps(_ program: XDPProgram, for config: DirectorConfig) throws {
        for (index, service) in config.services.enumerated() {
            try program.setService(Self.mapKey(service.endpoint, service.proto),
                                   xd_service_value(index: UInt32(index), flags: UInt32(XD_SVC_F_NONE)))
        }
        for real in Self.natReals(of: config) { try program.setNATReal(Self.mapKey(real.endpoint, real.proto)) }
        for address in Self.localAddresses(of: config) { try program.setLocalAddress(Self.mapKey(address)) }
    }

    /// Removes the NAT real servers and local addresses `previous` had and the running configuration has not.
    private func removeStaleMapEntries(_ program: XDPProgram, previous: DirectorConfig) {
        for real in Self.natReals(of: previous).subtracting(Self.natReals(of: configuration)) {
            program.removeNATReal(Self.mapKey(real.endpoint, real.proto))
        }
        for address in Self.localAddresses(of: previous).subtracting(Self.localAddresses(of: configuration)) {
            program.removeLocalAddress(Self.mapKey(address))
        }
    }

    /// The NAT real servers as the XDP program matches their replies: RIP:RPORT and protocol.
    private static func natReals(of config: DirectorConfig) -> Set<ServiceKey> {
        Set(config.services.flatMap { service in
            service.reals.filter { $0.method == .masquerading }.map { ServiceKey(proto: service.proto, endpoint: $0.endpoint) }
        })
    }

    private static func localAddresses(of config: DirectorConfig) -> Set<IPAddress> {
        Set(config.services.flatMap(\.localAddresses))
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
    /// the resolver's retries; republishes only when a real server's MAC changed.
    public func run(until shouldStop: () -> Bool) {
        var lastRefresh = Date.distantPast
        while !shouldStop() {
            let changed = resolver?.waitForChange(milliseconds: 50) ?? false
            let now = Date()
            guard changed || now.timeIntervalSince(lastRefresh) >= 1 else { continue }
            lastRefresh = now
            if resolver?.refresh(realAddresses, now: now) == true { republish() }
        }
    }

    /// Detaches first (traffic falls back to the kernel), then stops workers and frees sockets and maps.
    public func stop() {
        program?.detach()
        for worker in workers { worker.stop() }
        if let program { finalXDPCounters = program.counters() }
        program?.close()
        program = nil
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

    /// Real servers without a resolved MAC address.
    public var unresolvedRealServers: Set<IPAddress> {
        Set(realAddresses.filter { resolver?.macs[$0] == nil })
    }

    private var realAddresses: Set<IPAddress> { Set(configuration.services.flatMap { $0.reals.map(\.endpoint.address) }) }

    private func republish() {
        exchange?.publish(makeSnapshot())
    }

    private func makeSnapshot() -> ForwardingSnapshot {
        let macs = resolver?.macs ?? [:]
        let ids = assignCounters()
        let services = configuration.services.map { service in
            SnapshotService(
                key: VIPKey(address: service.endpoint.address, port: service.endpoint.port, proto: service.proto.number),
                policy: service.policy,
                destinations: service.reals.map { real in
                    SnapshotDestination(
                        weight: real.weight, mac: macs[real.endpoint.address],
                        counterID: ids[RealServerIdentity(service: service.key, endpoint: real.endpoint)],
                        endpointHash: StableHash.endpoint(real.endpoint.address, port: real.endpoint.port),
                        route: Self.route(of: real))
                },
                localAddresses: service.localAddresses)
        }
        return ForwardingSnapshot(interfaceMAC: interface.mac, services: services, counters: counters,
                                  timeouts: configuration.connectionTimeouts, mtu: interface.mtu,
                                  sourceAddresses: sourceAddresses)
    }

    /// Gives every configured real server a counter cell (keeping the ones it had), releases the cells of
    /// servers that left, and writes the thresholds.
    private func assignCounters() -> [RealServerIdentity: UInt32] {
        var next: [RealServerIdentity: UInt32] = [:]
        for service in configuration.services {
            for real in service.reals {
                let identity = RealServerIdentity(service: service.key, endpoint: real.endpoint)
                guard let id = counterIDs[identity] ?? counters.allocate() else {
                    logger.warning("no counter cell left for \(real.endpoint): it is scheduled without counts")
                    continue
                }
                next[identity] = id
                counters.setThresholds(id, upper: real.upperThreshold, lower: real.lowerThreshold)
            }
        }
        for (identity, id) in counterIDs where next[identity] == nil { counters.release(id) }
        counterIDs = next
        return next
    }

    /// Active, inactive and persistent connection counts of a real server, across all workers.
    public func counts(service: ServiceKey, server: Endpoint) -> DestinationCounts? {
        counterIDs[RealServerIdentity(service: service, endpoint: server)].map { counters.counts($0) }
    }

    static func route(of real: RealServerConfig) -> DestinationRoute {
        let kind: ForwardingKind
        switch real.method {
        case .directRouting: kind = .directRouting
        case .tunnel: kind = .tunnel
        case .masquerading: kind = .masquerading
        case .fullNAT: kind = .fullNAT
        }
        let tunnelType: TunnelType
        switch real.tunnel.kind {
        case .ipip: tunnelType = .ipip
        case .gue: tunnelType = .gue
        case .gre: tunnelType = .gre
        }
        return DestinationRoute(kind: kind, address: real.endpoint.address, port: real.endpoint.port,
                                tunnel: TunnelParameters(type: tunnelType, port: real.tunnel.port,
                                                         checksum: real.tunnel.checksum))
    }

    static func mapKey(_ address: IPAddress) -> xd_local_addr_key {
        var key = xd_local_addr_key()
        withUnsafeMutableBytes(of: &key.addr) { raw in
            for (i, byte) in address.bytes.enumerated() { raw[i] = byte }
        }
        key.family = address.family == .ipv4 ? UInt8(XD_FAMILY_IPV4) : UInt8(XD_FAMILY_IPV6)
        return key
    }

    static func mapKey(_ endpoint: Endpoint, _ proto: L4Protocol) -> xd_service_key {
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
    var endpoint: Endpoint
}
