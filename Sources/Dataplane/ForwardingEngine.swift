import CXDP
import CXDirectorShared
import Packet
import Scheduling

/// What happens to one frame.
public enum FrameVerdict: Equatable, Sendable {
    /// Rewritten in place; send `length` bytes from `offset` bytes off the received frame's start (negative
    /// after encapsulation into the headroom).
    case transmit(offset: Int, length: Int)
    /// Dropped, counted under the reason.
    case drop(WorkerCounter)
    /// A later fragment whose first has not been seen: the caller keeps the frame untouched and offers it
    /// again (`processHeld`) until its first comes or the hold time runs out.
    case hold

    /// Whether the frame goes out.
    @inline(__always)
    public var isTransmit: Bool {
        if case .transmit = self { return true }
        return false
    }
}

/// One connection or persistence template as `ipvsadm -Lc` lists it. A template's client is the client's
/// address under the service's netmask, port 0.
public struct ConnectionRecord: Sendable, Equatable {
    public var proto: UInt8
    public var client: L4Endpoint
    /// The service's address and port.
    public var virtual: L4Endpoint
    /// The real server's address and port.
    public var destination: L4Endpoint
    public var state: ConnectionState
    /// Seconds until it expires.
    public var expiresIn: UInt32
    public var isTemplate: Bool

    public init(proto: UInt8, client: L4Endpoint, virtual: L4Endpoint, destination: L4Endpoint,
                state: ConnectionState, expiresIn: UInt32, isTemplate: Bool) {
        self.proto = proto; self.client = client; self.virtual = virtual; self.destination = destination
        self.state = state; self.expiresIn = expiresIn; self.isTemplate = isTemplate
    }
}

/// Per connection-table slot, what translation needs beyond the table's own entry.
struct ConnectionExtra {
    /// The connection's entry in this worker's partition of the reply index, or -1.
    var replyEntry: Int32 = -1
    /// FULLNAT: index of the local address in the snapshot (-1 when none) and the allocated port.
    var localAddress: Int32 = -1
    var localPort: UInt16 = 0
    /// The connection's expiry as last seen by its worker: a FULLNAT port is held until then.
    var expires: UInt32 = 0
}

/// The per-packet logic of one worker, apart from rings and syscalls so it runs on fixture frames in
/// tests: parse, find or create the connection, schedule, rewrite in place. One per worker, never shared;
/// the shared state is the reply index and template directory, written per partition by their owners, and
/// the flow server index, one relaxed word store per new connection.
public struct ForwardingEngine: ~Copyable {
    private var snapshot: ForwardingSnapshot
    private var view: SnapshotView
    private var tracker: ConnectionTracker
    /// The parses of the current batch (`prepare`), and after them one slot for a frame processed alone.
    private let prepared: UnsafeMutablePointer<ParsedFrame>
    private let preparedStatus: UnsafeMutablePointer<ParseStatus>
    /// Each prepared frame's flow hash (set for an `.ok` frame that is not an ICMP error).
    private let preparedHash: UnsafeMutablePointer<UInt32>
    /// Each prepared frame's service as the XDP program described it (`FrameMetadata`): the program's word
    /// (an index, or `Self.describedReply`), or `Self.notDescribed`.
    private let preparedService: UnsafeMutablePointer<Int32>
    /// Frames prepared from the program's description since the last sweep (then added to the counter).
    private var described: UInt64 = 0
    /// Which prepared frames have their home slot's `extras` line prefetched.
    private var extrasPrefetch: ExtrasPrefetch
    /// The program's word as it is (`XD_META_NO_SERVICE` is -1 as an `Int32`); an index too large for one
    /// reads as another negative number, which names no service, so the packet's service is looked up.
    private static let describedReply = Int32(bitPattern: XD_META_NO_SERVICE)
    private static let notDescribed = Int32.min
    /// The parse of the frame being processed: one of `prepared`.
    private var current: UnsafeMutablePointer<ParsedFrame>
    private var parsed: ParsedFrame {
        unsafeAddress { UnsafePointer(current) }
        unsafeMutableAddress { current }
    }
    /// The most frames `prepare` takes before they are processed: the worker's batch.
    public static let batchCapacity = 64
    private let counters: CounterWriter
    /// Keeps the block `counters` writes into alive as long as the engine (the writer holds a raw pointer).
    private let counterBlock: WorkerCounterBlock
    private let replyIndex: ReplyIndex
    /// Keeps the shared persistence-template directory alive while the tracker holds a view of it.
    private let templateDirectory: SharedFlowTable?
    private let replies: ReplyIndexView
    /// Keeps the shared flow server index alive while `servers` points into it.
    private let serverIndex: FlowServerIndex
    /// Every new DR, TUN or NAT connection's real server, for ICMP errors that arrive on another queue.
    private let servers: FlowServerIndexView
    private var ports: LocalPortAllocator
    private let extras: UnsafeMutableBufferPointer<ConnectionExtra>
    /// The state file partition the tables, `extras` and `ports` live in (nil: allocated); holds the file.
    private let state: WorkerStateMemory?
    /// This worker's partition: its row of the snapshot's traffic store.
    private let worker: Int
    private var traffic: DestinationTrafficWriter
    /// Set when the frame to transmit is an ICMP error back to its sender rather than the frame forwarded.
    private var answeredSender = false
    /// The server `decide` just sent the packet to without an entry (a one-packet UDP service, a full
    /// table), for a first fragment's record; -1 otherwise. Set on those paths only: `firstFragment` clears it.
    private var untrackedDestination = -1
    /// Keeps the shared fragment table alive while `fragments` points into it.
    private let fragmentTable: FragmentTable
    private let fragments: FragmentTableView

