import CXDP
import Glibc
import Logging
import Scheduling
import Synchronization

/// How a worker waits when its RX ring is empty.
public enum WaitMode: String, Sendable, CaseIterable {
    /// Sleep in poll() until the kernel has frames: right when the worker shares its core (veth NAPI, tests).
    case poll
    /// Spin on the rings: lowest latency on a core dedicated to the worker, ruinous on a shared one.
    case busy
}

/// One queue's worker: a thread pinned to a core that owns the queue's UMEM and rings and runs the
/// canonical AF_XDP batch loop (completions back to fill, peek RX, reserve TX, process, submit, release).
public final class Worker: @unchecked Sendable {
    public static let batchSize = UInt32(ForwardingEngine.batchCapacity)
    /// Connection-table slots examined after a batch with frames, and after an empty poll.
    static let busySweep = 8, idleSweep = 1024

    public let queue: XSKQueue
    public let counters = WorkerCounterBlock()
    private let exchange: SnapshotExchange
    private let waitMode: WaitMode
    private let connectionCapacity: Int
    private let replies: ReplyIndex?
    private let templates: SharedFlowTable?
    private let fragments: FragmentTable?
    private let servers: FlowServerIndex?
    private let partition: Int
    /// The state file partition the worker's engine keeps its connections in (nil: process memory).
    private let state: WorkerStateMemory?
    private let stopRequested = Atomic<Bool>(false)
    private let runningCPU = Atomic<Int>(-1)
    private let kernelThreadID = Atomic<Int32>(0)
    private let assignedCore: Atomic<Int>
    /// The control thread asks for the worker's connections; the worker answers between batches.
    private let connectionsRequested = Atomic<Bool>(false)
    private let connectionsAnswer = Mutex<[ConnectionRecord]?>(nil)
    private var thread: pthread_t?
    private let logger: Logger
    /// The queue's slot in the XDP program's `heartbeats` map: the program holds the queue's frames for the
    /// restart grace after the last beat, so a restarted director can resume the connections.
    private let heartbeat: UnsafeMutablePointer<Atomic<UInt64>>?

    /// `state`: this worker's partition of the director's `ConnectionStateFile`; its engine then keeps
    /// (and resumes) its connections there and uses the file's reply index, template directory and flow
    /// server index, so `replies`, `templates`, `servers` and `partition` are ignored (see
    /// `ForwardingEngine.init`). The worker keeps the file mapped while it lives.
    public init(queue: XSKQueue, core: Int, exchange: SnapshotExchange, waitMode: WaitMode,
                connectionCapacity: Int, replies: ReplyIndex? = nil, templates: SharedFlowTable? = nil,
                servers: FlowServerIndex? = nil, fragments: FragmentTable? = nil, partition: Int = 0,
                state: WorkerStateMemory? = nil,
                heartbeat: UnsafeMutablePointer<Atomic<UInt64>>? = nil, logger: Logger) {
        self.queue = queue
        self.state = state
        self.heartbeat = heartbeat
        self.replies = replies
        self.templates = templates
        self.fragments = fragments
        self.servers = servers
        self.partition = partition
        assignedCore = Atomic(core)
        self.exchange = exchange
        self.waitMode = waitMode
        self.connectionCapacity = connectionCapacity
        self.logger = logger
    }

    /// The core the worker is pinned to.
    public var core: Int { assignedCore.load(ordering: .relaxed) }

    /// Moves the running worker to `core`: the kernel runs the thread there from its next wake-up (within
    /// one poll timeout when idle). The caller checks that the core exists and is free.
    public func pin(to core: Int) throws(DataplaneError) {
        let thread = threadID
        guard thread != 0 else { throw DataplaneError("the worker of queue \(queue.queue) is not running") }
        let result = cxdp_pin_thread_id_to_cpu(thread, Int32(core))
        guard result == 0 else { throw DataplaneError("cannot move the worker of queue \(queue.queue) to core \(core)", errno: result) }
        assignedCore.store(core, ordering: .relaxed)
    }

