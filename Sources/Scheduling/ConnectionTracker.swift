import Packet
import Synchronization

/// A worker's whole connection lifecycle behind one call per packet: finds the packet's connection or
/// places a new one (scheduler, persistence template, thresholds), runs the TCP state machine, expires
/// connections whose real server is gone, reschedules a SYN that reuses a port in TIME_WAIT or FIN_WAIT,
/// and keeps forwarding under a SYN flood (see "A full table" below).
///
/// One per worker; like `ConnectionTable`, only its worker calls it and no method allocates or locks except
/// `adopt` and the listings. Memory is allocated in `init` for the configured capacities. The policy and
/// destination buffers given to `adopt` must stay valid until the next `adopt` (the snapshot owns them).
///
/// Counts are kept in the shared `DestinationCounterStore`, so the least-connection schedulers of every
/// worker see every worker's connections. Counts follow the table: an expired connection is uncounted when
/// `sweep` (call it between batches) or a new connection reclaims its slot.
///
/// A connection names its real server by the server's counter cell, its identity across configurations:
/// `adopt` rebuilds a cell → index table (O(servers)), and every lookup resolves the entry's cell through
/// it (one load), so servers may move or leave without walking the tables. Entries without a cell (no
/// counter store) keep the server index they were placed with.
///
/// A full table (a SYN flood fills any table at once): a flow never changes real server and a legitimate
/// one keeps working, while the per-packet fast path stays as it is (all of this happens on insertion).
/// - Each flow has a stable choice (`stableChoice`): a weighted hash of the flow, or a consistent-hash
///   service's own scheduler, the same for every packet of the flow while the server set stays.
/// - Once the table is three quarters full, a new connection of a service whose director keeps nothing
///   else about it (DR, TUN: no reply state, no FULLNAT port; no persistence) is placed by its stable
///   choice and its entry is rederivable: while half-open it may be evicted for another new connection and
///   lives 5 s at most (`ConnectionTable.rederivableFlag`). Spoofed SYNs only ever make half-open entries,
///   so they churn among themselves; an established connection is never evicted.
/// - A flow left without an entry (its insert failed, or its half-open entry went) is forwarded to its
///   stable choice, and its next segments, which find no entry, are too while `untrackedTCP` says such flows
///   may exist; each of them gets an entry again as soon as there is room (the same server). A failed
///   insert extends that period by the longest TCP timeout, so an untracked flow that keeps sending is never
///   dropped; it lapses only when no flow can be both untracked and alive. Other protocols alike: while
///   `untrackedOther` is open, their new flows are placed by stable choice, since a datagram cannot say
///   whether its flow is new.
public struct ConnectionTracker: ~Copyable {
    /// "No server": the index a cell maps to while its real server is not configured.
    public static let noDestination = UInt32.max

    @usableFromInline var connections: ConnectionTable
    /// This worker's persistence templates: they count as persistent connections and are listed.
    private var templates: ConnectionTable
    /// Every worker's templates, so a client whose connections land on different queues keeps one server.
    private let directory: SharedFlowTableView
    /// Holds the directory's memory when this tracker made its own (a single worker).
    private let ownDirectory: SharedFlowTable?
    @usableFromInline var services: UnsafeBufferPointer<ServicePolicy>
    @usableFromInline var destinations: UnsafeBufferPointer<SchedulingDestination>
    private var states: UnsafeMutableBufferPointer<SchedulerState>
    /// Cell → index into `destinations` (`noDestination` when the cell's server is not configured), for
    /// cells below `cellCapacity`; larger ones are not used as identities.
    @usableFromInline let cellIndex: UnsafeMutablePointer<UInt32>
    @usableFromInline let cellCapacity: Int
    /// The cells set in `cellIndex`, so the next `adopt` clears just those.
    private var mappedCells: UnsafeMutableBufferPointer<UInt32>
    private let seed: UInt64
    /// The director's shared rr/wrr turns (`DestinationCounterStore.turns`), nil without a counter store.
    private let turns: UnsafeMutablePointer<Atomic<UInt64>>?
    /// While open, a TCP segment without connection may belong to a flow placed by its stable choice that
    /// holds no entry (not inserted, evicted or expired while half-open): it is forwarded there and tracked.
    private var untrackedTCP = UntrackedPeriod()
    /// While open, a non-TCP flow without connection may be one forwarded without entry: new ones are placed
    /// by their stable choice, so such a flow keeps its server when it gets an entry.
    private var untrackedOther = UntrackedPeriod()
    /// From this many connections on, new connections are placed by their stable choice where that may make
    /// their entries rederivable (three quarters of the capacity).
    private let pressureCount: Int
    /// Connections made at a segment other than a SYN since `takeFloodCounts` last read them.
    private var midFlowConnections = 0

