import Glibc
import Packet
import Synchronization

/// One worker's connection table: flow → (service, real server, state, expiry), fixed capacity.
///
/// Ownership: a table belongs to one worker thread, which alone calls its methods; other threads (listings,
/// `ipvsadm -Lc`) ask that worker. All memory is allocated in `init` and freed in `deinit`, or lies in
/// memory the caller provides (`init(capacity:timeouts:counters:memory:restoring:)`, e.g. a shared file
/// mapping that outlives the process, so a restarted program resumes the table); no method allocates (except
/// `liveEntries`, meant for listings), takes a lock or touches a reference count.
///
/// Layout: open addressing with linear probing over a power-of-two number of slots, at least twice
/// `capacity`, so the table is never more than half full. A parallel array of 16-bit tags (from the flow hash;
/// 0 = empty) lets a probe skip non-matching slots without touching the 64-byte entries. An entry always sits
/// within `probeLimit` slots of its home slot, so `find` and `insert` look at no more than that many slots.
/// Deletion leaves a tombstone (turned back into an empty slot when it ends a run), so entries never move.
///
/// Time: `now` is a monotonic seconds counter supplied by the caller (never read from a clock here).
/// An entry with expiry `e` is live while `now < e` (compared with wrap-around arithmetic) and expired from
/// `now == e` on. Expired entries are not removed at once: `find` ignores them, `insert` reuses their slots,
/// and `sweep`, which the worker calls between batches, reclaims them a bounded number of slots at a time.
///
/// Slot indices: an entry stays in its slot from `insert` until it is removed or its slot is reused, so a
/// caller may keep side data per slot; `insert` returning a slot means that slot now holds a new entry.
///
/// Counters: an entry inserted with a counter cell (`DestinationCounterCell`, from the store given to
/// `init`) is counted there from insertion until it is removed or its expired slot is reclaimed or reused,
/// as inactive, active while ESTABLISHED, or persistent for templates, as IPVS counts its connections.
/// The cell is also the real server's identity: it is kept with the entry (counted or not), so a tracker
/// finds the server's current index through it rather than renumbering entries when servers move.
public struct ConnectionTable: ~Copyable {
    @usableFromInline
    struct Entry {
        @usableFromInline var key: FlowKey
        @usableFromInline var service: UInt32
        @usableFromInline var destination: UInt32
        /// Absolute time (the caller's seconds) at which the entry expires.
        @usableFromInline var expires: UInt32
        /// `key.flowHash`, kept so deletion can find an entry's home slot without rehashing.
        @usableFromInline var hash: UInt32
        /// The destination's counter cell (its identity), `SchedulingDestination.noCell` for none.
        @usableFromInline var cell: UInt32
        @usableFromInline var state: ConnectionState
        @usableFromInline var flags: UInt8
        /// The second (its low 16 bits) of the last client packet, so a tracker does per-second work once.
        @usableFromInline var lastSeen: UInt16

        @usableFromInline
        init(key: FlowKey, service: UInt32, destination: UInt32, expires: UInt32, hash: UInt32,
             cell: UInt32, state: ConnectionState, flags: UInt8, lastSeen: UInt16) {
            self.key = key
            self.service = service
            self.destination = destination
            self.expires = expires
            self.hash = hash
            self.cell = cell
            self.state = state
            self.flags = flags
            self.lastSeen = lastSeen
        }
    }

    /// `Entry.flags`: replies bypass the director, so TCP uses IPVS's input-only table (IPVS
    /// `IP_VS_CONN_F_NOOUTPUT`). Cleared for good by the first reply seen.
    @usableFromInline static var inputOnlyFlag: UInt8 { 0x01 }
    /// `Entry.flags`: counted in `cell`'s counters.
    @usableFromInline static var countedFlag: UInt8 { 0x02 }
    /// `Entry.flags`: counted as active (ESTABLISHED) rather than inactive.
    @usableFromInline static var activeFlag: UInt8 { 0x04 }
    /// `Entry.flags`: a persistence template (counted as persistent; no state machine).
    @usableFromInline static var templateFlag: UInt8 { 0x08 }
    /// `Entry.flags`: the slot holds an entry (mirrors its tag being above `tombstone`), so a lookup can decide
    /// a hit in the home slot from the entry's own cache line, without reading the tags.
    @usableFromInline static var occupiedFlag: UInt8 { 0x10 }
    /// `Entry.flags`: the entry's real server is its flow's stable choice (`ConnectionTracker` computes the same
    /// one for any packet of the flow), so the entry is disposable while half-open: a full table evicts it
    /// for a new connection, and it lives `rederivableHalfOpenTimeout` at most after its first packet. The
    /// flow's next packet makes it again, on the same server. Older tables never set it (no layout change).
    @usableFromInline static var rederivableFlag: UInt8 { 0x20 }
    /// The tag of a deleted slot that still lies inside a run.
    @usableFromInline static var tombstone: UInt16 { 1 }

    /// The most slots `find` and `insert` examine from a flow's home slot.
    public static var probeLimit: Int { 32 }

    /// Slots from a flow's home that `find` checks by their entries before it reads the tags: in a half-full
    /// table the home slot holds three flows in four, the first four slots 97 % (`lookupLines`). Each more
    /// costs every packet a prefetch, and a million flows gained too little from six to tell through the
    /// noise.
    public static var directSlots: Int { 4 }