    /// Asks the worker for its connections and templates; `takeConnections` has them once it answered
    /// (between two batches, so within one poll timeout).
    public func requestConnections() {
        connectionsAnswer.withLock { $0 = nil }
        connectionsRequested.store(true, ordering: .releasing)
    }

    /// The answer to the last `requestConnections`, once there is one.
    public func takeConnections() -> [ConnectionRecord]? {
        connectionsAnswer.withLock { answer in
            defer { answer = nil }
            return answer
        }
    }

    /// The worker thread's kernel id (as in `/proc/<pid>/task/<tid>`), 0 before it started.
    public var threadID: Int32 { kernelThreadID.load(ordering: .relaxed) }

    /// The CPU the worker thread last ran on (-1 before it started).
    public var cpu: Int { runningCPU.load(ordering: .relaxed) }

    public func start() throws(DataplaneError) {
        var handle = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&handle, nil, { context in
            let worker = Unmanaged<Worker>.fromOpaque(context!).takeRetainedValue()
            worker.run()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<Worker>.fromOpaque(context).release()
            throw DataplaneError("cannot start the worker of queue \(queue.queue)", errno: result)
        }
        thread = handle
    }

    /// Asks the loop to end and waits for it (at most one poll timeout).
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func run() {
        kernelThreadID.store(cxdp_thread_id(), ordering: .relaxed)
        let core = self.core
        let pinned = cxdp_pin_thread_to_cpu(Int32(core))
        if pinned != 0 { logger.warning("queue \(queue.queue): cannot pin to core \(core): \(String(cString: strerror(pinned)))") }
        "xd-q\(queue.queue)".withCString { cxdp_set_thread_name($0) }
        runningCPU.store(Int(cxdp_current_cpu()), ordering: .relaxed)

        var (snapshot, generation) = exchange.load()
        var engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: connectionCapacity, counters: counters,
                                      replies: replies, templates: templates, servers: servers, fragments: fragments,
                                      worker: partition, state: state)
        var loop = RingLoop(rings: queue.rings, counters: counters.writer)
        while !stopRequested.load(ordering: .relaxed) {
            if exchange.generation != generation {
                (snapshot, generation) = exchange.load()
                engine.adopt(snapshot)
            }
            let clock = Self.coarseClock()
            let now = UInt32(truncatingIfNeeded: clock.tv_sec)
            heartbeat?.pointee.store(UInt64(clock.tv_sec) &* 1_000_000_000 &+ UInt64(clock.tv_nsec), ordering: .relaxed)
            if connectionsRequested.load(ordering: .relaxed) {
                connectionsRequested.store(false, ordering: .relaxed)
                let list = engine.listConnections(now: now)
                connectionsAnswer.withLock { $0 = list }
            }
            let milliseconds = UInt64(clock.tv_sec) &* 1000 &+ UInt64(clock.tv_nsec / 1_000_000)
            let received = loop.turn(engine: &engine, now: now, milliseconds: milliseconds)
            if received == 0 {
                loop.idle(waitMode: waitMode)
                runningCPU.store(Int(cxdp_current_cpu()), ordering: .relaxed)
            }
        }
        loop.drainTransmissions()
    }

    /// The coarse monotonic clock (no vDSO slow path), read once per batch: its seconds are the connection
    /// tables' time, the whole of it the heartbeat (the clock of the program's `bpf_ktime_get_ns`).
    @inline(__always)
    static func coarseClock() -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
        return now
    }
}

/// The four rings of one queue, the UMEM area they index and the socket to kick: an `XSKQueue`'s, or
/// rings in plain memory (`MemoryRings`) that tests and the engine benchmark drive as the kernel would.
public struct XSKRings {
    public var fill: UnsafeMutablePointer<xsk_ring_prod>
    public var completion: UnsafeMutablePointer<xsk_ring_cons>
    public var rx: UnsafeMutablePointer<xsk_ring_cons>
    public var tx: UnsafeMutablePointer<xsk_ring_prod>
    public var area: UnsafeMutableRawPointer
    /// The AF_XDP socket (-1 for rings in plain memory: their flags never ask for a wake-up).
    public var fd: Int32
    /// Bytes per UMEM chunk (a power of two).
    public var frameSize: UInt32