    /// IPVS `expire_quiescent_template` (on here by default): a template whose server has weight 0 is
    /// dropped at its next use, so the client is scheduled afresh.
    public var expireQuiescentTemplates = true

    /// The template capacity a tracker of `capacity` connections gets when `init` is not given one.
    public static func defaultTemplateCapacity(for capacity: Int) -> Int { max(capacity / 4, 64) }

    /// `seed` starts the random sequence of `twos` (give each worker its own). `directory` is the template
    /// directory the director's workers share, this worker writing its own partition; without one the
    /// tracker keeps a private one (a single worker).
    ///
    /// `memory`: where the connection and template tables live (`ConnectionTable.byteCount` of `capacity`
    /// and of `templateCapacity` bytes each, 64-byte aligned), e.g. in a file mapping that outlives the
    /// process; with `restoring` the tables found there are resumed (see
    /// `ConnectionTable.init(capacity:timeouts:counters:memory:restoring:)`). nil: the tracker allocates them.
    public init(capacity: Int, templateCapacity: Int? = nil, counters: DestinationCounterStore?,
                timeouts: ConnectionTimeouts = .init(), seed: UInt64 = 0x2545_F491_4F6C_DD1D,
                directory: SharedFlowTableView? = nil,
                memory: (connections: UnsafeMutableRawPointer, templates: UnsafeMutableRawPointer)? = nil,
                restoring: Bool = false) {
        let templateCapacity = templateCapacity ?? Self.defaultTemplateCapacity(for: capacity)
        if let memory {
            connections = ConnectionTable(capacity: capacity, timeouts: timeouts, counters: counters,
                                          memory: memory.connections, restoring: restoring)
            templates = ConnectionTable(capacity: templateCapacity, counters: counters, memory: memory.templates,
                                        restoring: restoring)
        } else {
            connections = ConnectionTable(capacity: capacity, timeouts: timeouts, counters: counters)
            templates = ConnectionTable(capacity: templateCapacity, counters: counters)
        }
        if let directory {
            self.directory = directory
            ownDirectory = nil
        } else {
            let own = SharedFlowTable(partitions: 1, entriesPerPartition: templateCapacity)
            self.directory = own.view(partition: 0)
            ownDirectory = own
        }
        services = UnsafeBufferPointer(start: nil, count: 0)
        destinations = UnsafeBufferPointer(start: nil, count: 0)
        states = .allocate(capacity: 0)
        cellCapacity = counters?.capacity ?? 1 << 16
        precondition(cellCapacity <= Int(SchedulingDestination.noCell), "more counter cells than a cell can name")
        cellIndex = .allocate(capacity: cellCapacity)
        cellIndex.initialize(repeating: Self.noDestination, count: cellCapacity)
        mappedCells = .allocate(capacity: 0)
        self.seed = seed
        turns = counters?.turns
        pressureCount = capacity - capacity / 4
    }

    deinit {
        for index in states.indices { Scheduler.release(&states[index]) }
        states.deallocate()
        cellIndex.deallocate()
        mappedCells.deallocate()
    }

    /// Per-state timeouts for connections, from their next packet on (`ipvsadm --set`).
    public var timeouts: ConnectionTimeouts {
        get { connections.timeouts }
        set { connections.timeouts = newValue }
    }

    /// Connections held (live, or expired and not yet reclaimed).
    public var connectionCount: Int { connections.count }