    /// `replies`, `templates`, `servers` and `fragments` are shared by all workers of the director, `worker`
    /// being this one's partition; without them the engine makes private ones (a single worker, as in tests).
    ///
    /// `state`: the memory of this worker's partition of a `ConnectionStateFile`
    /// (`ConnectionStateFile.partition(_:)`). The engine then keeps its connection and template tables,
    /// per-connection translation data and FULLNAT ports there, resuming whatever an earlier engine over
    /// the same partition left (in this process or an earlier one), and uses the file's reply index,
    /// template directory and flow server index (`replies`, `templates`, `servers` and `worker` are then
    /// ignored; the partition names the worker). `connectionCapacity` must be the file's connections per
    /// worker and `snapshot.counters` the file's counter store, whose cells the restored entries are counted
    /// in. Local addresses beyond the file's `Layout.localAddresses` get no FULLNAT ports. Without `state`
    /// the engine allocates everything (nothing outlives it).
    public init(snapshot: ForwardingSnapshot, connectionCapacity: Int, counters: WorkerCounterBlock,
                replies: ReplyIndex? = nil, templates: SharedFlowTable? = nil, servers: FlowServerIndex? = nil,
                fragments: FragmentTable? = nil,
                worker: Int = 0, state: WorkerStateMemory? = nil) {
        if let state {
            precondition(connectionCapacity == state.connectionCapacity,
                         "the connection capacity differs from the state file's")
            precondition(snapshot.counters === state.file.counters,
                         "a restored engine counts in the state file's counter store")
        }
        let worker = state?.worker ?? worker
        let templates = state?.file.templates ?? templates
        prepared = .allocate(capacity: Self.batchCapacity + 1)
        prepared.initialize(repeating: ParsedFrame(), count: Self.batchCapacity + 1)
        preparedStatus = .allocate(capacity: Self.batchCapacity + 1)
        preparedStatus.initialize(repeating: .truncated, count: Self.batchCapacity + 1)
        preparedHash = .allocate(capacity: Self.batchCapacity + 1)
        preparedHash.initialize(repeating: 0, count: Self.batchCapacity + 1)
        preparedService = .allocate(capacity: Self.batchCapacity + 1)
        preparedService.initialize(repeating: Self.notDescribed, count: Self.batchCapacity + 1)
        current = prepared
        self.snapshot = snapshot
        view = snapshot.view
        extrasPrefetch = ExtrasPrefetch(snapshot.view)
        templateDirectory = templates
        tracker = ConnectionTracker(capacity: connectionCapacity, templateCapacity: state?.templateCapacity,
                                    counters: snapshot.counters, timeouts: snapshot.timeouts,
                                    seed: UInt64(UInt(bitPattern: ObjectIdentifier(counters).hashValue)) | 1,
                                    directory: templates?.view(partition: worker),
                                    memory: state.map { ($0.connections, $0.templates) }, restoring: state != nil)
        tracker.adopt(services: snapshot.view.policies, destinations: snapshot.view.destinations)
        self.counters = counters.writer
        counterBlock = counters
        let index = state?.file.replies ?? replies ?? ReplyIndex(partitions: 1, entriesPerPartition: connectionCapacity)
        replyIndex = index
        self.replies = index.view(partition: worker)
        serverIndex = state?.file.servers ?? servers ?? FlowServerIndex(entries: connectionCapacity * 4)
        self.servers = serverIndex.view
        self.worker = worker
        self.state = state
        fragmentTable = fragments ?? FragmentTable(partitions: 1)
        self.fragments = fragmentTable.view(partition: worker)
        traffic = Self.trafficWriter(snapshot.traffic, worker: worker)
        if let state {
            // The file was initialised when it was made: ports and per-slot data are resumed as found.
            ports = LocalPortAllocator(worker: self.replies.own, workers: index.partitions,
                                       addressCount: state.localAddressCapacity, memory: state.ports, restoring: true)
            extras = UnsafeMutableBufferPointer(
                start: state.extras.bindMemory(to: ConnectionExtra.self, capacity: tracker.slotCount),
                count: tracker.slotCount)
            // Ports and slots name local addresses by index: follow them to this snapshot's indices.
            let recorded = state.recordedLocalAddresses()
            let current = snapshot.view.localAddresses
            if !recorded.elementsEqual(current.prefix(state.localAddressCapacity)) {
                recorded.withUnsafeBufferPointer { remapLocalAddresses(from: $0, to: current) }
            }
        } else {
            ports = LocalPortAllocator(worker: self.replies.own, workers: index.partitions,
                                       addressCount: snapshot.view.localAddresses.count)
            extras = .allocate(capacity: tracker.slotCount)
            extras.initialize(repeating: ConnectionExtra())
        }
    }

    private static func trafficWriter(_ store: DestinationTrafficStore?, worker: Int) -> DestinationTrafficWriter {
        guard let store, worker >= 0 && worker < store.workers else { return .none }
        return store.writer(worker: worker)
    }

    deinit {
        if state == nil { extras.deallocate() }
        prepared.deallocate()
        preparedStatus.deallocate()
        preparedHash.deallocate()
        preparedService.deallocate()
    }

    /// Switches to a new configuration: connections follow their real servers (by counter cell) wherever
    /// they now are, draining servers included; those whose server is gone expire at their next packet (see
    /// `ConnectionTracker.adopt`, which walks no table); FULLNAT ports keep their local addresses.
    public mutating func adopt(_ next: ForwardingSnapshot) {
        tracker.adopt(services: next.view.policies, destinations: next.view.destinations)
        if tracker.timeouts != next.timeouts { tracker.timeouts = next.timeouts }
        let old = view.localAddresses, new = next.view.localAddresses
        // Most changes (weights, servers) leave the local addresses alone: then ports and slots stay as they are.
        if !old.elementsEqual(new) { remapLocalAddresses(from: old, to: new) }
        snapshot = next
        view = next.view
        extrasPrefetch = ExtrasPrefetch(next.view)
        traffic = Self.trafficWriter(next.traffic, worker: worker)
    }