    public init(fill: UnsafeMutablePointer<xsk_ring_prod>, completion: UnsafeMutablePointer<xsk_ring_cons>,
                rx: UnsafeMutablePointer<xsk_ring_cons>, tx: UnsafeMutablePointer<xsk_ring_prod>,
                area: UnsafeMutableRawPointer, fd: Int32, frameSize: UInt32) {
        precondition(frameSize.nonzeroBitCount == 1, "UMEM chunks are a power of two")
        self.fill = fill; self.completion = completion; self.rx = rx; self.tx = tx
        self.area = area; self.fd = fd; self.frameSize = frameSize
    }
}

/// The rings of one queue as the worker drives them. Every frame RX hands us either goes out on TX (and
/// comes back through the completion ring) or straight back to the fill ring.
///
/// Ownership: one worker thread (or one test, one benchmark) drives it; nothing in it is shared.
public struct RingLoop {
    private let fill: UnsafeMutablePointer<xsk_ring_prod>
    private let completion: UnsafeMutablePointer<xsk_ring_cons>
    private let rx: UnsafeMutablePointer<xsk_ring_cons>
    private let tx: UnsafeMutablePointer<xsk_ring_prod>
    private let area: UnsafeMutableRawPointer
    private let fd: Int32
    private let counters: CounterWriter
    /// Frames dropped in the current batch, returned to the fill ring together.
    private let recycled: UnsafeMutablePointer<UInt64>
    /// Offset bits of an address within its (aligned, power-of-two) chunk.
    private let chunkMask: UInt64
    /// Frames submitted on TX whose completion has not come back yet.
    private var inFlight: UInt32 = 0
    /// Later fragments the engine holds for their first (`.hold`), in arrival order, offered again each turn.
    private let held: UnsafeMutablePointer<HeldFrame>
    private var heldCount = 0
    /// The current turn's milliseconds (kept here, not in a local live across the batch loop).
    private var clock: UInt64 = 0
    /// Fragments held at once: a few datagrams whose first is late; each keeps a UMEM frame out of the rings.
    public static let holdCapacity = Int(Worker.batchSize)
    /// How long a fragment waits for its first (reordering on the path, or the first on a slower queue).
    public static let holdMilliseconds: UInt64 = 100

    /// A loop over `rings` counting into `counters`, which the caller keeps alive while the loop runs.
    public init(rings: XSKRings, counters: WorkerCounterBlock) {
        self.init(rings: rings, counters: counters.writer)
    }

    init(rings: XSKRings, counters: CounterWriter) {
        fill = rings.fill; completion = rings.completion; rx = rings.rx; tx = rings.tx
        area = rings.area; fd = rings.fd
        self.counters = counters
        recycled = .allocate(capacity: max(Int(Worker.batchSize), Self.holdCapacity))
        held = .allocate(capacity: Self.holdCapacity)
        chunkMask = UInt64(rings.frameSize - 1)
    }

    /// One turn of the worker's loop with frames to look at: a batch, then a little sweeping, then the
    /// connection gauge. Returns how many frames RX delivered (0: the caller waits, see `idle`).
    /// `milliseconds` (any monotonic origin; default `now` in milliseconds) times held fragments.
    @inline(__always)
    public mutating func turn(engine: inout ForwardingEngine, now: UInt32, milliseconds: UInt64? = nil) -> UInt32 {
        let received = runBatch(engine: &engine, now: now, milliseconds: milliseconds)
        // Expired connections are reclaimed a little per busy batch (a full pass takes seconds even at
        // line rate) and more while idle, so the work follows the traffic instead of taxing every batch.
        engine.sweep(now: now, limit: received == 0 ? Worker.idleSweep : Worker.busySweep)
        counters.set(.activeConnections, UInt64(engine.connectionCount))
        return received
    }