    /// The configured capacity.
    public var capacity: Int { connections.capacity }

    /// Slots of the connection table: slot numbers are below this (for per-slot side data).
    public var slotCount: Int { connections.slotCount }

    /// When the connection in `slot` expires (seconds, the clock `admit` is given).
    @inline(__always)
    public func expiry(at slot: Int) -> UInt32 { connections.expiry(at: slot) }

    /// The live connection of `key` and its destination, without changing it (ICMP errors look up the
    /// connection they are about).
    @inline(__always)
    public func find(_ key: FlowKey, now: UInt32) -> (slot: Int, destination: Int)? {
        guard let slot = connections.find(key, now: now),
              let destination = resolve(cell: connections.cell(at: slot), index: connections.destination(at: slot))
        else { return nil }
        return (slot, destination)
    }

    /// The current index of the real server holding `cell`, nil when none does (e.g. an ICMP error's
    /// connection found in the `FlowServerIndex` rather than this worker's table).
    @inline(__always)
    public func destination(ofCell cell: UInt32) -> Int? {
        cell == SchedulingDestination.noCell ? nil : resolve(cell: cell, index: 0)
    }

    /// The current index of a connection's server: through its cell when it has one (nil when that server
    /// left the configuration), else the index it was placed with while that is still in range.
    @inlinable @inline(__always)
    func resolve(cell: UInt32, index: UInt32) -> Int? {
        // A cell in range first: `noCell` lies above every capacity, so most entries take one test here.
        if Int(cell) < cellCapacity {
            let current = cellIndex[Int(cell)]
            return current == Self.noDestination ? nil : Int(current)
        }
        if cell == SchedulingDestination.noCell { return Int(index) < destinations.count ? Int(index) : nil }
        return nil
    }

    /// The cache lines a lookup of `hash` reads (`ConnectionTable.lookupLines`), to prefetch a batch's lookups.
    @inline(__always)
    public func lookupLines(hash: UInt32) -> (entries: UnsafeRawPointer, tags: UnsafeRawPointer) {
        connections.lookupLines(hash: hash)
    }

    /// The cell a new entry keeps as its server's identity.
    @inline(__always)
    private func identity(of destination: Int) -> UInt32 {
        let cell = destinations[destination].cell
        return Int(cell) < cellCapacity ? cell : SchedulingDestination.noCell
    }

    /// What the flood defences did since the last call (see the type's notes), then starts again from zero:
    /// rederivable half-open connections evicted for new ones, and connections made at a segment other than
    /// a SYN (a flow without entry given one, or a consistent-hash service's flow met mid-way).
    public mutating func takeFloodCounts() -> (halfOpenEvicted: Int, midFlowConnections: Int) {
        defer { midFlowConnections = 0 }
        return (connections.takeEvictions(), midFlowConnections)
    }

    /// Forgets a connection just admitted whose first packet could not be forwarded after all.
    public mutating func remove(at slot: Int) {
        guard slot >= 0 && slot < connections.slotCount && connections.isOccupied(slot) else { return }
        connections.remove(at: slot)
    }

    // MARK: - Configuration