    /// Bytes from one slot's entry to the next's: one cache line.
    @inlinable public static var entryStride: Int { MemoryLayout<Entry>.stride }

    /// Slots a full `insert` may sweep to make room, and slots it may search for a half-open entry to evict.
    static var reclaimBudget: Int { 64 }

    /// Seconds a rederivable entry lives after its first packet while half-open (IPVS `secure_tcp` shortens
    /// SYN_RECV likewise under attack): a spoofed SYN's entry is gone within seconds of the flood, and a
    /// real handshake that takes longer loses nothing, its ACK making the entry again.
    public static var rederivableHalfOpenTimeout: UInt32 { 5 }

    @usableFromInline let entries: UnsafeMutablePointer<Entry>
    @usableFromInline let tags: UnsafeMutablePointer<UInt16>
    /// Timeout in seconds by `ConnectionState.rawValue`.
    @usableFromInline let timeoutByState: UnsafeMutablePointer<UInt32>
    @usableFromInline let mask: Int
    /// The first cell of the counter store, or nil when nothing is counted.
    @usableFromInline let counterCells: UnsafeMutablePointer<DestinationCounterCell>?
    @usableFromInline let counterCapacity: Int
    /// Keeps the cells alive.
    private let counterStore: DestinationCounterStore?

    /// The most entries (live, or expired and not yet reclaimed) the table holds.
    public let capacity: Int

    /// Entries held: live ones plus expired ones not yet reclaimed (by `insert` reusing their slot, or `sweep`).
    /// A worker that sweeps regularly keeps it close to the number of live connections.
    public private(set) var count: Int

    /// Where the next `sweep` starts: kept in the control words, so a restarted table resumes it.
    var sweepCursor: Int {
        get { Int(control[Control.sweepCursor] & UInt64(mask)) }
        nonmutating set { control[Control.sweepCursor] = UInt64(newValue) }
    }

    /// Where a full `insert`'s search for a half-open entry to evict starts (beyond the flow's own window).
    var evictionCursor = 0

    /// Rederivable half-open entries evicted to make room, since `takeEvictions` last read them.
    private var evictions = 0

    /// The timeouts applied from the next packet on (`ipvsadm --set` does not touch running timers either).
    public var timeouts: ConnectionTimeouts {
        didSet { Self.fill(timeoutByState, from: timeouts) }
    }

    /// Where this table's memory is: entries, tags and the control words (see `byteCount(capacity:)`).
    private let memory: UnsafeMutableRawPointer
    /// True when `init` allocated `memory` (freed in `deinit`); false over a caller's memory.
    private let ownsMemory: Bool
    /// Control words at the start of `memory`: see `Control`.
    private let control: UnsafeMutablePointer<UInt64>

    /// The control words at the start of a table's memory.
    private enum Control {
        /// Word 0: `slotCount`, word 1: `capacity` (checked when a table is restored), word 2: the sweep cursor.
        static let slotCount = 0, capacity = 1, sweepCursor = 2
        /// Bytes before the entries: one cache line.
        static let bytes = 64
    }