    /// Processes up to one batch, then offers the held fragments again; returns how many frames RX delivered.
    @inline(__always)
    public mutating func runBatch(engine: inout ForwardingEngine, now: UInt32, milliseconds: UInt64? = nil) -> UInt32 {
        clock = milliseconds ?? UInt64(now) &* 1000
        reclaimCompletions()
        var peeked: UInt32 = 0
        let received = xsk_ring_cons__peek(rx, Worker.batchSize, &peeked)
        let rxIndex = peeked  // a constant for the closure below, which would otherwise reload it per frame
        guard received > 0 else {
            if heldCount > 0 { offerHeld(engine: &engine, now: now) }
            if inFlight > 0 { kickTransmit() }
            return 0
        }
        var txIndex: UInt32 = 0
        var txSlots = xsk_ring_prod__reserve(tx, received, &txIndex)
        if txSlots == 0 {
            // TX is backed up: push it along, then take what room there is.
            kickTransmit()
            reclaimCompletions()
            txSlots = min(received, xsk_prod_nb_free(tx, received))
            if txSlots > 0 { txSlots = xsk_ring_prod__reserve(tx, txSlots, &txIndex) }
        }
        var sent: UInt32 = 0
        var dropped = 0
        // Frames held, this batch's included: a local, so the loop calls nothing that could change `self`.
        var holding = heldCount
        var bytes: UInt64 = 0
        var sentBytes: UInt64 = 0
        let area = self.area, chunkMask = self.chunkMask
        let rxDescriptors = RingEntries<xdp_desc>(rx), txDescriptors = RingEntries<xdp_desc>(tx)
        // Two passes: every frame parsed and its connection line prefetched, then every frame processed.
        engine.prepare(count: Int(received)) { i in
            let descriptor = rxDescriptors[rxIndex &+ UInt32(truncatingIfNeeded: i)].pointee
            // Aligned chunks: the offset within the chunk is the headroom the kernel left before the frame.
            return (area + Int(truncatingIfNeeded: descriptor.addr), Int(descriptor.len),
                    Int(truncatingIfNeeded: descriptor.addr & chunkMask))
        }
        for i in 0..<Int(received) {
            let descriptor = rxDescriptors[rxIndex &+ UInt32(truncatingIfNeeded: i)].pointee
            bytes &+= UInt64(descriptor.len)
            var verdict = engine.process(prepared: i, area + Int(truncatingIfNeeded: descriptor.addr),
                                         length: Int(descriptor.len),
                                         headroom: Int(truncatingIfNeeded: descriptor.addr & chunkMask), now: now)
            if sent == txSlots, verdict.isTransmit { verdict = .drop(.dropTXRingFull) }
            switch verdict {
            case .transmit(let offset, let length):
                Self.describe(txDescriptors[txIndex &+ sent], address: descriptor.addr, offset: offset, length: length)
                sentBytes &+= UInt64(truncatingIfNeeded: length)
                sent &+= 1
            case .drop(let reason):
                counters.add(reason)
                recycled[dropped] = descriptor.addr
                dropped += 1
            case .hold:
                if holding < Self.holdCapacity {
                    held[holding] = HeldFrame(address: descriptor.addr, length: descriptor.len,
                                              deadline: clock &+ Self.holdMilliseconds)
                    holding += 1
                    counters.add(.fragmentsHeld)
                } else {
                    counters.add(.dropFragmentHoldFull)
                    recycled[dropped] = descriptor.addr
                    dropped += 1
                }
            }
        }
        xsk_ring_cons__release(rx, received)
        heldCount = holding
        counters.add(.rxPackets, UInt64(received))
        counters.add(.rxBytes, bytes)
        submit(sent, of: txSlots, bytes: sentBytes, dropped: dropped)
        if xsk_ring_prod__needs_wakeup(fill) != 0 {
            counters.add(.rxWakeups)
            _ = recvfrom(fd, nil, 0, Int32(MSG_DONTWAIT), nil, nil)
        }
        // After the batch, whose first fragments may be what the held ones wait for.
        if heldCount > 0 { offerHeld(engine: &engine, now: now) }
        return received
    }