    /// Switches to a new configuration. A service keeps its scheduler position when it keeps its index,
    /// scheduler and number of servers (as IPVS does on `-a`/`-e`/`-d`); otherwise it starts afresh. Every
    /// connection and template follows its real server (by counter cell) to the server's new index, and those
    /// whose server is gone expire at their next packet (or the sweep reclaims them): only the cell table is
    /// rebuilt, O(servers), whatever the number of connections. Servers outside every service's range
    /// (draining: removed, still holding connections) keep their connections but get no new ones.
    public mutating func adopt(services newServices: UnsafeBufferPointer<ServicePolicy>,
                               destinations newDestinations: UnsafeBufferPointer<SchedulingDestination>) {
        let newStates = UnsafeMutableBufferPointer<SchedulerState>.allocate(capacity: newServices.count)
        for (index, policy) in newServices.enumerated() {
            let list = Self.range(policy, in: newDestinations)
            if index < services.count, services[index].scheduler == policy.scheduler,
               services[index].count == policy.count, services[index].flags == policy.flags {
                var state = states[index]
                Scheduler.destinationsChanged(policy.scheduler, state: &state, destinations: list)
                newStates.initializeElement(at: index, to: state)
                states[index].storage = nil  // moved
            } else {
                let seed = self.seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15
                newStates.initializeElement(at: index, to: Scheduler.makeState(
                    policy.scheduler, destinations: list, flags: policy.flags, seed: seed))
            }
        }
        for index in states.indices { Scheduler.release(&states[index]) }
        states.deallocate()
        states = newStates
        for (index, policy) in newServices.enumerated() {
            newStates[index].period = Self.period(policy.scheduler, Self.range(policy, in: newDestinations))
        }
        services = newServices
        destinations = newDestinations

        for cell in mappedCells { cellIndex[Int(cell)] = Self.noDestination }
        mappedCells.deallocate()
        mappedCells = .allocate(capacity: newDestinations.count)
        var mapped = 0
        for (index, destination) in newDestinations.enumerated() where Int(destination.cell) < cellCapacity {
            cellIndex[Int(destination.cell)] = UInt32(index)
            mappedCells[mapped] = destination.cell
            mapped += 1
        }
        mappedCells = UnsafeMutableBufferPointer(rebasing: mappedCells[0..<mapped])
    }

    @inline(__always)
    private static func range(_ policy: ServicePolicy, in all: UnsafeBufferPointer<SchedulingDestination>)
        -> UnsafeBufferPointer<SchedulingDestination> {
        let first = min(max(Int(policy.first), 0), all.count)
        let end = min(first + max(Int(policy.count), 0), all.count)
        return UnsafeBufferPointer(rebasing: all[first..<end])
    }

    // MARK: - Per packet

    /// Decides where a packet of `service` (an index into the adopted policies) goes, creating or updating
    /// its connection. `tcpFlags` is the TCP header's flag byte (ignored for other protocols); `now` is in
    /// seconds.
    public mutating func admit(_ key: FlowKey, tcpFlags: UInt8, service: Int, now: UInt32) -> Admission {
        admit(key, hash: key.flowHash, tcpFlags: tcpFlags, service: service, now: now)
    }

    /// The fast path of `admit`, for most packets: the live connection of a packet that changes nothing but
    /// its timer (a datagram, or an ESTABLISHED segment with ACK and without SYN, FIN or RST) in a service
    /// without persistence, whose real server is still configured. Returns its slot, the server's index and
    /// counter cell (the entry's: `noCell`, above every cell, where it has none), the timer restarted; nil
    /// when the packet needs `admit` (called with the same hash), having changed nothing. `hash` is
    /// `key.flowHash`.
    @_transparent
    public mutating func admitSteady(_ key: FlowKey, hash: UInt32, tcpFlags: UInt8, service: Int, now: UInt32)
        -> (slot: Int, destination: Int, cell: UInt32, expires: UInt32)? {
        // A TCP segment other than a plain ACK (a SYN above all) is never steady: it goes straight to `admit`
        // (`touchSteady` tests the same, which the optimizer then folds away).
        guard key.proto != IPProtocolNumber.tcp || TCPStateMachine.isPlainACK(tcpFlags),
              service < services.count && services[service].persistenceTimeout == 0 else { return nil }
        let slot = connections.touchSteady(key, hash: hash, tcpFlags: tcpFlags, now: now)
        guard slot >= 0 else { return nil }
        let entry = connections.entries + slot
        let cell = entry.pointee.cell
        guard let destination = resolve(cell: cell, index: entry.pointee.destination) else {
            // Its server left: `admit` expires it (the timer just restarted does not matter, it is removed).
            return nil
        }
        return (slot, destination, cell, entry.pointee.expires)
    }

