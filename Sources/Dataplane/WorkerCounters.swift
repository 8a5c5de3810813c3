import Synchronization

/// Everything a worker counts, the unglamorous events included. The last case sizes the block.
public enum WorkerCounter: Int, CaseIterable, Sendable {
    case rxPackets, rxBytes, txPackets, txBytes
    case newConnections
    /// A gauge, not a count: connections in the worker's table (live, or expired and not yet reclaimed),
    /// written after each sweep.
    case activeConnections
    /// Forwarded without connection state because the table had no free slot (to the flow's stable choice,
    /// so it keeps its server), or a RST of such a flow.
    case connectionTableFull
    // Drops, by reason. The first six mirror Packet.ParseStatus.
    case dropTruncated, dropNotIP, dropFragment, dropUnsupportedProtocol, dropMalformed, dropBadIPv4Checksum
    /// Steered here but neither a service of the snapshot nor a translated connection's possible reply (a
    /// service deleted between the program's look-up and the worker's).
    case dropNoService
    /// The service has no real server that can take a new connection (all weight 0 or unresolved).
    case dropNoDestination
    /// The connection's real server has no known MAC address (neighbour failed).
    case dropUnresolvedDestination
    /// A TCP segment other than SYN with no connection (as IPVS, never scheduled).
    case dropTCPWithoutConnection
    case dropHopLimitExceeded
    case dropTXRingFull
    // Translation (NAT, FULLNAT), tunnelling and ICMP.
    /// Replies of NAT/FULLNAT connections translated back to the client; of those, connections of another worker.
    case repliesTranslated, repliesOfOtherWorkers
    /// ICMP errors about a connection, passed on (to its real server, or translated back to its client).
    case icmpErrorsForwarded
    /// "Fragmentation needed" / "packet too big" sent back because a tunnelled packet would exceed the MTU.
    case icmpTooBigSent
    /// A packet addressed like a reply (from a NAT real server, to a local address) with no connection.
    case dropNoReplyState
    /// An ICMP error whose quoted packet belongs to no connection.
    case dropICMPWithoutConnection
    /// FULLNAT found no free port on the service's local addresses (or the service has none of the family).
    case dropLocalPortsExhausted
    /// The shared reply index had no free entry near the connection's hash.
    case dropReplyIndexFull
    /// An IPv4 packet without DF that would exceed the MTU once tunnelled.
    case dropFragmentationNeeded
    /// The frame has too little headroom for the tunnel header (cannot happen with AF_XDP's 256 bytes).
    case dropNoHeadroom
    /// Tunnelling or an ICMP error needs a director address of a family the interface does not have.
    case dropNoSourceAddress
    // Fragments (`dropFragment` above: later fragments of a datagram whose first fragment was dropped).
    /// Later fragments forwarded the way their datagram's first fragment went.
    case fragmentsFollowed
    /// Later fragments that came before their first and were held for it.
    case fragmentsHeld
    /// Held fragments whose first fragment never came within the hold time (or the worker stopped).
    case dropFragmentWithoutFirst
    /// Later fragments that came before their first while the worker's hold was full.
    case dropFragmentHoldFull
    /// First fragments forwarded whose record found no free entry in the fragment table (their later
    /// fragments then count in `dropFragmentWithoutFirst`).
    case fragmentTableFull
    // Ring and wake-up events.
    case emptyPolls, fillRingShortfalls, rxWakeups, txKicks, txKickErrors
    // The kernel's counts for the worker's socket (`XDP_STATISTICS`), copied in by the control thread, the
    // only writer of these slots, once a second and on request: frames redirected to the socket and lost
    // before the worker saw them, and descriptors the kernel refused.
    /// The RX ring was full: the worker fell behind (`rx_ring_full`).
    case dropSocketRXRingFull
    /// No free frame in the fill ring, or a frame longer than a UMEM frame (`rx_dropped`).
    case dropSocketRX
    /// TX descriptors the kernel refused; those frames were not sent (`tx_invalid_descs`).
    case dropSocketTXInvalid
    /// Times the kernel found the fill ring empty (`rx_fill_ring_empty_descs`); the frames lost then are in
    /// `dropSocketRX`.
    case socketFillRingEmpty
    /// Fill-ring addresses the kernel refused (`rx_invalid_descs`).
    case socketRXInvalid
    /// Times the kernel found nothing to send when woken (`tx_ring_empty_descs`).
    case socketTXRingEmpty
    // New counters go last: the control socket carries the counters by position, and a CLI older than the
    // daemon keeps the ones it knows.
    /// Of `icmpErrorsForwarded`, errors towards a real server about a connection this worker does not hold,
    /// found in the shared `FlowServerIndex` (another worker's: the error came from a third address, so on
    /// another queue than its connection).
    case icmpErrorsOfOtherWorkers
    /// A half-open connection placed by its flow's stable choice, evicted from a full table for a new one
    /// (spoofed SYNs evicting each other, mostly); the flow's next segment makes it again, on the same server.
    case halfOpenEvicted
    /// Connections made at a segment other than a SYN: a flow forwarded without connection (full table) or
    /// whose half-open connection was evicted, tracked again; or a consistent-hash service's flow met mid-way.
    case midFlowConnections
    /// Frames that came with the XDP program's description (`FrameMetadata`): not parsed again, their service
    /// not looked up again. The rest were parsed in full (no metadata: a reply of another kind, an ICMP error,
    /// a fragment, a frame the program found inconsistent, or a driver without XDP metadata).
    case framesDescribed
    /// Of `framesDescribed`, frames whose named service is not this snapshot's at that index (a reload
    /// between the program's map and the workers' snapshot, or a map out of step with it): looked up instead.
    case describedServiceMismatches