    /// Offers every held fragment to the engine again: sent once its first is known, dropped when its time
    /// is up, else kept (in order).
    @inline(never)
    private mutating func offerHeld(engine: inout ForwardingEngine, now: UInt32) {
        var txIndex: UInt32 = 0
        let slots = xsk_ring_prod__reserve(tx, UInt32(heldCount), &txIndex)
        var sent: UInt32 = 0, sentBytes: UInt64 = 0
        var dropped = 0, kept = 0
        for i in 0..<heldCount {
            let frame = held[i]
            var verdict = engine.processHeld(area + Int(frame.address), length: Int(frame.length),
                                             headroom: Int(frame.address & chunkMask), now: now,
                                             final: clock >= frame.deadline)
            if sent == slots, verdict.isTransmit { verdict = .drop(.dropTXRingFull) }
            switch verdict {
            case .transmit(let offset, let length):
                Self.describe(xsk_ring_prod__tx_desc(tx, txIndex &+ sent)!, address: frame.address, offset: offset,
                              length: length)
                sentBytes &+= UInt64(truncatingIfNeeded: length)
                sent &+= 1
            case .drop(let reason):
                counters.add(reason)
                recycled[dropped] = frame.address
                dropped += 1
            case .hold:
                held[kept] = frame
                kept += 1
            }
        }
        heldCount = kept
        submit(sent, of: slots, bytes: sentBytes, dropped: dropped)
    }

    /// Ends a pass over frames: `sent` of the `reserved` TX slots are submitted (the rest given back) and
    /// the `dropped` frames in `recycled` go back to the fill ring.
    @inline(__always)
    private mutating func submit(_ sent: UInt32, of reserved: UInt32, bytes: UInt64, dropped: Int) {
        if sent < reserved { tx.pointee.cached_prod &-= reserved - sent }  // give back unused reservations
        if sent > 0 {
            xsk_ring_prod__submit(tx, sent)
            inFlight &+= sent
            counters.add(.txPackets, UInt64(sent))
            counters.add(.txBytes, bytes)
            kickTransmit()
        }
        if dropped > 0 { refill(count: UInt32(dropped)) }
    }

    /// Fills a TX descriptor: the frame at UMEM `address`, from `offset` bytes off it (negative after an
    /// encapsulation into the headroom), `length` bytes.
    @inline(__always)
    private static func describe(_ out: UnsafeMutablePointer<xdp_desc>, address: UInt64, offset: Int, length: Int) {
        out.pointee.addr = UInt64(bitPattern: Int64(bitPattern: address) &+ Int64(offset))
        out.pointee.len = UInt32(truncatingIfNeeded: length)
        out.pointee.options = 0
    }

    /// Waits for frames when RX was empty.
    public mutating func idle(waitMode: WaitMode) {
        counters.add(.emptyPolls)
        guard waitMode == .poll else { return }
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        // Short waits while transmissions are outstanding, so their frames come back promptly, and while
        // fragments are held, so they go (or are dropped) on time.
        _ = poll(&descriptor, 1, inFlight > 0 || heldCount > 0 ? 1 : 100)
    }

    /// Frames submitted on TX whose completions have not come back.
    public var framesInFlight: UInt32 { inFlight }

    /// Later fragments held for their first.
    public var framesHeld: Int { heldCount }

    /// Before the worker ends: give the kernel a chance to finish what was submitted; frees the loop's
    /// scratch memory (call it once, last).
    public mutating func drainTransmissions() {
        for _ in 0..<100 where inFlight > 0 {
            kickTransmit()
            reclaimCompletions()
            if inFlight > 0 { usleep(1000) }
        }
        // Fragments still waiting: their first will not come now.
        if heldCount > 0 { counters.add(.dropFragmentWithoutFirst, UInt64(heldCount)) }
        heldCount = 0
        held.deallocate()
        recycled.deallocate()
    }