    /// `admit` with the packet's flow hash (`key.flowHash`) already computed: the lookup and, for a new
    /// connection, the insertion use it.
    public mutating func admit(_ key: FlowKey, hash: UInt32, tcpFlags: UInt8, service: Int, now: UInt32) -> Admission {
        guard service >= 0 && service < services.count else { return .drop(.noDestination) }
        let policy = services[service]
        let isTCP = key.proto == IPProtocolNumber.tcp
        // As IPVS: only a SYN (without ACK, FIN or RST) opens a TCP connection.
        let opens = !isTCP || tcpFlags & 0x17 == 0x02

        if let slot = connections.find(key, hash: hash, now: now) {
            let resolved = resolve(cell: connections.cell(at: slot), index: connections.destination(at: slot))
            if resolved == nil {
                // expire_nodest_conn: the server is gone; a SYN (or datagram) is scheduled afresh below.
                connections.remove(at: slot)
                if !opens { return .drop(.destinationRemoved) }
            } else if isTCP && opens && Self.mayReuse(connections.state(at: slot)) {
                // A new connection on a port in TIME_WAIT or FIN_WAIT: expire the old one and schedule.
                connections.remove(at: slot)
            } else {
                connections.update(at: slot, tcpFlags: tcpFlags, now: now)
                // The template needs the timeout from this second on: once per second per connection is enough.
                if policy.persistenceTimeout != 0 && connections.noteClientPacket(at: slot, now: now) {
                    touchTemplate(key, policy, now: now)
                }
                return .existing(destination: resolved!, slot: slot)
            }
        }

        // Behind ECMP a flow may reach this director mid-way (another director left, or routes moved): a
        // consistent-hash service schedules such a segment as its SYN was scheduled, on every director alike,
        // and tracks it from here (IPVS `sloppy_tcp`); other schedulers keep IPVS's rule, except for flows that
        // may have been forwarded without entry (the type's notes). A RST opens nothing.
        let mayBeUntracked = isTCP && !opens && untrackedTCP.isOpen(now: now)
        let midFlow = isTCP && !opens && tcpFlags & TCPStateMachine.rst == 0
            && (policy.scheduler.isConsistentHash || mayBeUntracked)
        guard opens || midFlow else {
            if mayBeUntracked, let destination = stableChoice(key, hash: hash, policy, service: service, now: now) {
                return .overflow(destination: destination)
            }
            return .drop(.noConnection)
        }
        // Where the entry may be dropped and made again by the next packet: see the type's notes.
        let disposable = !policy.seesReplies && policy.persistenceTimeout == 0
        let byStableChoice = midFlow || (!isTCP && untrackedOther.isOpen(now: now))
            || (disposable && connections.count >= pressureCount)
        let chosen: Int
        if byStableChoice {
            guard let destination = stableChoice(key, hash: hash, policy, service: service, now: now) else {
                return .drop(.noDestination)
            }
            chosen = destination
        } else if policy.persistenceTimeout != 0 {
            guard let destination = persistentChoice(key, policy, service: service, now: now) else {
                return .drop(.noDestination)
            }
            chosen = destination
        } else {
            guard let local = schedule(policy, service: service, flow: key, now: now) else { return .drop(.noDestination) }
            chosen = Int(policy.first) + local
        }
        if policy.onePacket && key.proto == IPProtocolNumber.udp { return .new(destination: chosen, slot: nil) }
        let rederivable = byStableChoice && disposable && isTCP
        if let slot = connections.insert(
            key, hash: hash, service: UInt32(service), destination: UInt32(chosen), tcpFlags: tcpFlags, now: now,
            seesReplies: policy.seesReplies, cell: identity(of: chosen), rederivable: rederivable) {
            if midFlow { midFlowConnections += 1 }
            // Its entry may go before its next segment (evicted, or the short half-open timeout).
            if rederivable && connections.state(at: slot).isHalfOpen {
                untrackedTCP.extend(through: now &+ connections.timeouts.tcpSynReceived)
            }
            return .new(destination: chosen, slot: slot)
        }
        // No room: forward without state, by the choice every later packet of the flow repeats, for as long
        // as the flow may live idle.
        if isTCP {
            untrackedTCP.extend(through: now &+ connections.timeouts.longestTCP)
        } else {
            untrackedOther.extend(through: now &+ connections.timeouts.udp)
        }
        if byStableChoice { return .overflow(destination: chosen) }
        return .overflow(destination: stableChoice(key, hash: hash, policy, service: service, now: now) ?? chosen)
    }