    /// A table for `capacity` connections (1 ... 2^28). Allocates 66 bytes per slot, 2 to 4 slots per unit of
    /// capacity (the slot count is a power of two), at least 64 slots.
    public init(capacity: Int, timeouts: ConnectionTimeouts = .init(), counters: DestinationCounterStore? = nil) {
        Self.checkCapacity(capacity)
        // Huge pages where the host allows them (THP "madvise" or "always"): a lookup in a table of a million
        // connections then costs one cache miss rather than a miss and a page walk (the TLB covers 2 MiB per
        // entry instead of 4 KiB). The hint is all: the table works alike without it.
        let bytes = Self.byteCount(capacity: capacity)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: bytes >= Self.hugePage ? Self.hugePage : 64)
        if bytes >= Self.hugePage { _ = madvise(memory, bytes, MADV_HUGEPAGE) }
        self.init(capacity: capacity, timeouts: timeouts, counters: counters, memory: memory, owned: true, restoring: false)
    }

    /// A table over `memory`, which the caller provides and keeps valid (and does not hand to another
    /// table) while the table lives: `byteCount(capacity:)` bytes, 64-byte aligned. Nothing is allocated for
    /// the entries and nothing is freed in `deinit`; the memory may be a shared file mapping that outlives
    /// the process.
    ///
    /// `restoring` false: the table starts empty (the memory is initialised, whatever it held).
    /// `restoring` true: the memory holds a table of the same `capacity` left by an earlier table (in this
    /// process or another): its entries, tags and sweep position are kept as they are and `count` is
    /// recounted from the tags. Expiry times are the caller's seconds, so the caller's clock must be the one
    /// the earlier table was given (a system-wide monotonic clock). The counter cells the entries name are
    /// not recounted: `counters` must be the store the entries were counted in, with its counts kept.
    public init(capacity: Int, timeouts: ConnectionTimeouts = .init(), counters: DestinationCounterStore? = nil,
                memory: UnsafeMutableRawPointer, restoring: Bool) {
        Self.checkCapacity(capacity)
        self.init(capacity: capacity, timeouts: timeouts, counters: counters, memory: memory, owned: false,
                  restoring: restoring)
    }

    private init(capacity: Int, timeouts: ConnectionTimeouts, counters: DestinationCounterStore?,
                 memory: UnsafeMutableRawPointer, owned: Bool, restoring: Bool) {
        precondition(Int(bitPattern: memory) & 63 == 0, "connection table memory must be 64-byte aligned")
        let slotCount = Self.slotCount(capacity: capacity)
        self.capacity = capacity
        self.mask = slotCount - 1
        self.timeouts = timeouts
        self.counterStore = counters
        self.counterCells = counters?.cells
        self.counterCapacity = counters?.capacity ?? 0
        self.memory = memory
        self.ownsMemory = owned
        let control = memory.bindMemory(to: UInt64.self, capacity: Control.bytes / 8)
        self.control = control
        // Cache-line aligned, so a 64-byte entry is one line to `find` rather than two.
        let entries = (memory + Control.bytes).bindMemory(to: Entry.self, capacity: slotCount)
        let tags = (memory + Control.bytes + Self.entryBytes(slotCount)).bindMemory(to: UInt16.self, capacity: slotCount)
        if restoring {
            precondition(control[Control.slotCount] == UInt64(slotCount) && control[Control.capacity] == UInt64(capacity),
                         "restored connection table has another capacity")
            // A process that died between an entry's store and its tag's (an insert writes the entry first, a
            // removal clears its occupied flag first) left the two disagreeing: the entry decides, so `find`
            // (which reads the entry's flag first, then the tags) and the slot accessors see one table.
            var held = 0
            for slot in 0..<slotCount {
                if entries[slot].flags & Self.occupiedFlag != 0 {
                    tags[slot] = Self.tag(entries[slot].hash)
                    held += 1
                } else if tags[slot] > Self.tombstone {
                    tags[slot] = Self.tombstone
                }
            }
            self.count = held
        } else {
            control.initialize(repeating: 0, count: Control.bytes / 8)
            control[Control.slotCount] = UInt64(slotCount)
            control[Control.capacity] = UInt64(capacity)
            let blank = Entry(key: FlowKey(), service: 0, destination: 0, expires: 0, hash: 0,
                              cell: SchedulingDestination.noCell, state: .initial, flags: 0, lastSeen: 0)
            entries.initialize(repeating: blank, count: slotCount)
            tags.initialize(repeating: 0, count: slotCount)
            self.count = 0
        }
        let timeoutByState = UnsafeMutablePointer<UInt32>.allocate(capacity: ConnectionState.allCases.count)
        timeoutByState.initialize(repeating: 0, count: ConnectionState.allCases.count)
        self.entries = entries
        self.tags = tags
        self.timeoutByState = timeoutByState
        Self.fill(timeoutByState, from: timeouts)
    }

    deinit {
        if ownsMemory { memory.deallocate() }
        timeoutByState.deallocate()
    }

    /// The x86-64 and arm64 (4 KiB granule) transparent huge page.
    static let hugePage = 2 << 20

    private static func checkCapacity(_ capacity: Int) {
        precondition(capacity > 0 && capacity <= 1 << 28, "connection table capacity out of range")
    }

    /// Slots of a table of `capacity`: a power of two, at least twice the capacity, at least 64.
    public static func slotCount(capacity: Int) -> Int {
        var slotCount = 64
        while slotCount < 2 * capacity { slotCount <<= 1 }
        return slotCount
    }

    private static func entryBytes(_ slotCount: Int) -> Int { roundUp64(MemoryLayout<Entry>.stride * slotCount) }

    private static func roundUp64(_ bytes: Int) -> Int { (bytes + 63) & ~63 }

    /// The bytes a table of `capacity` needs over caller-provided memory: a cache line of control words,
    /// then the entries, then the 16-bit tags, each part a multiple of 64 bytes.
    public static func byteCount(capacity: Int) -> Int {
        checkCapacity(capacity)
        let slotCount = slotCount(capacity: capacity)
        return Control.bytes + entryBytes(slotCount) + roundUp64(2 * slotCount)
    }

    /// What a table kept in memory that outlives the process depends on, beyond its capacity: the size,
    /// stride and alignment of an entry, the offset of each of its fields, and how `ConnectionState` values
    /// are represented in memory. A restarted program that computes other values (another compiler, another
    /// entry layout) must not read an earlier table's memory.
    public static var persistedLayout: [Int] {
        var layout = [MemoryLayout<Entry>.size, MemoryLayout<Entry>.stride, MemoryLayout<Entry>.alignment,
                      MemoryLayout<FlowKey>.size, MemoryLayout<FlowKey>.stride, Control.bytes]
        let offsets: [PartialKeyPath<Entry>] = [\.key, \.service, \.destination, \.expires, \.hash, \.cell, \.state,
                                                \.flags, \.lastSeen]
        layout += offsets.map { MemoryLayout<Entry>.offset(of: $0) ?? -1 }
        let keyOffsets: [PartialKeyPath<FlowKey>] = [\.srcHi, \.srcLo, \.dstHi, \.dstLo, \.portsAndProtocol]
        layout += keyOffsets.map { MemoryLayout<FlowKey>.offset(of: $0) ?? -1 }
        // A Swift enum is stored as its case's tag, not its raw value: record the byte each state is.
        layout.append(MemoryLayout<ConnectionState>.size)
        for state in ConnectionState.allCases {
            layout.append(withUnsafeBytes(of: state) { $0.first.map(Int.init) ?? -1 })
        }
        return layout
    }

    private static func fill(_ table: UnsafeMutablePointer<UInt32>, from timeouts: ConnectionTimeouts) {
        for state in ConnectionState.allCases {
            let seconds = timeouts.seconds(for: state)
            precondition(seconds <= ConnectionTimeouts.maximum, "connection timeout too large")
            table[Int(state.rawValue)] = seconds
        }
    }

    /// Number of slots (a power of two, at least `2 * capacity`); slot indices are `0..<slotCount`.
    public var slotCount: Int { mask + 1 }

    // MARK: - Hot path

    /// A live (not expired at `now`) entry for `key`, as a slot index.
    @inlinable
    public func find(_ key: FlowKey, now: UInt32) -> Int? {
        find(key, hash: key.flowHash, now: now)
    }

    /// `find` with the flow's hash (`key.flowHash`) already computed: a packet's hash is computed once.
    @inlinable @inline(__always)
    public func find(_ key: FlowKey, hash: UInt32, now: UInt32) -> Int? {
        var slot = Int(truncatingIfNeeded: hash) & mask
        // One cache line for the common hit: the home slot's entry holds the flow's hash and whether it is
        // occupied, so a flow found where it hashes to reads neither the tags nor another line.
        if Self.holds(entries + slot, key, hash: hash, now: now) { return slot }
        // Else most often one of the next slots (linear probing): their entries are checked the same way
        // before the tags. In a large table the `directSlots` entry lines are one access to memory (adjacent
        // lines, which `lookupLines` names), the tags' line another: at half the slots used, 97 % of the
        // flows are found without it.
        for offset in 1..<Self.directSlots {
            let probe = (slot &+ offset) & mask
            if Self.holds(entries + probe, key, hash: hash, now: now) { return probe }
        }
        let tag = Self.tag(hash)
        for _ in 0..<Self.probeLimit {
            let slotTag = tags[slot]
            if slotTag == 0 { return nil }
            if slotTag == tag && Self.sameFlow(entries[slot].key, key) && Self.isLive(entries[slot].expires, now) {
                return slot
            }
            slot = (slot &+ 1) & mask
        }
        return nil
    }

    /// Inserts a new connection for `key` (which must have no live entry: call `find` first) and applies the
    /// packet's `tcpFlags` to it as its first packet. When there is no room (the table holds `capacity`
    /// entries and a short sweep found none expired, or every slot within `probeLimit` of the flow's home
    /// holds a live entry), a half-open entry inserted `rederivable` is evicted for it (see `evictHalfOpen`).
    /// nil when there is none either; no other live entry is ever evicted, and the caller forwards without
    /// state.
    ///
    /// `seesReplies`: the real server answers through the director (NAT, FULLNAT), so TCP follows IPVS's
    /// input/output tables; false (DR, TUN) uses the input-only table until a reply shows up.
    ///
    /// `cell`: the destination's cell in the counter store (counted from now on). `template`: a persistence
    /// template, which has no state machine and lives `templateTimeout` seconds. `rederivable`: `destination`
    /// is the flow's stable choice, which any later packet of the flow gets again (see `rederivableFlag`).
    public mutating func insert(
        _ key: FlowKey, service: UInt32, destination: UInt32, tcpFlags: UInt8, now: UInt32,
        seesReplies: Bool = false, cell: UInt32 = SchedulingDestination.noCell,
        template: Bool = false, templateTimeout: UInt32 = 0, rederivable: Bool = false
    ) -> Int? {
        insert(key, hash: key.flowHash, service: service, destination: destination, tcpFlags: tcpFlags, now: now,
               seesReplies: seesReplies, cell: cell, template: template, templateTimeout: templateTimeout,
               rederivable: rederivable)
    }

    /// `insert` with the flow's hash (`key.flowHash`) already computed.
    public mutating func insert(
        _ key: FlowKey, hash: UInt32, service: UInt32, destination: UInt32, tcpFlags: UInt8, now: UInt32,
        seesReplies: Bool = false, cell: UInt32 = SchedulingDestination.noCell,
        template: Bool = false, templateTimeout: UInt32 = 0, rederivable: Bool = false
    ) -> Int? {
        var found = freeSlot(hash: hash, now: now, mayReclaim: true)
        if found == nil && evictHalfOpen(near: hash) { found = freeSlot(hash: hash, now: now, mayReclaim: false) }
        guard let slot = found else { return nil }
        let isTCP = key.proto == IPProtocolNumber.tcp && !template
        var flags: UInt8 = Self.occupiedFlag | (seesReplies ? 0 : Self.inputOnlyFlag)
        if template { flags |= Self.templateFlag }
        if rederivable && !template { flags |= Self.rederivableFlag }
        // The first packet applied as `update` would apply it to an entry in NONE (TCP) or UDP, computed before
        // the entry is written, so the new line is written once.
        var state: ConnectionState = isTCP ? .initial : .udp
        var expires = now &+ templateTimeout
        if !template {
            if isTCP {
                // A SYN (without ACK, FIN or RST), most new connections: NONE → SYN_RECV in both client tables.
                state = tcpFlags & 0x17 == TCPStateMachine.syn ? .synReceived
                    : TCPStateMachine.next(.initial, flags: tcpFlags, table: seesReplies ? .input : .inputOnly)
            }
            expires = now &+ timeoutByState[Int(state.rawValue)]
            if rederivable && state.isHalfOpen {
                expires = now &+ min(timeoutByState[Int(state.rawValue)], Self.rederivableHalfOpenTimeout)
            }
        }
        if let cells = counterCells, Int(cell) < counterCapacity {
            cells[Int(cell)].bind(template: template)
            flags |= Self.countedFlag
            // Made at a segment that establishes it (a flow met mid-way): counted active from the start.
            if state.isActive {
                cells[Int(cell)].transition(toActive: true)
                flags |= Self.activeFlag
            }
        }
        entries[slot] = Entry(
            key: key, service: service, destination: destination, expires: expires, hash: hash,
            cell: cell, state: state, flags: flags, lastSeen: UInt16(truncatingIfNeeded: now))
        tags[slot] = Self.tag(hash)
        return slot
    }

    /// Removes one rederivable half-open entry so that an insert near `hash` finds room. When the flow's probe
    /// window has a free slot (the table is merely at capacity), any entry will do: the first a rotating search
    /// finds, reading at most `reclaimBudget` slots (under a flood about one entry in eight qualifies, so a
    /// handful). When every slot of the window holds a live entry, only one there helps: the one nearest expiry.
    /// False when there is none: nothing else is evicted.
    private mutating func evictHalfOpen(near hash: UInt32) -> Bool {
        let home = Int(truncatingIfNeeded: hash) & mask
        var windowHasFreeSlot = false
        for offset in 0..<Self.probeLimit where tags[(home &+ offset) & mask] <= Self.tombstone {
            windowHasFreeSlot = true
            break
        }
        var victim = -1
        if windowHasFreeSlot {
            var slot = evictionCursor
            for _ in 0..<Self.reclaimBudget {
                let candidate = slot
                slot = (slot &+ 1) & mask
                if isEvictable(candidate) {
                    victim = candidate
                    break
                }
            }
            evictionCursor = slot
        } else {
            for offset in 0..<Self.probeLimit {
                let slot = (home &+ offset) & mask
                if isEvictable(slot) && (victim < 0 || expiresFirst(slot, victim)) { victim = slot }
            }
        }
        guard victim >= 0 else { return false }
        vacate(victim)
        evictions += 1
        return true
    }

    /// Whether `slot` holds an entry an insert may evict: rederivable and half-open.
    private func isEvictable(_ slot: Int) -> Bool {
        tags[slot] > Self.tombstone && entries[slot].flags & Self.rederivableFlag != 0
            && entries[slot].state.isHalfOpen
    }

    private func expiresFirst(_ slot: Int, _ other: Int) -> Bool {
        Int32(bitPattern: entries[slot].expires &- entries[other].expires) < 0
    }

    /// The number of half-open entries evicted since the last call; starts counting again from zero.
    public mutating func takeEvictions() -> Int {
        defer { evictions = 0 }
        return evictions
    }

    /// The first slot in the flow's probe window that is empty (while below capacity) or holds an expired
    /// entry; both keep every entry within reach of its home slot.
    private mutating func freeSlot(hash: UInt32, now: UInt32, mayReclaim: Bool) -> Int? {
        var slot = Int(truncatingIfNeeded: hash) & mask
        for _ in 0..<Self.probeLimit {
            if tags[slot] <= Self.tombstone {
                if count < capacity {
                    count += 1
                    return slot
                }
                // Full: no run may grow, but an expired entry elsewhere may be reclaimed to make room.
                if mayReclaim && sweep(now: now, limit: Self.reclaimBudget) > 0 {
                    return freeSlot(hash: hash, now: now, mayReclaim: false)
                }
                return nil
            }
            if !Self.isLive(entries[slot].expires, now) {
                release(slot)
                return slot  // reused in place: `count` already includes it
            }
            slot = (slot &+ 1) & mask
        }
        return nil
    }

    /// The virtual service index stored with the connection.
    @inlinable
    public func service(at slot: Int) -> UInt32 {
        precondition(slot >= 0 && slot <= mask, "connection slot out of range")
        return entries[slot].service
    }

    /// The real server index stored with the connection.
    @inlinable
    public func destination(at slot: Int) -> UInt32 {
        precondition(slot >= 0 && slot <= mask, "connection slot out of range")
        return entries[slot].destination
    }

    /// The counter cell the entry in `slot` was inserted with (`noCell` for none), counted or not: the
    /// identity of its real server.
    @inlinable
    public func cell(at slot: Int) -> UInt32 {
        precondition(slot >= 0 && slot <= mask, "connection slot out of range")
        return entries[slot].cell
    }

    /// Applies a packet: advances the TCP state machine from its flags (non-TCP: no state) and restarts the
    /// timer with the new state's timeout. `direction` is `.input` for client packets, `.output` for replies
    /// passing through the director (NAT).
    @inlinable
    public mutating func update(at slot: Int, tcpFlags: UInt8, direction: ConnectionDirection = .input, now: UInt32) {
        precondition(slot >= 0 && slot <= mask, "connection slot out of range")
        let entry = entries + slot
        var state = entry.pointee.state
        // The common case: an ESTABLISHED connection's client segment with ACK and without SYN, FIN or RST
        // stays ESTABLISHED in every table (see `TCPStateMachine.transitions`), so only the timer moves.
        if state == .established && TCPStateMachine.isPlainACK(tcpFlags) && direction == .input {
            entry.pointee.expires = now &+ timeoutByState[Int(state.rawValue)]
            return
        }
        if state != .udp {
            let table: TCPStateMachine.Table
            if direction == .output {
                entry.pointee.flags &= ~Self.inputOnlyFlag
                table = .output
            } else {
                table = entry.pointee.flags & Self.inputOnlyFlag != 0 ? .inputOnly : .input
            }
            state = TCPStateMachine.next(state, flags: tcpFlags, table: table)
            entry.pointee.state = state
            let flags = entry.pointee.flags
            if flags & Self.countedFlag != 0, let cells = counterCells {
                let active = state.isActive
                if active != (flags & Self.activeFlag != 0) {
                    cells[Int(entry.pointee.cell)].transition(toActive: active)
                    entry.pointee.flags = active ? flags | Self.activeFlag : flags & ~Self.activeFlag
                }
            }
        }
        entry.pointee.expires = now &+ timeoutByState[Int(state.rawValue)]
    }

    /// The fast path of a client packet: the live entry of `key` when the packet leaves its state as it is
    /// (a datagram, or a segment of an ESTABLISHED connection with ACK and without SYN, FIN or RST: see
    /// `update`), its timer restarted; -1 otherwise (nothing changed: the caller goes the full way, `find`
    /// then `update`).
    @inlinable @inline(__always)
    public mutating func touchSteady(_ key: FlowKey, hash: UInt32, tcpFlags: UInt8, now: UInt32) -> Int {
        // A TCP segment other than a plain ACK (a SYN above all) is never steady: no lookup for it. The flags
        // are then tested once: a TCP key finds only a TCP entry (and a UDP key a `.udp` one).
        guard key.proto != IPProtocolNumber.tcp || TCPStateMachine.isPlainACK(tcpFlags),
              let slot = find(key, hash: hash, now: now) else { return -1 }
        let entry = entries + slot
        let state = entry.pointee.state
        guard state == .udp || state == .established else { return -1 }
        entry.pointee.expires = now &+ timeoutByState[Int(state.rawValue)]
        return slot
    }

    /// The cache lines a lookup of `hash` reads, to prefetch ahead of it: the entries of the home slot and
    /// the slots after it that `find` checks directly (`directSlots` adjacent lines from `entries`), and the
    /// tags, which a longer probe and an insertion read. Near the end of the table the entry lines run past
    /// the entries (into the tags, or in a small table past its memory), not round to slot 0: a prefetch
    /// never faults, one of them is merely useless, and the common case saves the wrap.
    @inlinable @inline(__always)
    public func lookupLines(hash: UInt32) -> (entries: UnsafeRawPointer, tags: UnsafeRawPointer) {
        let slot = Int(truncatingIfNeeded: hash) & mask
        return (UnsafeRawPointer(entries + slot), UnsafeRawPointer(tags + slot))
    }

    /// Records a client packet of the entry in `slot` at `now`: true when it is the first since the second
    /// changed (`insert` counts as one), for work that a packet repeats to no effect within a second.
    @inlinable
    public mutating func noteClientPacket(at slot: Int, now: UInt32) -> Bool {
        precondition(slot >= 0 && slot <= mask, "connection slot out of range")
        let second = UInt16(truncatingIfNeeded: now)
        guard entries[slot].lastSeen != second else { return false }
        entries[slot].lastSeen = second
        return true
    }

    /// Deletes the entry in `slot` (which must hold one). May move other entries (see the type's notes).
    public mutating func remove(at slot: Int) {
        precondition(slot >= 0 && slot <= mask && tags[slot] > Self.tombstone, "no connection in this slot")
        vacate(slot)
    }

    /// Sets the expiry of the entry in `slot` (which must hold one), e.g. to keep a template alive.
    public mutating func setExpiry(at slot: Int, _ expires: UInt32) {
        precondition(isOccupied(slot), "no connection in this slot")
        entries[slot].expires = expires
    }

    /// The counter cell of the entry in `slot` (which must hold one), `noCell` when it is not counted.
    public func countedCell(at slot: Int) -> UInt32 {
        precondition(isOccupied(slot), "no connection in this slot")
        return entries[slot].flags & Self.countedFlag != 0 ? entries[slot].cell : SchedulingDestination.noCell
    }

    /// Whether the entry in `slot` (which must hold one) is a persistence template.
    public func isTemplate(at slot: Int) -> Bool {
        precondition(isOccupied(slot), "no connection in this slot")
        return entries[slot].flags & Self.templateFlag != 0
    }

    /// Whether the entry in `slot` (which must hold one) was inserted `rederivable`.
    public func isRederivable(at slot: Int) -> Bool {
        precondition(isOccupied(slot), "no connection in this slot")
        return entries[slot].flags & Self.rederivableFlag != 0
    }

    /// Whether the entry in `slot` still follows the input-only table (no reply seen; DR, TUN).
    public func isInputOnly(at slot: Int) -> Bool {
        precondition(isOccupied(slot), "no connection in this slot")
        return entries[slot].flags & Self.inputOnlyFlag != 0
    }

    /// Uncounts the entry in `slot`, if it is counted.
    @usableFromInline @inline(__always)
    mutating func release(_ slot: Int) {
        let flags = entries[slot].flags
        guard flags & Self.countedFlag != 0, let cells = counterCells else { return }
        cells[Int(entries[slot].cell)].unbind(
            template: flags & Self.templateFlag != 0, active: flags & Self.activeFlag != 0)
        entries[slot].flags = flags & ~(Self.countedFlag | Self.activeFlag)
    }

    /// Deletes every entry.
    public mutating func removeAll() {
        for slot in 0...mask where tags[slot] > Self.tombstone {
            release(slot)
            entries[slot].flags &= ~Self.occupiedFlag
        }
        tags.update(repeating: 0, count: slotCount)
        count = 0
        sweepCursor = 0
    }

    /// Slots whose tags and expiries `sweep` reads before it examines any of them.
    static let sweepChunk = 16

    /// Examines up to `limit` slots from where the last sweep stopped and reclaims the expired entries among
    /// them; returns how many it reclaimed. Call it between batches with a small limit, so a full round over
    /// the table takes a few seconds at most and `count` follows the live connections.
    @discardableResult
    public mutating func sweep(now: UInt32, limit: Int) -> Int {
        sweep(now: now, limit: limit, orphaned: { _ in false })
    }

    /// `sweep`, also reclaiming live entries whose counter cell `orphaned` names (their real server left
    /// the configuration), so they stop counting within a round of sweeps rather than at their expiry.
    @discardableResult
    public mutating func sweep(now: UInt32, limit: Int, orphaned: (UInt32) -> Bool) -> Int {
        // An empty table has nothing to reclaim: an idle worker's sweeps cost nothing.
        if count == 0 { return 0 }
        var slot = sweepCursor
        var reclaimed = 0
        var left = max(0, limit)
        while left > 0 {
            // A chunk ends at the table's end, so its slots are `slot + k` without wrapping.
            let chunk = min(min(left, Self.sweepChunk), mask &+ 1 &- slot)
            // Bit k: the chunk's k-th slot holds an entry. The tags first: a chunk without entries (most of a
            // lightly loaded table) reads no entry's line at all.
            let start = slot
            var occupied = Self.bits(chunk) { k in Self.occupiedBit(tags[start &+ k]) }
            if occupied != 0 {
                // The chunk's expiries are then read without a branch between them, so their lines (in a
                // large table, in no cache) are fetched together rather than one after another. Every slot's
                // line, in ascending order: one sequential stream, which the CPU's prefetcher runs ahead of
                // (reading only the occupied slots' lines, or each chunk's downwards, made sweeping twice as
                // slow).
                let expired = Self.bits(chunk) { k in Self.expiredBit(entries[start &+ k].expires, now) }
                // The occupied slots, lowest first (vacating one never changes whether another holds an entry).
                while occupied != 0 {
                    let k = occupied.trailingZeroBitCount
                    occupied &= occupied &- 1
                    let candidate = slot &+ k
                    if expired &>> UInt32(truncatingIfNeeded: k) & 1 != 0 || orphaned(entries[candidate].cell) {
                        vacate(candidate)
                        reclaimed += 1
                    }
                }
            }
            slot = (slot &+ chunk) & mask
            left -= chunk
        }
        sweepCursor = slot
        return reclaimed
    }

    /// Bit k of the result is `bit(k)` (0 or 1), for k below `count` (at most `sweepChunk`). A whole chunk,
    /// the common case, is a loop of constant trip count, which the compiler unrolls with constant shifts;
    /// with the count unknown it shifted by a variable, which it emulates with multiplies in vector lanes.
    @inline(__always)
    static func bits(_ count: Int, _ bit: (Int) -> UInt32) -> UInt32 {
        var bits: UInt32 = 0
        if count == sweepChunk {
            for k in 0..<sweepChunk { bits |= bit(k) &<< UInt32(truncatingIfNeeded: k) }
        } else {
            for k in 0..<count { bits |= bit(k) &<< UInt32(truncatingIfNeeded: k) }
        }
        return bits
    }

    /// Uncounts the entry and leaves a tombstone, so later entries of the run stay reachable and never move.
    /// A tombstone followed by an empty slot ends its run: it and the tombstones before it become empty.
    /// Inlined, with `release` and the cell's `unbind`: the sweep's loop otherwise calls out for each.
    @inline(__always)
    private mutating func vacate(_ slot: Int) {
        release(slot)
        entries[slot].flags &= ~Self.occupiedFlag
        tags[slot] = Self.tombstone
        count -= 1
        if tags[(slot &+ 1) & mask] == 0 {
            var hole = slot
            var left = mask
            while tags[hole] == Self.tombstone && left > 0 {
                tags[hole] = 0
                hole = (hole &- 1) & mask
                left -= 1
            }
        }
    }

    // MARK: - Reading entries (listings, tests)

    /// Whether `slot` holds an entry, live or expired.
    public func isOccupied(_ slot: Int) -> Bool {
        precondition(slot >= 0 && slot <= mask, "connection slot out of range")
        return tags[slot] > Self.tombstone
    }

    /// Whether `slot` holds an entry that is live at `now`.
    public func isLive(at slot: Int, now: UInt32) -> Bool {
        isOccupied(slot) && Self.isLive(entries[slot].expires, now)
    }

    /// The entry in `slot` (live or expired), or nil when the slot is empty.
    public func entry(at slot: Int) -> ConnectionEntry? {
        guard isOccupied(slot) else { return nil }
        let entry = entries[slot]
        return ConnectionEntry(
            slot: slot, key: entry.key, service: entry.service, destination: entry.destination, state: entry.state,
            expires: entry.expires, inputOnly: entry.flags & Self.inputOnlyFlag != 0)
    }

    /// The flow of the entry in `slot` (which must hold one).
    public func key(at slot: Int) -> FlowKey {
        precondition(isOccupied(slot), "no connection in this slot")
        return entries[slot].key
    }

    /// The state of the entry in `slot` (which must hold one).
    @inlinable
    public func state(at slot: Int) -> ConnectionState {
        precondition(slot >= 0 && slot <= mask && tags[slot] > Self.tombstone, "no connection in this slot")
        return entries[slot].state
    }

    /// The absolute expiry time of the entry in `slot` (which must hold one).
    public func expiry(at slot: Int) -> UInt32 {
        precondition(isOccupied(slot), "no connection in this slot")
        return entries[slot].expires
    }

    /// Every entry live at `now`, in slot order. Allocates: for listings, not for the packet path.
    public func liveEntries(now: UInt32) -> [ConnectionEntry] {
        var result: [ConnectionEntry] = []
        for slot in 0...mask where tags[slot] > Self.tombstone && Self.isLive(entries[slot].expires, now) {
            if let entry = entry(at: slot) { result.append(entry) }
        }
        return result
    }

    // MARK: - Helpers

    /// The 16-bit tag of a flow hash: its high half (the home slot comes from the low bits), never 0 (empty)
    /// or 1 (tombstone).
    @inlinable @inline(__always)
    static func tag(_ hash: UInt32) -> UInt16 {
        let tag = UInt16(truncatingIfNeeded: hash >> 16)
        return tag <= 1 ? 2 : tag
    }

    /// True while `now` is before `expires`, with wrap-around arithmetic.
    @inlinable @inline(__always)
    static func isLive(_ expires: UInt32, _ now: UInt32) -> Bool {
        Int32(bitPattern: expires &- now) > 0
    }

    /// 1 for a tag above `tombstone` (the slot holds an entry), else 0, computed without a branch (for `sweep`).
    @inline(__always)
    static func occupiedBit(_ tag: UInt16) -> UInt32 {
        // Carries into bit 16 exactly when the tag exceeds the tombstone.
        (UInt32(tag) &+ (0xFFFF &- UInt32(tombstone))) >> 16
    }

    /// 1 where `isLive` is false, else 0, computed without a branch (for `sweep`).
    @inline(__always)
    static func expiredBit(_ expires: UInt32, _ now: UInt32) -> UInt32 {
        // The seconds left, widened so that subtracting 1 cannot wrap: negative exactly when they are <= 0.
        // (A compare and a flag set instead is fewer instructions and, spilling flags, slower.)
        let left = Int64(Int32(bitPattern: expires &- now))
        return UInt32(truncatingIfNeeded: UInt64(bitPattern: left &- 1) >> 63)
    }

    /// Whether the entry at `entry` is the live one of `key`, whose hash is `hash`: the entry's line only.
    @inlinable @inline(__always)
    static func holds(_ entry: UnsafeMutablePointer<Entry>, _ key: FlowKey, hash: UInt32, now: UInt32) -> Bool {
        entry.pointee.hash == hash && entry.pointee.flags & occupiedFlag != 0 && sameFlow(entry.pointee.key, key)
            && isLive(entry.pointee.expires, now)
    }

    @inlinable @inline(__always)
    static func sameFlow(_ a: FlowKey, _ b: FlowKey) -> Bool {
        (a.srcLo ^ b.srcLo) | (a.srcHi ^ b.srcHi) | (a.dstLo ^ b.dstLo) | (a.dstHi ^ b.dstHi)
            | (a.portsAndProtocol ^ b.portsAndProtocol) == 0
    }
}

/// A copy of one connection-table entry, for listings and tests.
public struct ConnectionEntry: Sendable, Equatable {
    public var slot: Int
    public var key: FlowKey
    public var service: UInt32
    public var destination: UInt32
    public var state: ConnectionState
    /// Absolute expiry time in the table's seconds.
    public var expires: UInt32
    /// True while TCP follows IPVS's input-only table: inserted with `seesReplies: false` (DR, TUN) and no
    /// reply seen since.
    public var inputOnly: Bool

    public init(slot: Int, key: FlowKey, service: UInt32, destination: UInt32, state: ConnectionState,
                expires: UInt32, inputOnly: Bool) {
        self.slot = slot
        self.key = key
        self.service = service
        self.destination = destination
        self.state = state
        self.expires = expires
        self.inputOnly = inputOnly
    }

    /// Seconds left before expiry (0 once expired), as `ipvsadm -Lc` shows them.
    public func remaining(now: UInt32) -> UInt32 {
        let left = Int32(bitPattern: expires &- now)
        return left > 0 ? UInt32(left) : 0
    }
}