    @inline(__always)
    private mutating func reclaimCompletions() {
        var index: UInt32 = 0
        let completed = xsk_ring_cons__peek(completion, Worker.batchSize * 2, &index)
        guard completed > 0 else { return }
        var fillIndex: UInt32 = 0
        let reserved = xsk_ring_prod__reserve(fill, completed, &fillIndex)
        if reserved < completed {
            // Cannot happen while the fill ring holds every frame; leave them for the next round.
            counters.add(.fillRingShortfalls)
            xsk_ring_cons__cancel(completion, completed)
            return
        }
        // A frame sent from inside its chunk (after encapsulation) goes back by the chunk's start.
        RingEntries<UInt64>(fill).copy(completed, from: RingEntries<UInt64>(completion), at: index, to: fillIndex,
                                       masking: ~chunkMask)
        xsk_ring_prod__submit(fill, completed)
        xsk_ring_cons__release(completion, completed)
        inFlight &-= completed
    }

    @inline(__always)
    private func refill(count: UInt32) {
        var fillIndex: UInt32 = 0
        guard xsk_ring_prod__reserve(fill, count, &fillIndex) == count else {
            counters.add(.fillRingShortfalls)
            return
        }
        let fillAddresses = RingEntries<UInt64>(fill)
        for i in 0..<count { fillAddresses[fillIndex &+ i].pointee = recycled[Int(i)] }
        xsk_ring_prod__submit(fill, count)
    }

    @inline(never)
    private func kickTransmit() {
        guard xsk_ring_prod__needs_wakeup(tx) != 0 else { return }
        counters.add(.txKicks)
        if sendto(fd, nil, 0, Int32(MSG_DONTWAIT), nil, 0) < 0 {
            switch errno {
            case EAGAIN, EBUSY, ENOBUFS, ENETDOWN: break  // the kernel is busy; the next kick retries
            default: counters.add(.txKickErrors)
            }
        }
    }
}

/// A ring's entries for one pass over them: its base and mask read once, so each entry is an index and a
/// mask away (libxdp's accessors reload both through the ring struct at every call, since the engine called
/// in between could, as far as the compiler knows, have changed it).
struct RingEntries<Entry> {
    private let base: UnsafeMutablePointer<Entry>
    private let mask: UInt32

    @inline(__always)
    init(_ ring: UnsafeMutablePointer<xsk_ring_cons>) {
        base = ring.pointee.ring.assumingMemoryBound(to: Entry.self)
        mask = ring.pointee.mask
    }

    @inline(__always)
    init(_ ring: UnsafeMutablePointer<xsk_ring_prod>) {
        base = ring.pointee.ring.assumingMemoryBound(to: Entry.self)
        mask = ring.pointee.mask
    }

    @inline(__always)
    subscript(index: UInt32) -> UnsafeMutablePointer<Entry> { base + Int(index & mask) }
}

extension RingEntries where Entry == UInt64 {
    /// Copies `count` addresses from `source`'s entries at `sourceIndex` on to these at `index`, each ANDed
    /// with `mask`: in runs where neither ring wraps, so each run is a plain loop the compiler vectorizes
    /// (an index masked per entry kept it to one address at a time).
    @inline(__always)
    func copy(_ count: UInt32, from source: RingEntries<UInt64>, at sourceIndex: UInt32, to index: UInt32,
              masking mask: UInt64) {
        var left = count, from = sourceIndex, to = index
        while left > 0 {
            let run = min(left, source.mask &- (from & source.mask) &+ 1, self.mask &- (to & self.mask) &+ 1)
            let input = source[from], output = self[to]
            for k in 0..<Int(run) { output[k] = input[k] & mask }
            left &-= run; from &+= run; to &+= run
        }
    }
}

/// A later fragment's frame kept for its first: the UMEM descriptor and when to give up.
struct HeldFrame {
    var address: UInt64
    var length: UInt32
    /// On the ring loop's millisecond clock.
    var deadline: UInt64
}