    /// The service's scheduler's choice for a new connection, as an index into its range.
    ///
    /// rr and wrr follow the weights over the whole director, not per worker: the workers share a count of
    /// the service's new connections (`DestinationCounterStore.turns`, one relaxed atomic add per new
    /// connection, no lock), and a worker taking the director's n-th connection first advances its own
    /// state past the selections other workers made since its last one (at most one cycle of the sequence),
    /// so the n-th connection gets the n-th choice of the one sequence every worker computes alike. A state
    /// made afresh starts the sequence at 0; adopted states keep their place. Quiesced or overloaded servers
    /// changing between adopts shift the cycle, which the next adopt measures again.
    @inline(__always)
    private mutating func schedule(_ policy: ServicePolicy, service: Int, flow: FlowKey, now: UInt32) -> Int? {
        let list = Self.range(policy, in: destinations)
        if policy.scheduler == .rr || policy.scheduler == .wrr, let turns, service < DestinationCounterStore.turnCapacity {
            let turn = turns[service].wrappingAdd(1, ordering: .relaxed).oldValue
            let period = states[service].period
            var behind = UInt32(truncatingIfNeeded: turn) &- states[service].sequence
            if behind > UInt32(Int32.max) { behind = 0 }  // the count restarted behind this state
            // Usually behind by less than a cycle (0 for a single worker): no division then.
            if behind >= period && period > 0 { behind %= period }
            for _ in 0..<behind {
                _ = Scheduler.select(policy.scheduler, state: &states[service], destinations: list, flow: flow, now: now)
            }
            states[service].sequence = UInt32(truncatingIfNeeded: turn) &+ 1
        }
        return Scheduler.select(policy.scheduler, state: &states[service], destinations: list, flow: flow, now: now)
    }

    /// One cycle of the rr or wrr sequence over `list`: rr takes each eligible server once, wrr each usable
    /// server `weight / gcd` times; 0 for other schedulers, or when nothing is eligible.
    static func period(_ kind: SchedulerKind, _ list: UnsafeBufferPointer<SchedulingDestination>) -> UInt32 {
        switch kind {
        case .rr:
            return UInt32(list.reduce(0) { $0 + ($1.acceptsNewConnections ? 1 : 0) })
        case .wrr:
            let (step, _) = WeightedRoundRobin.weightParameters(list)
            let cycle = list.reduce(UInt64(0)) { $0 + ($1.isUsable && $1.weight > 0 ? UInt64($1.weight / max(step, 1)) : 0) }
            return UInt32(clamping: cycle)
        default:
            return 0
        }
    }

    /// Applies a reply (real server to client through the director: NAT, FULLNAT) to the connection in `slot`.
    public mutating func observeReply(slot: Int, tcpFlags: UInt8, now: UInt32) {
        guard slot >= 0 && slot < connections.slotCount && connections.isOccupied(slot) else { return }
        connections.update(at: slot, tcpFlags: tcpFlags, direction: .output, now: now)
    }

    /// Reclaims expired connections and templates (uncounting them), examining up to `limit` slots of each
    /// table. Call between batches.
    /// Entries whose server left the configuration are reclaimed too, so they stop counting.
    public mutating func sweep(now: UInt32, limit: Int) {
        let cells = UnsafePointer(cellIndex), capacity = cellCapacity
        let orphaned = { (cell: UInt32) -> Bool in
            cell != SchedulingDestination.noCell && Int(cell) < capacity && cells[Int(cell)] == Self.noDestination
        }
        connections.sweep(now: now, limit: limit, orphaned: orphaned)
        templates.sweep(now: now, limit: limit, orphaned: orphaned)
    }

    /// TIME_WAIT (IPVS `conn_reuse_mode` 1) and FIN_WAIT (mode 2, a director that sees only the client).
    @inline(__always)
    private static func mayReuse(_ state: ConnectionState) -> Bool {
        state == .timeWait || state == .finWait
    }