    /// snake_case for listings, JSON and metrics; an acronym stays one word (`dropNotIP` → `drop_not_ip`,
    /// `dropTXRingFull` → `drop_tx_ring_full`, `dropBadIPv4Checksum` → `drop_bad_ipv4_checksum`).
    public var name: String {
        let letters = Array(String(describing: self).replacingOccurrences(of: "IPv4", with: "Ipv4"))
        var result = ""
        for (index, letter) in letters.enumerated() {
            if letter.isUppercase && index > 0 {
                let previous = letters[index - 1]
                let next = index + 1 < letters.count ? letters[index + 1] : nil
                if !previous.isUppercase || next?.isLowercase == true { result.append("_") }
            }
            result.append(Character(letter.lowercased()))
        }
        return result
    }
}

/// One worker's counters: a cache-line-aligned block written by that worker alone (relaxed loads and
/// stores, no read-modify-write), read by anyone.
public final class WorkerCounterBlock: @unchecked Sendable {
    let base: UnsafeMutablePointer<Atomic<UInt64>>
    private static let slots = (WorkerCounter.allCases.count + 7) / 8 * 8

    public init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Self.slots * 8, alignment: 64)
        base = raw.bindMemory(to: Atomic<UInt64>.self, capacity: Self.slots)
        for i in 0..<Self.slots { (base + i).initialize(to: Atomic(0)) }
    }

    deinit {
        base.deinitialize(count: Self.slots)
        UnsafeMutableRawPointer(base).deallocate()
    }

    public subscript(counter: WorkerCounter) -> UInt64 { base[counter.rawValue].load(ordering: .relaxed) }

    public func values() -> [UInt64] { WorkerCounter.allCases.map { self[$0] } }

    /// Copies the kernel's counts for the worker's socket into their slots. The control thread alone calls
    /// it (the worker never writes these slots), so each slot keeps a single writer.
    public func record(_ socket: XSKSocketStatistics) {
        writer.set(.dropSocketRXRingFull, socket.rxRingFull)
        writer.set(.dropSocketRX, socket.rxDropped)
        writer.set(.dropSocketTXInvalid, socket.txInvalidDescriptors)
        writer.set(.socketFillRingEmpty, socket.fillRingEmpty)
        writer.set(.socketRXInvalid, socket.rxInvalidDescriptors)
        writer.set(.socketTXRingEmpty, socket.txRingEmpty)
    }

    /// A trivial handle for the hot path (no ARC when copied).
    var writer: CounterWriter { CounterWriter(base: base) }
}

/// The single writer's view of a counter block.
struct CounterWriter {
    let base: UnsafeMutablePointer<Atomic<UInt64>>

    @inline(__always)
    func set(_ counter: WorkerCounter, _ value: UInt64) {
        base[counter.rawValue].store(value, ordering: .relaxed)
    }

    @inline(__always)
    func add(_ counter: WorkerCounter, _ amount: UInt64 = 1) {
        let slot = base + counter.rawValue
        slot.pointee.store(slot.pointee.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }
}

/// What the kernel counts for one AF_XDP socket (`struct xdp_statistics`), cumulative since the socket opened.
public struct XSKSocketStatistics: Equatable, Sendable {
    /// Redirected frames dropped: longer than a frame, or no free frame in the fill ring (`rx_dropped`).
    public var rxDropped: UInt64
    /// Fill-ring addresses the kernel refused (`rx_invalid_descs`).
    public var rxInvalidDescriptors: UInt64
    /// TX descriptors the kernel refused: those frames were not sent (`tx_invalid_descs`).
    public var txInvalidDescriptors: UInt64
    /// Redirected frames dropped because the RX ring was full: the worker fell behind (`rx_ring_full`).
    public var rxRingFull: UInt64
    /// Times the kernel found the fill ring empty (`rx_fill_ring_empty_descs`): explains part of `rxDropped`.
    public var fillRingEmpty: UInt64
    /// Times the kernel found the TX ring empty when woken (`tx_ring_empty_descs`).
    public var txRingEmpty: UInt64

    public init(rxDropped: UInt64 = 0, rxInvalidDescriptors: UInt64 = 0, txInvalidDescriptors: UInt64 = 0,
                rxRingFull: UInt64 = 0, fillRingEmpty: UInt64 = 0, txRingEmpty: UInt64 = 0) {
        self.rxDropped = rxDropped
        self.rxInvalidDescriptors = rxInvalidDescriptors
        self.txInvalidDescriptors = txInvalidDescriptors
        self.rxRingFull = rxRingFull
        self.fillRingEmpty = fillRingEmpty
        self.txRingEmpty = txRingEmpty
    }
}