    /// Carries the FULLNAT ports over to the new local-address indices (a walk of the table: only when the
    /// local addresses changed). Over a state file the ports move within the file and the new list is
    /// recorded there, so a restarted engine can follow the indices again.
    private mutating func remapLocalAddresses(from old: UnsafeBufferPointer<IPAddress>, to new: UnsafeBufferPointer<IPAddress>) {
        let mapping = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(new.count, 1))
        for (index, address) in new.enumerated() { mapping[index] = Int32(old.firstIndex(of: address) ?? -1) }
        let known = UnsafeMutableBufferPointer(rebasing: mapping[0..<new.count])
        if let state {
            ports.remap(mapping: UnsafeBufferPointer(known))
            state.recordLocalAddresses(new)
        } else {
            var allocator = LocalPortAllocator(worker: replies.own, workers: replyIndex.partitions, addressCount: new.count)
            allocator.adopt(from: ports, mapping: UnsafeBufferPointer(known))
            ports = allocator
        }
        for slot in 0..<extras.count where extras[slot].localAddress >= 0 {
            let previous = Int(extras[slot].localAddress)
            let moved = known.firstIndex(of: Int32(previous)).map { Int32($0) } ?? -1
            extras[slot].localAddress = moved < Int32(ports.addressCount) ? moved : -1
        }
        mapping.deallocate()
    }

    /// Reclaims expired connections, examining at most `limit` slots; call between batches.
    public mutating func sweep(now: UInt32, limit: Int) {
        tracker.sweep(now: now, limit: limit)
        let flood = tracker.takeFloodCounts()
        if flood.halfOpenEvicted > 0 { counters.add(.halfOpenEvicted, UInt64(flood.halfOpenEvicted)) }
        if flood.midFlowConnections > 0 { counters.add(.midFlowConnections, UInt64(flood.midFlowConnections)) }
        if described > 0 {
            counters.add(.framesDescribed, described)
            described = 0
        }
    }

    /// Connections held in the table (live, or expired and not yet reclaimed).
    public var connectionCount: Int { tracker.connectionCount }

    /// This worker's live connections and persistence templates whose real server is configured (draining
    /// included), for `ipvsadm -Lc`. Allocates: call it between batches.
    public func listConnections(now: UInt32) -> [ConnectionRecord] {
        var records: [ConnectionRecord] = []
        for (entries, isTemplate) in [(tracker.liveConnections(now: now), false), (tracker.liveTemplates(now: now), true)] {
            for entry in entries where Int(entry.destination) < view.routes.count {
                let route = view.routes[Int(entry.destination)]
                let key = entry.key
                records.append(ConnectionRecord(
                    proto: key.proto, client: L4Endpoint(address: key.source, port: key.srcPort),
                    virtual: L4Endpoint(address: key.destination, port: key.dstPort),
                    destination: L4Endpoint(address: route.address, port: route.port), state: entry.state,
                    expiresIn: entry.remaining(now: now), isTemplate: isTemplate))
            }
        }
        return records
    }

    /// Decides and applies the fate of one frame of `length` bytes at `frame`, which has `headroom` bytes
    /// of its buffer before it. `now` is in seconds. (`prepare` then `process(prepared:...)`, for one frame.)
    @inline(__always)
    public mutating func process(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int = 0,
                                 now: UInt32) -> FrameVerdict {
        prepare(frame, length: length, headroom: headroom, index: Self.batchCapacity)
        return process(prepared: Self.batchCapacity, frame, length: length, headroom: headroom, now: now)
    }

    /// The first half of a frame's processing, done for a whole batch before any of its frames is processed
    /// (`process(prepared:...)`): parses the frame of `length` bytes at `frame` (`headroom` bytes into its
    /// buffer) into batch slot `index` (below `batchCapacity`), computes its one flow hash and asks the CPU
    /// for the connection-table lines its lookup will read. With many connections the lines are in no cache,
    /// and the batch's lookups then wait for memory together rather than one after another (as VPP and DPDK
    /// prefetch across a vector).
    @inline(__always)
    public mutating func prepare(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int, index: Int) {
        // A frame the XDP program described was checked there as `parse` would: only its fields are loaded.
        // Each family apart, so IPv4's hash mixes its high address halves as the zeros they are.
        if headroom >= FrameMetadata.size, let meta = FrameMetadata.take(frame, length: length),
           meta.family == XD_FAMILY_IPV4
               ? prepare(described: meta, frame, length: length, index: index, isIPv4: true)
               : prepare(described: meta, frame, length: length, index: index, isIPv4: false) {
            return
        }
        // The IPv4 header checksum is checked only where it must be: where this packet creates state (a new
        // connection, in `process`) and in ICMP errors (whose own checksum is verified). Every other rewrite
        // updates the checksum incrementally (RFC 1624), which keeps a wrong one wrong, so the receiver still
        // drops a corrupt header as it would have without the director. (The program does not check it either.)
        let status = FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &prepared[index],
                                       verifyingIPv4Checksum: false)
        preparedStatus[index] = status
        preparedService[index] = Self.notDescribed
        if status == .ok && !prepared[index].isICMPError { hashAndPrefetch(index) }
    }

    /// `prepare` of a frame `meta` describes, of the family `isIPv4` says (a constant where it is inlined);
    /// false, having prepared nothing, where the description does not fit the frame.
    @inline(__always)
    private mutating func prepare(described meta: xd_frame_meta, _ frame: UnsafeMutableRawPointer, length: Int,
                                  index: Int, isIPv4: Bool) -> Bool {
        guard FrameParser.load(described: frame, length: length, l3: Int(meta.l3), l4: Int(meta.l4),
                               packetLength: Int(meta.packet_length), proto: meta.proto, isIPv4: isIPv4,
                               into: &prepared[index]) else { return false }
        preparedStatus[index] = .ok
        preparedService[index] = Int32(bitPattern: meta.service)
        described &+= 1
        hashAndPrefetch(index)
        return true
    }

    /// `prepare` for batch slots `0..<count`, `frame(index)` giving each slot's frame, length and headroom:
    /// one call per batch, so the loop keeps the engine's tables in registers rather than reloading them per
    /// frame.
    @inline(__always)
    public mutating func prepare(count: Int,
                                 _ frame: (Int) -> (start: UnsafeMutableRawPointer, length: Int, headroom: Int)) {
        for index in 0..<count {
            let (start, length, headroom) = frame(index)
            prepare(start, length: length, headroom: headroom, index: index)
        }
    }

    /// The one flow hash of the frame in batch slot `index`, and the prefetch of the connection-table lines
    /// its lookup reads: in a large table the home entry alone left the lookups of flows displaced by probing
    /// (a quarter of them in a half-full table) waiting on memory one after another.
    @inline(__always)
    private mutating func hashAndPrefetch(_ index: Int) {
        let hash = prepared[index].key.flowHash
        preparedHash[index] = hash
        let lines = tracker.lookupLines(hash: hash)
        // The adjacent entry lines `find` checks first, one access to memory where the tags' line would be a
        // second: they hold nearly every established flow.
        for offset in 0..<ConnectionTable.directSlots {
            cxdp_prefetch(lines.entries + offset &* ConnectionTable.entryStride)
        }
        // The home slot's `extras`, a line in no cache in a large table, for the frames that use it (see
        // `ExtrasPrefetch`): one test, whichever the configuration. The same frames read the tags: a SYN's
        // lookup runs to the end of its run, and its insertion reads them.
        if prepared[index].tcpFlags & extrasPrefetch.flagMask == extrasPrefetch.flags {
            cxdp_prefetch(lines.tags)
            cxdp_prefetch(extras.baseAddress! + Int(truncatingIfNeeded: hash) & (extras.count &- 1))
        }
    }

    /// Decides and applies the fate of the frame `prepare` put in batch slot `index`: the same `frame`,
    /// `length`, and `headroom` bytes of its buffer before it. `now` is in seconds.
    ///
    /// It and `decide` are transparent (inlined always): the optimizer ignores `@inline(__always)` where both
    /// the caller and the callee are over 64 blocks, as the worker's batch loop and this path are, and the
    /// call then costs the established packet its register spills, prologue and epilogue.
    @_transparent
    mutating func process(prepared index: Int, _ frame: UnsafeMutableRawPointer, length: Int, headroom: Int = 0,
                                 now: UInt32) -> FrameVerdict {
        answeredSender = false
        current = prepared + index
        let status = preparedStatus[index]
        guard status == .ok else { return unusual(status, prepared: index, frame, length: length, headroom: headroom, now: now) }
        return decide(prepared: index, frame, length: length, headroom: headroom, now: now)
    }

    /// A whole TCP or UDP packet or an ICMP error (`.ok`), or a first fragment: where it goes, rewritten.
    @_transparent
    private mutating func decide(prepared index: Int, _ frame: UnsafeMutableRawPointer, length: Int, headroom: Int,
                                 now: UInt32) -> FrameVerdict {
        if parsed.isICMPError { return icmpError(frame, length: length, headroom: headroom, now: now) }
        let named = Int(preparedService[index])
        let service: Int
        if view.isService(named, of: parsed.key) {
            service = named
        } else {
            if named == Int(Self.describedReply) { return reply(frame, length: length, now: now) }
            // Named, but not this snapshot's: a reload between the program's map and the snapshot, or a map
            // out of step with it (counted, so that shows).
            if named >= 0 { counters.add(.describedServiceMismatches) }
            guard let found = view.service(for: parsed.key) else { return reply(frame, length: length, now: now) }
            service = found
        }
        // The packet's one flow hash: the fast path's lookup and `admit`'s (and its insertion) share it.
        let hash = preparedHash[index]

        // Most packets: an established flow whose packet moves only its timer. No scheduling, no state
        // machine, no new-connection work; DR, NAT and FULLNAT rewritten right here.
        if let (slot, destination, cell, expires) = tracker.admitSteady(parsed.key, hash: hash,
                                                                        tcpFlags: parsed.tcpFlags, service: service,
                                                                        now: now) {
            let verdict: FrameVerdict
            // Whether a transmitted frame is the packet forwarded (not an ICMP error for its sender instead).
            var forwarded = true
            let method = view.resolvedMethods[destination]
            // DR is laid out first (`_fastPath`): the commonest method and the cheapest rewrite, where the
            // dispatch weighs most (6 instructions less a packet; NAT and FULLNAT pay 3 or 4 more).
            if _fastPath(method == .directRouting) {
                verdict = directRouting(frame, length: length, addresses: view.ethernet[destination])
            } else if method == .masquerading {
                verdict = masquerade(frame, length: length, slot: slot, expires: expires, destination: destination)
            } else if method == .fullNAT && extras[slot].localAddress >= 0 {
                verdict = translateBothWays(frame, length: length, slot: slot, expires: expires,
                                            destination: destination)
            } else {
                verdict = forward(frame, length: length, headroom: headroom, service: service, destination: destination,
                                  slot: slot, isNew: false, now: now)
                forwarded = !answeredSender
            }
            // Counted by the entry's cell, its server's (`resolve` found the server through it).
            if verdict.isTransmit && forwarded { traffic.countIn(cell, bytes: length, newConnection: false) }
            return verdict
        }

        let destination: Int
        var slot: Int? = nil
        var isNew = false
        switch tracker.admit(parsed.key, hash: hash, tcpFlags: parsed.tcpFlags, service: service, now: now) {
        case .existing(let chosen, let found):
            destination = chosen
            slot = found
        case .new(let chosen, let placed):
            guard FrameParser.ipv4HeaderIsValid(frame, parsed: parsed) else {
                if let placed { tracker.remove(at: placed) }
                return .drop(.dropBadIPv4Checksum)
            }
            destination = chosen
            slot = placed
            isNew = true
            if placed == nil { untrackedDestination = chosen }
            // Its word in the flow server index (`recordServer`), a line in no cache: fetched while the
            // packet is rewritten. The packet's hash places it: `recordServer` hashes the flow once, for the
            // word's fingerprint.
            cxdp_prefetch(servers.line(flowHash: hash))
            if let placed { extras[placed] = ConnectionExtra() }
        case .overflow(let chosen):
            // Untracked (slot nil): a translated flow republishes its reply entry on every packet. Its later
            // segments come back here (no entry) until `admit` finds room for one.
            destination = chosen
            untrackedDestination = chosen
            counters.add(.connectionTableFull)
        case .drop(.noDestination):
            return .drop(.dropNoDestination)
        case .drop(.noConnection), .drop(.destinationRemoved):
            return .drop(.dropTCPWithoutConnection)
        }
        let verdict: FrameVerdict
        if view.resolvedMethods[destination] == .directRouting {
            // A new DR connection's packet is rewritten as an established one's is, without `forward`'s call.
            verdict = directRouting(frame, length: length, addresses: view.ethernet[destination])
        } else {
            verdict = forward(frame, length: length, headroom: headroom, service: service, destination: destination,
                              slot: slot, isNew: isNew, now: now)
        }
        if case .transmit = verdict {
            if isNew {
                counters.add(.newConnections)
                recordServer(destination)
            }
            if !answeredSender {
                traffic.countIn(view.destinations[destination].cell, bytes: length, newConnection: isNew)
            }
        } else if isNew, let slot {
            tracker.remove(at: slot)
        }
        return verdict
    }

    // MARK: Client to real server

    // Not inlined: the steady path (`decide`) rewrites DR, NAT and FULLNAT itself, and keeping this path's
    // bulk out of `decide` leaves the compiler room to inline those rewrites there.
    @inline(never)
    private mutating func forward(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int, service: Int,
                                  destination: Int, slot: Int?, isNew: Bool, now: UInt32) -> FrameVerdict {
        let mac = view.macs[destination]
        guard mac != 0 else { return .drop(.dropUnresolvedDestination) }
        let route = view.routes[destination]
        switch route.method {
        case .directRouting:
            return directRouting(frame, length: length, addresses: view.ethernet[destination])
        case .tunnel:
            return tunnel(frame, length: length, headroom: headroom, route: route, mac: mac, replyOnTooBig: true)
        case .masquerading, .fullNAT:
            var source: L4Endpoint? = nil
            if route.method == .fullNAT {
                guard let slot else { return .drop(.connectionTableFull) }
                if isNew, let verdict = openFullNAT(slot: slot, service: service, destination: destination, route: route,
                                                    frame: frame, now: now) {
                    return verdict
                }
                let extra = extras[slot]
                guard extra.localAddress >= 0 else { return .drop(.dropLocalPortsExhausted) }
                source = L4Endpoint(address: view.localAddresses[Int(extra.localAddress)], port: extra.localPort)
            } else if isNew || slot == nil {
                let reply = Self.replyKey(of: parsed.key, server: route, to: parsed.key.source, port: parsed.key.srcPort)
                if let verdict = publish(reply, slot: slot, destination: destination, fullNAT: false, frame: frame,
                                         now: now) { return verdict }
            }
            return translate(frame, length: length, slot: slot, destination: destination, source: source)
        }
    }

    /// `translate` for an established NAT connection, specialised for it (a connection slot, no new source).
    /// It, `translateBothWays` and `translate` are transparent for the reason `process(prepared:...)` is: in
    /// the batch loop the established NAT and FULLNAT packets pay no call.
    @_transparent
    private mutating func masquerade(_ frame: UnsafeMutableRawPointer, length: Int, slot: Int, expires: UInt32,
                                     destination: Int) -> FrameVerdict {
        translate(frame, length: length, slot: slot, expires: expires, destination: destination, source: nil)
    }

    /// `translate` for an established FULLNAT connection whose slot holds its local address and port.
    @_transparent
    private mutating func translateBothWays(_ frame: UnsafeMutableRawPointer, length: Int, slot: Int, expires: UInt32,
                                            destination: Int) -> FrameVerdict {
        let extra = extras[slot]
        return translate(frame, length: length, slot: slot, expires: expires, destination: destination,
                         source: L4Endpoint(address: view.localAddresses[Int(extra.localAddress)], port: extra.localPort))
    }

    /// NAT or FULLNAT towards real server `destination` (whose MAC is resolved): the destination becomes the
    /// server, the source `source` (FULLNAT) or stays (NAT); the connection in `slot` keeps its reply entry
    /// as long-lived as itself (`expires`: the connection's expiry, when the caller has it at hand).
    @_transparent
    private mutating func translate(_ frame: UnsafeMutableRawPointer, length: Int, slot: Int?, expires known: UInt32? = nil,
                                    destination: Int, source: L4Endpoint?) -> FrameVerdict {
        if let slot {
            // Expiry is in whole seconds: the reply entry (a seqlocked write other workers read) is
            // refreshed when it moved, about once a second per connection rather than per packet.
            let expires = known ?? tracker.expiry(at: slot)
            if extras[slot].expires != expires {
                extras[slot].expires = expires
                if extras[slot].replyEntry >= 0 { replies.refresh(extras[slot].replyEntry, expires: expires) }
            }
        }
        let server = L4Endpoint(address: view.routes[destination].address, port: view.routes[destination].port)
        let result = AddressTranslation.rewrite(frame, l3Offset: parsed.l3Offset, l4Offset: parsed.l4Offset,
                                                isIPv4: parsed.isIPv4, isTCP: parsed.key.proto == IPProtocolNumber.tcp,
                                                source: source, destination: server,
                                                addresses: view.ethernet[destination])
        return result == .transmit ? .transmit(offset: 0, length: length) : .drop(.dropHopLimitExceeded)
    }

    @inline(__always)
    private func directRouting(_ frame: UnsafeMutableRawPointer, length: Int,
                               addresses: EthernetAddresses) -> FrameVerdict {
        switch DirectRouting.rewrite(frame, l3Offset: parsed.l3Offset, isIPv4: parsed.isIPv4, addresses: addresses) {
        case .transmit: return .transmit(offset: 0, length: length)
        case .hopLimitExceeded: return .drop(.dropHopLimitExceeded)
        }
    }

    /// Encapsulates towards the real server. A packet too big for the MTU once encapsulated, with DF,
    /// becomes the ICMP error for its sender (never in answer to an ICMP error).
    @inline(__always)
    private mutating func tunnel(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int, route: DestinationRoute,
                                 mac: UInt64, replyOnTooBig: Bool) -> FrameVerdict {
        guard let outerSource = view.source(family: route.address.family) else { return .drop(.dropNoSourceAddress) }
        switch Tunnel.encapsulate(frame, length: length, headroom: headroom, parsed: parsed, outerSource: outerSource,
                                  outerDestination: route.address, parameters: route.tunnel,
                                  sourceMAC: view.interfaceMAC, destinationMAC: MACAddress(value: mac), mtu: view.mtu) {
        case .transmit(let start, let newLength):
            return .transmit(offset: start - frame, length: newLength)
        case .tooBig(let mtu):
            guard replyOnTooBig, let source = view.source(family: parsed.key.source.family) else {
                return .drop(.dropFragmentationNeeded)
            }
            let errorLength = ICMPErrorBuilder.packetTooBig(frame, length: length, parsed: parsed, mtu: mtu,
                                                            source: source, sourceMAC: view.interfaceMAC)
            guard errorLength > 0 else { return .drop(.dropFragmentationNeeded) }
            counters.add(.icmpTooBigSent)
            answeredSender = true
            return .transmit(offset: 0, length: errorLength)
        case .fragmentationRequired:
            return .drop(.dropFragmentationNeeded)
        case .hopLimitExceeded:
            return .drop(.dropHopLimitExceeded)
        case .noHeadroom:
            return .drop(.dropNoHeadroom)
        }
    }

    /// Lets every worker find a new connection's real server, for ICMP errors about it that arrive on
    /// another queue. Not FULLNAT: its errors need the local port, which only the owner's slot holds.
    @inline(__always)
    private func recordServer(_ destination: Int) {
        guard view.routes[destination].method != .fullNAT else { return }
        let server = view.destinations[destination]
        servers.record(parsed.key, cell: server.cell, endpointHash: server.endpointHash)
    }

    /// A new FULLNAT connection: a local address and port, and the reply index entry. nil when it may go on.
    @inline(__always)
    private mutating func openFullNAT(slot: Int, service: Int, destination: Int, route: DestinationRoute,
                                      frame: UnsafeMutableRawPointer, now: UInt32) -> FrameVerdict? {
        // A port is held while the connection that took it lives: its slot still records the port and its
        // expiry (mirrored in `extras`) is ahead. The closure is passed straight in, so it allocates nothing.
        guard let (address, port) = ports.allocate(
            addresses: view.localAddresses(of: service, family: route.address.family), for: Int32(slot),
            isHeld: { [extras] owner, address, port in
                let extra = extras[Int(owner)]
                return extra.localAddress == Int32(address) && extra.localPort == port
                    && SharedFlowTableView.isLive(extra.expires, now)
            })
        else { return .drop(.dropLocalPortsExhausted) }
        extras[slot].localAddress = Int32(address)
        extras[slot].localPort = port
        let reply = Self.replyKey(of: parsed.key, server: route, to: view.localAddresses[address], port: port)
        if let verdict = publish(reply, slot: slot, destination: destination, fullNAT: true, frame: frame, now: now) {
            ports.release(address: address, port: port)
            extras[slot].localAddress = -1
            return verdict
        }
        return nil
    }

    /// Makes a new connection's replies findable by every worker. nil when it may go on.
    @inline(__always)
    private mutating func publish(_ reply: FlowKey, slot: Int?, destination: Int, fullNAT: Bool,
                                  frame: UnsafeMutableRawPointer, now: UInt32) -> FrameVerdict? {
        let key = parsed.key
        let value = ReplyTranslation(source: L4Endpoint(address: key.destination, port: key.dstPort),
                                     client: L4Endpoint(address: key.source, port: key.srcPort),
                                     clientMAC: Self.sourceMAC(of: frame), fullNAT: fullNAT,
                                     cell: view.destinations[destination].cell)
        let expires = slot.map { tracker.expiry(at: $0) } ?? now &+ 60
        guard let entry = replies.insert(reply, value, expires: expires, now: now) else {
            return .drop(.dropReplyIndexFull)
        }
        if let slot { extras[slot].replyEntry = entry }
        return nil
    }

    /// The tuple a real server answers with: from RIP:RPORT to the client (NAT) or the local address (FULLNAT).
    @inline(__always)
    static func replyKey(of key: FlowKey, server: DestinationRoute, to address: IPAddress, port: UInt16) -> FlowKey {
        FlowKey(source: server.address, sourcePort: server.port, destination: address, destinationPort: port, proto: key.proto)
    }

    // MARK: Real server to client

    /// A NAT or FULLNAT reply: back to VIP:VPORT as its source (and to the client, for FULLNAT).
    @inline(__always)
    private mutating func reply(_ frame: UnsafeMutableRawPointer, length: Int, now: UInt32) -> FrameVerdict {
        var owner = 0
        guard let translation = replies.lookup(parsed.key, now: now, partition: &owner) else {
            // The program steered it here for a service this snapshot no longer has (deleted in between), or
            // as a reply whose connection is gone.
            return .drop(view.mayBeReply(parsed.key) ? .dropNoReplyState : .dropNoService)
        }
        let result = AddressTranslation.rewrite(frame, parsed: parsed, source: translation.source,
                                                destination: translation.fullNAT ? translation.client : nil,
                                                sourceMAC: view.interfaceMAC,
                                                destinationMAC: MACAddress(value: translation.clientMAC))
        guard result == .transmit else { return .drop(.dropHopLimitExceeded) }
        counters.add(.repliesTranslated)
        if owner != replies.own { counters.add(.repliesOfOtherWorkers) }
        traffic.countOut(translation.cell, bytes: length)
        return .transmit(offset: 0, length: length)
    }

    // MARK: ICMP errors

    /// An ICMP error quoting a packet of one of our connections. Quoting a reply of a service (its source is
    /// VIP:VPORT), it goes to the connection's real server; quoting a packet we sent to a NAT or FULLNAT real
    /// server, it is translated back towards the client, its quoted header with it.
    private mutating func icmpError(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int,
                                    now: UInt32) -> FrameVerdict {
        // As IPVS: a corrupt error is dropped here, before a translation would give it a valid checksum.
        guard ICMPTranslation.checksumIsValid(UnsafeRawPointer(frame), parsed: parsed) else { return .drop(.dropMalformed) }
        guard FrameParser.ipv4HeaderIsValid(frame, parsed: parsed) else { return .drop(.dropBadIPv4Checksum) }
        let quoted = parsed.innerKey
        // The quoted packet, turned around, is the flow as its connection knows it.
        var flow = FlowKey()
        flow.srcHi = quoted.dstHi; flow.srcLo = quoted.dstLo; flow.srcPort = quoted.dstPort
        flow.dstHi = quoted.srcHi; flow.dstLo = quoted.srcLo; flow.dstPort = quoted.srcPort
        flow.proto = quoted.proto; flow.family = quoted.family
        let verdict: FrameVerdict
        if view.service(for: flow) != nil {
            verdict = icmpTowardsServer(frame, length: length, headroom: headroom, flow: flow, now: now)
        } else {
            verdict = icmpTowardsClient(frame, length: length, reply: flow, now: now)
        }
        if verdict.isTransmit { counters.add(.icmpErrorsForwarded) }
        return verdict
    }

    /// The connection is looked up in this worker's table, then, as the error usually arrives on another
    /// queue than its connection, in the shared `FlowServerIndex`.
    private mutating func icmpTowardsServer(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int,
                                            flow: FlowKey, now: UInt32) -> FrameVerdict {
        let slot: Int?, destination: Int
        if let (found, index) = tracker.find(flow, now: now), index < view.destinations.count {
            (slot, destination) = (found, index)
        } else if let index = sharedServer(of: flow) {
            (slot, destination) = (nil, index)
        } else {
            return .drop(.dropICMPWithoutConnection)
        }
        let verdict = icmpTowardsServer(frame, length: length, headroom: headroom, slot: slot, destination: destination)
        if verdict.isTransmit {
            if slot == nil { counters.add(.icmpErrorsOfOtherWorkers) }
            traffic.countIn(view.destinations[destination].cell, bytes: length, newConnection: false)
        }
        return verdict
    }

    /// The current index of the real server the shared index recorded for `flow`, when the cell still names
    /// that server (see `FlowServerIndex`).
    private func sharedServer(of flow: FlowKey) -> Int? {
        guard let server = servers.lookup(flow), let index = tracker.destination(ofCell: server.cell),
              index < view.destinations.count, server.isHeld(byEndpoint: view.destinations[index].endpointHash)
        else { return nil }
        return index
    }

    /// `slot`: the connection in this worker's table, nil when it was found in the shared index.
    private mutating func icmpTowardsServer(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int, slot: Int?,
                                            destination: Int) -> FrameVerdict {
        let mac = view.macs[destination]
        guard mac != 0 else { return .drop(.dropUnresolvedDestination) }
        let route = view.routes[destination]
        let server = L4Endpoint(address: route.address, port: route.port)
        let result: TranslationResult
        switch route.method {
        case .directRouting:
            return directRouting(frame, length: length, addresses: view.ethernet[destination])
        case .tunnel:
            return tunnel(frame, length: length, headroom: headroom, route: route, mac: mac, replyOnTooBig: false)
        case .masquerading:
            result = ICMPTranslation.rewrite(frame, length: length, parsed: parsed, outerSource: nil,
                                             outerDestination: route.address, innerSource: server, innerDestination: nil,
                                             sourceMAC: view.interfaceMAC, destinationMAC: MACAddress(value: mac))
        case .fullNAT:
            guard let slot else { return .drop(.dropICMPWithoutConnection) }
            let extra = extras[slot]
            guard extra.localAddress >= 0 else { return .drop(.dropICMPWithoutConnection) }
            let local = view.localAddresses[Int(extra.localAddress)]
            result = ICMPTranslation.rewrite(frame, length: length, parsed: parsed, outerSource: local,
                                             outerDestination: route.address, innerSource: server,
                                             innerDestination: L4Endpoint(address: local, port: extra.localPort),
                                             sourceMAC: view.interfaceMAC, destinationMAC: MACAddress(value: mac))
        }
        return result == .transmit ? .transmit(offset: 0, length: length) : .drop(.dropHopLimitExceeded)
    }

    private mutating func icmpTowardsClient(_ frame: UnsafeMutableRawPointer, length: Int, reply: FlowKey,
                                            now: UInt32) -> FrameVerdict {
        var owner = 0
        guard let translation = replies.lookup(reply, now: now, partition: &owner) else {
            return .drop(.dropICMPWithoutConnection)
        }
        let service = translation.source, client = translation.client
        let result = ICMPTranslation.rewrite(
            frame, length: length, parsed: parsed, outerSource: service.address,
            outerDestination: translation.fullNAT ? client.address : nil,
            innerSource: translation.fullNAT ? client : nil, innerDestination: service,
            sourceMAC: view.interfaceMAC, destinationMAC: MACAddress(value: translation.clientMAC))
        guard result == .transmit else { return .drop(.dropHopLimitExceeded) }
        traffic.countOut(translation.cell, bytes: length)
        return .transmit(offset: 0, length: length)
    }

    // MARK: Fragments

    // A datagram's fragments are forwarded as they come, never reassembled (as IPVS forwards them after the
    // kernel's defragmentation would, but without holding the whole datagram): the first fragment has the
    // ports and is scheduled as a whole packet; how it went is recorded in the shared fragment table under
    // (source, destination, protocol, identification); later fragments, on any worker, follow the record.
    // One that comes before its first is held by the ring loop (`.hold`) and offered again each turn.

    /// A frame that is not a whole packet: a fragment, or a drop for the parser's reason.
    @inline(never)
    private mutating func unusual(_ status: ParseStatus, prepared index: Int, _ frame: UnsafeMutableRawPointer,
                                  length: Int, headroom: Int, now: UInt32) -> FrameVerdict {
        switch status {
        case .firstFragment: return firstFragment(prepared: index, frame, length: length, headroom: headroom, now: now)
        case .fragment: return laterFragment(frame, length: length, headroom: headroom, now: now) ?? .hold
        default: return .drop(Self.dropReason(for: status))
        }
    }

    /// Offers again a frame this engine answered `.hold` for, untouched since: forwarded once its first
    /// fragment is known, `.hold` while it is not, dropped (`dropFragmentWithoutFirst`) when `final` (the
    /// hold time is up).
    public mutating func processHeld(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int = 0, now: UInt32,
                                     final: Bool) -> FrameVerdict {
        prepare(frame, length: length, headroom: headroom, index: Self.batchCapacity)
        answeredSender = false
        current = prepared + Self.batchCapacity
        let status = preparedStatus[Self.batchCapacity]
        guard status == .fragment else { return .drop(Self.dropReason(for: status)) }
        if let verdict = laterFragment(frame, length: length, headroom: headroom, now: now) { return verdict }
        return final ? .drop(.dropFragmentWithoutFirst) : .hold
    }

    /// The first fragment: scheduled by its ports as a whole packet (the connection found or made), then
    /// recorded for its datagram's later fragments: how it was rewritten, or that it was dropped.
    private mutating func firstFragment(prepared index: Int, _ frame: UnsafeMutableRawPointer, length: Int,
                                        headroom: Int, now: UInt32) -> FrameVerdict {
        // It makes state (the record, perhaps a connection): its IPv4 header must be sound.
        guard FrameParser.ipv4HeaderIsValid(frame, parsed: parsed) else { return .drop(.dropBadIPv4Checksum) }
        let key = FragmentTableView.key(of: parsed)
        preparedHash[index] = parsed.key.flowHash  // `prepare` hashes whole packets only
        untrackedDestination = -1
        let verdict = decide(prepared: index, frame, length: length, headroom: headroom, now: now)
        // An ICMP error sent instead (too big for the tunnel) loses the datagram, as a drop does.
        let sent = verdict.isTransmit && !answeredSender
        let rewrite = (sent ? rewriteOfFirst(now: now) : nil) ?? FragmentRewrite(kind: .drop)
        if !fragments.insert(key, rewrite, now: now) && sent { counters.add(.fragmentTableFull) }
        return verdict
    }

    /// How `decide` has just forwarded the first fragment in `parsed`, read back from its connection (or the
    /// server it went to without one) or the reply index, so the whole packet's path stays as it is; nil when
    /// that cannot be known (FULLNAT without a connection holds no local port).
    private func rewriteOfFirst(now: UInt32) -> FragmentRewrite? {
        let key = parsed.key
        guard view.service(for: key) != nil else {
            var owner = 0
            guard let translation = replies.lookup(key, now: now, partition: &owner) else { return nil }
            return FragmentRewrite(kind: .translation, source: translation.source.address,
                                   destination: translation.fullNAT ? translation.client.address : nil,
                                   mac: translation.clientMAC, cell: translation.cell, isReply: true)
        }
        let slot: Int?, destination: Int
        if let (found, index) = tracker.find(key, now: now) {
            (slot, destination) = (found, index)
        } else if untrackedDestination >= 0 {
            (slot, destination) = (nil, untrackedDestination)
        } else {
            return nil
        }
        let route = view.routes[destination]
        var rewrite = FragmentRewrite(kind: .directRouting, mac: view.macs[destination], sourcePort: key.srcPort,
                                      destinationPort: key.dstPort, cell: view.destinations[destination].cell)
        switch route.method {
        case .directRouting:
            break
        case .tunnel:
            rewrite.kind = .tunnel
            rewrite.destination = route.address
            rewrite.tunnel = route.tunnel
        case .masquerading:
            rewrite.kind = .translation
            rewrite.destination = route.address
        case .fullNAT:
            guard let slot, extras[slot].localAddress >= 0 else { return nil }
            let local = extras[slot].localAddress
            rewrite.kind = .translation
            rewrite.source = view.localAddresses[Int(local)]
            rewrite.destination = route.address
        }
        return rewrite
    }

    /// A later fragment (no ports), rewritten as its first was; nil while its first is unknown.
    private mutating func laterFragment(_ frame: UnsafeMutableRawPointer, length: Int, headroom: Int,
                                        now: UInt32) -> FrameVerdict? {
        guard let rewrite = fragments.lookup(FragmentTableView.key(of: parsed), now: now) else { return nil }
        let verdict: FrameVerdict
        switch rewrite.kind {
        case .drop:
            return .drop(.dropFragment)
        case _ where rewrite.mac == 0:
            return .drop(.dropUnresolvedDestination)
        case .directRouting:
            verdict = directRouting(frame, length: length,
                                    addresses: EthernetAddresses(destination: MACAddress(value: rewrite.mac),
                                                                 source: view.interfaceMAC))
        case .tunnel:
            guard let outer = rewrite.destination else { return .drop(.dropFragment) }
            // The first fragment's ports give the fragment its flow hash: the network spreads it with its first.
            parsed.key.srcPort = rewrite.sourcePort
            parsed.key.dstPort = rewrite.destinationPort
            // Too big once encapsulated: IPv4 fragments have no DF (dropped, counted); IPv6 ones are
            // answered with "packet too big", as their first fragment would have been.
            verdict = tunnel(frame, length: length, headroom: headroom,
                             route: DestinationRoute(method: .tunnel, address: outer, port: 0, tunnel: rewrite.tunnel),
                             mac: rewrite.mac, replyOnTooBig: true)
        case .translation:
            let result = AddressTranslation.rewriteFragment(frame, parsed: parsed, source: rewrite.source,
                                                            destination: rewrite.destination, sourceMAC: view.interfaceMAC,
                                                            destinationMAC: MACAddress(value: rewrite.mac))
            verdict = result == .transmit ? .transmit(offset: 0, length: length) : .drop(.dropHopLimitExceeded)
        }
        if verdict.isTransmit && !answeredSender {
            counters.add(.fragmentsFollowed)
            if rewrite.isReply {
                traffic.countOut(rewrite.cell, bytes: length)
            } else {
                traffic.countIn(rewrite.cell, bytes: length, newConnection: false)
            }
        }
        return verdict
    }

    // MARK: Helpers

    /// The frame's Ethernet source, as `MACAddress.value` holds it.
    @inline(__always)
    static func sourceMAC(of frame: UnsafeMutableRawPointer) -> UInt64 {
        var value: UInt64 = 0
        for i in 6..<12 { value = value << 8 | UInt64(frame.load(fromByteOffset: i, as: UInt8.self)) }
        return value
    }

    @inline(__always)
    private static func dropReason(for status: ParseStatus) -> WorkerCounter {
        switch status {
        case .ok, .truncated: return .dropTruncated
        case .notIP: return .dropNotIP
        case .fragment, .firstFragment: return .dropFragment
        case .unsupportedProtocol: return .dropUnsupportedProtocol
        case .malformed: return .dropMalformed
        case .badIPv4Checksum: return .dropBadIPv4Checksum
        }
    }
}

/// Which frames batch preparation prefetches their home slot's `extras` line for: those whose TCP flags
/// (UDP's are 0) masked with `flagMask` equal `flags`. A new connection writes the line, and its store miss
/// held back the stores after it (the next locked add waits for them): a SYN always. NAT and FULLNAT read it
/// on every packet (expiry, local port), a second miss per packet at a million flows: with any NAT or FULLNAT
/// server configured, every frame. A configuration of DR and TUN alone prefetches for SYNs only, and pays
/// no more than the one test.
struct ExtrasPrefetch {
    let flagMask: UInt8
    let flags: UInt8

    init(_ view: SnapshotView) {
        if view.translatingServers.isEmpty {
            (flagMask, flags) = (TCPFlags.syn | TCPFlags.ack, TCPFlags.syn)
        } else {
            (flagMask, flags) = (0, 0)
        }
    }
}