    /// The template key: the client's address under the netmask, port 0, and the service's address and port.
    @inline(__always)
    private static func templateKey(_ key: FlowKey, _ policy: ServicePolicy) -> FlowKey {
        var template = key
        template.srcHi &= policy.netmaskHi
        template.srcLo &= policy.netmaskLo
        template.srcPort = 0
        return template
    }

    /// The client's server for a persistent service: the oldest live template of this client on any worker
    /// whose server is still there (and, with `expireQuiescentTemplates`, not quiesced), else a new choice.
    /// Agreeing on the oldest makes workers that chose at the same moment converge on one server.
    private mutating func persistentChoice(_ key: FlowKey, _ policy: ServicePolicy, service: Int, now: UInt32) -> Int? {
        let templateKey = Self.templateKey(key, policy)
        var agreed: (destination: Int, origin: TemplateOrigin)? = nil
        directory.forEachLive(templateKey, now: now) { _, record in
            let origin = TemplateOrigin(record)
            guard let destination = destinationIndex(of: origin, policy),
                  !expireQuiescentTemplates || destinations[destination].weight > 0 else { return }
            if agreed == nil || origin.isOlder(than: agreed!.origin) { agreed = (destination, origin) }
        }
        let chosen: Int
        let origin: TemplateOrigin
        if let agreed {
            (chosen, origin) = agreed
        } else {
            guard let local = schedule(policy, service: service, flow: key, now: now) else { return nil }
            chosen = Int(policy.first) + local
            origin = TemplateOrigin(created: now, partition: directory.own, destination: chosen,
                                    endpointHash: destinations[chosen].endpointHash)
        }
        // This worker's own template for the client: counted, listed, and published to the others.
        if let slot = templates.find(templateKey, now: now),
           resolve(cell: templates.cell(at: slot), index: templates.destination(at: slot)) != chosen {
            templates.remove(at: slot)
        }
        if let slot = templates.find(templateKey, now: now) {
            extend(slot, now &+ policy.persistenceTimeout)
        } else {
            _ = templates.insert(templateKey, service: UInt32(service), destination: UInt32(chosen), tcpFlags: 0,
                                 now: now, cell: identity(of: chosen), template: true,
                                 templateTimeout: policy.persistenceTimeout)
        }
        _ = directory.insert(templateKey, origin.record, expires: now &+ policy.persistenceTimeout, now: now)
        return chosen
    }

    /// A packet of a persistent connection keeps its template alive for the timeout after it, here and in
    /// the directory.
    @inline(__always)
    private mutating func touchTemplate(_ key: FlowKey, _ policy: ServicePolicy, now: UInt32) {
        let templateKey = Self.templateKey(key, policy)
        guard let slot = templates.find(templateKey, now: now) else { return }
        extend(slot, now &+ policy.persistenceTimeout)
        var partition = 0
        if let record = directory.lookup(templateKey, now: now, partition: &partition) {
            _ = directory.insert(templateKey, record, expires: now &+ policy.persistenceTimeout, now: now)
        }
    }

    @inline(__always)
    private mutating func extend(_ slot: Int, _ expires: UInt32) {
        if Int32(bitPattern: expires &- templates.expiry(at: slot)) > 0 { templates.setExpiry(at: slot, expires) }
    }

    /// The destination a template names, if it is still among the service's: by index when the server there
    /// is the same one (its endpoint hash), else by its endpoint hash.
    @inline(__always)
    private func destinationIndex(of origin: TemplateOrigin, _ policy: ServicePolicy) -> Int? {
        let range = Int(policy.first)..<Int(policy.first + policy.count)
        if range.contains(origin.destination) && destinations[origin.destination].endpointHash == origin.endpointHash {
            return origin.destination
        }
        guard origin.endpointHash != 0 else { return nil }
        return range.first { destinations[$0].endpointHash == origin.endpointHash }
    }

    /// The flow's stable choice: the one every packet of the flow gets while the server set stays, so a flow
    /// may be forwarded without entry, or its entry made again, without moving. A consistent-hash service's
    /// scheduler is already one (and must be kept: a mid-way segment is scheduled by it); others hash.
    private mutating func stableChoice(_ key: FlowKey, hash: UInt32, _ policy: ServicePolicy, service: Int,
                                       now: UInt32) -> Int? {
        if policy.scheduler.isConsistentHash {
            return schedule(policy, service: service, flow: key, now: now).map { Int(policy.first) + $0 }
        }
        return hashedChoice(hash: hash, policy)
    }

    /// A server for a flow, by its hash, weighted; the same for every packet of the flow while the server set
    /// stays the same.
    private func hashedChoice(hash: UInt32, _ policy: ServicePolicy) -> Int? {
        let list = Self.range(policy, in: destinations)
        var total: UInt64 = 0
        for destination in list where destination.acceptsNewConnections { total += UInt64(destination.weight) }
        guard total > 0 else { return nil }
        var point = StableHash.mix(UInt64(hash), key: 0x0F10) % total
        for index in list.indices where list[index].acceptsNewConnections {
            let weight = UInt64(list[index].weight)
            if point < weight { return Int(policy.first) + index }
            point -= weight
        }
        return nil
    }

    // MARK: - Listings and tests

    /// Live connections whose server is configured (draining included), with its current index and service
    /// index, for listings (allocates).
    public func liveConnections(now: UInt32) -> [ConnectionEntry] { resolved(connections, now: now) }

    /// Live persistence templates whose server is configured, as `liveConnections` (allocates).
    public func liveTemplates(now: UInt32) -> [ConnectionEntry] { resolved(templates, now: now) }

    private func resolved(_ table: borrowing ConnectionTable, now: UInt32) -> [ConnectionEntry] {
        var result: [ConnectionEntry] = []
        for var entry in table.liveEntries(now: now) {
            guard let destination = resolve(cell: table.cell(at: entry.slot), index: entry.destination) else { continue }
            entry.destination = UInt32(destination)
            // A draining server lies outside every range: its connections keep the service they were placed in.
            if let service = services.firstIndex(where: { Int($0.first) <= destination && destination < Int($0.first + $0.count) }) {
                entry.service = UInt32(service)
            }
            result.append(entry)
        }
        return result
    }
}

/// A period on the seconds clock during which flows without entry may exist, extended by each event that may
/// leave one; closed until the first.
struct UntrackedPeriod {
    private var end: UInt32 = 0
    private var open = false

    /// Keeps the period open until `time` at least.
    mutating func extend(through time: UInt32) {
        if !open || Int32(bitPattern: time &- end) > 0 { end = time }
        open = true
    }

    /// Whether the period covers `now` (wrap-safe; once past, closed until the next `extend`).
    mutating func isOpen(now: UInt32) -> Bool {
        if open && Int32(bitPattern: end &- now) <= 0 { open = false }
        return open
    }
}

/// What a template publishes in the shared directory: when and by which worker the client was first
/// placed (so every worker prefers the same, oldest, choice), and on which server.
struct TemplateOrigin {
    var created: UInt32
    var partition: Int
    var destination: Int
    var endpointHash: UInt64

    init(created: UInt32, partition: Int, destination: Int, endpointHash: UInt64) {
        self.created = created; self.partition = partition; self.destination = destination
        self.endpointHash = endpointHash
    }

    init(_ record: SharedFlowRecord) {
        created = UInt32(truncatingIfNeeded: record.words[0])
        partition = Int(truncatingIfNeeded: record.words[0] >> 32)
        destination = Int(truncatingIfNeeded: record.words[1])
        endpointHash = record.words[2]
    }

    var record: SharedFlowRecord {
        var words = SIMD8<UInt64>.zero
        words[0] = UInt64(created) | UInt64(UInt32(truncatingIfNeeded: partition)) << 32
        words[1] = UInt64(UInt32(truncatingIfNeeded: destination))
        words[2] = endpointHash
        return SharedFlowRecord(words: words)
    }

    /// Wrap-safe on the seconds clock; ties go to the lower partition.
    func isOlder(than other: TemplateOrigin) -> Bool {
        let age = Int32(bitPattern: created &- other.created)
        return age < 0 || (age == 0 && partition < other.partition)
    }
}
