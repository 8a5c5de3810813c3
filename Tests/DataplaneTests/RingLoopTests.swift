import Dataplane
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// The worker's batch loop over rings in plain memory (no socket, no root): batching, giving back unused
/// TX reservations, returning dropped frames to the fill ring, and completions back to fill.
final class RingLoopTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    private let realMAC = MACAddress("0e:00:00:00:00:0a")!

    private func engine(_ counters: WorkerCounterBlock) -> ForwardingEngine {
        let snapshot = ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.10")!, port: 80),
                            scheduler: .rr, destinations: [SnapshotDestination(weight: 1, mac: realMAC)]),
        ])
        return ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: counters)
    }

    /// Delivers `count` frames: SYNs to the service, or (`bad`) frames that are not IP.
    private func deliver(_ rings: MemoryRings, _ count: Int, firstPort: UInt16 = 40000, bad: Bool = false) -> Int {
        rings.receive(count: count) { frame, index in
            var bytes = PacketBuilder.tcp("198.51.100.1", firstPort + UInt16(index), "203.0.113.10", 80, flags: TCPFlags.syn).build()
            if bad { bytes[12] = 0x08; bytes[13] = 0x06 }  // ARP
            bytes.withUnsafeBytes { frame.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            return bytes.count
        }
    }

    func testBatchesTransmitInPlaceAndCompletionsGoBackToFill() {
        let rings = MemoryRings(frameCount: 256, ringSize: 128)
        let counters = WorkerCounterBlock()
        var engine = engine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        XCTAssertEqual(deliver(rings, 100), 100)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 64, "one batch at most")
        XCTAssertEqual(rings.txLevel, 64)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 36)
        XCTAssertEqual(rings.txLevel, 100)
        XCTAssertEqual(loop.framesInFlight, 100)
        var sent = 0
        rings.transmit { frame, length in
            XCTAssertEqual(length, 54, "no padding: 14 + 20 + 20")
            XCTAssertEqual(MACAddress(bytes: Array(UnsafeRawBufferPointer(start: frame, count: 6))), self.realMAC)
            XCTAssertEqual(frame.load(fromByteOffset: 22, as: UInt8.self), 63, "TTL decremented")
            sent += 1
        }
        XCTAssertEqual(sent, 100)
        XCTAssertEqual(rings.fillLevel, 156)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 0)
        XCTAssertEqual(rings.fillLevel, 256, "completions went back to the fill ring")
        XCTAssertEqual(loop.framesInFlight, 0)
        XCTAssertEqual(counters[.rxPackets], 100)
        XCTAssertEqual(counters[.txPackets], 100)
        XCTAssertEqual(counters[.newConnections], 100)
        XCTAssertEqual(counters[.activeConnections], 100)
    }

    func testDroppedFramesGoStraightBackToFillAndUnusedReservationsAreGivenBack() {
        let rings = MemoryRings(frameCount: 256, ringSize: 128)
        let counters = WorkerCounterBlock()
        var engine = engine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        XCTAssertEqual(deliver(rings, 10, bad: true), 10)
        XCTAssertEqual(deliver(rings, 10, firstPort: 41000), 10)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 20)
        XCTAssertEqual(counters[.dropNotIP], 10)
        XCTAssertEqual(rings.txLevel, 10, "20 reserved, 10 given back")
        XCTAssertEqual(rings.fillLevel, 256 - 20 + 10, "the dropped frames are back on the fill ring")
        // The next batch's reservation starts right after the 10 submitted: nothing was lost in between.
        XCTAssertEqual(deliver(rings, 5, firstPort: 42000), 5)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 5)
        XCTAssertEqual(rings.txLevel, 15)
        XCTAssertEqual(rings.transmit(), 15)
        XCTAssertEqual(counters[.txPackets], 15)
    }

    /// A dropped frame goes back to the fill ring at the address RX gave it, inside its chunk; received again
    /// (the rings play the kernel, which takes any address in a chunk as the chunk) it starts at the same
    /// headroom, however often it is dropped.
    func testAFrameDroppedAgainAndAgainIsReceivedAtItsChunksHeadroom() {
        let rings = MemoryRings(frameCount: 64, ringSize: 64)
        let counters = WorkerCounterBlock()
        var engine = engine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        for round in 0..<40 {
            var offsets = Set<Int>()
            let delivered = rings.receive(count: 64) { frame, _ in
                offsets.insert((frame - rings.rings.area) % Int(rings.frameSize))
                let bytes = PacketBuilder.tcp("198.51.100.1", 40000, "203.0.113.10", 80, flags: TCPFlags.syn).build()
                bytes.withUnsafeBytes { frame.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                frame.storeBytes(of: UInt16(0x0806).bigEndian, toByteOffset: 12, as: UInt16.self)  // ARP: dropped
                return bytes.count
            }
            XCTAssertEqual(delivered, 64, "round \(round)")
            XCTAssertEqual(offsets, [rings.headroom], "round \(round)")
            XCTAssertEqual(loop.turn(engine: &engine, now: 100), 64)
            XCTAssertEqual(rings.fillLevel, 64, "round \(round): every dropped frame is back")
        }
        XCTAssertEqual(counters[.dropNotIP], 40 * 64)
    }

    /// Completions go back to the fill ring in runs that end where either ring wraps: batches of uneven
    /// sizes over a completion ring half the fill ring's size move both wrap points around. Every frame must
    /// come back once, to its chunk, whatever the runs.
    func testCompletionsGoBackToFillOnceEachAcrossBothRingsWraps() {
        let rings = MemoryRings(frameCount: 64, ringSize: 32)
        let counters = WorkerCounterBlock()
        var engine = engine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        var delivered = 0
        for (round, size) in [5, 13, 32, 1, 27, 19, 31, 8, 32, 3, 29, 17, 32, 11, 23, 2].enumerated() {
            var chunks = Set<Int>()
            XCTAssertEqual(deliver(rings, size, firstPort: 41000), size)
            XCTAssertEqual(loop.turn(engine: &engine, now: 100), UInt32(size))
            XCTAssertEqual(rings.transmit { frame, _ in
                let offset = frame - rings.rings.area
                XCTAssertEqual(offset % Int(rings.frameSize), rings.headroom, "round \(round)")
                chunks.insert(offset / Int(rings.frameSize))
            }, size)
            XCTAssertEqual(chunks.count, size, "round \(round): a chunk delivered twice")
            XCTAssertEqual(loop.turn(engine: &engine, now: 100), 0)
            XCTAssertEqual(rings.fillLevel, 64, "round \(round): every completion is back on the fill ring")
            delivered += size
        }
        XCTAssertEqual(counters[.txPackets], UInt64(delivered))
    }

    func testAFlowOpenedAndUsedWithinOneBatchKeepsItsServer() {
        // The batch is parsed (and its lookups prefetched) before any frame is processed: a SYN and the
        // segments after it in the same batch must still see the connection the SYN made.
        let rings = MemoryRings(frameCount: 256, ringSize: 128)
        let counters = WorkerCounterBlock()
        let snapshot = ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.10")!, port: 80), scheduler: .rr,
                            destinations: (1...4).map { SnapshotDestination(weight: 1, mac: MACAddress(value: 0x0E00_0000_0000 | UInt64($0))) }),
        ])
        var engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        let flags = [TCPFlags.syn, TCPFlags.ack, TCPFlags.ack | TCPFlags.psh, TCPFlags.ack, TCPFlags.fin | TCPFlags.ack]
        XCTAssertEqual(rings.receive(count: 2 * flags.count) { frame, index in
            // Two flows interleaved: 40000 and 40001, each SYN, ACK, ACK+PSH, ACK, FIN+ACK.
            let bytes = PacketBuilder.tcp("198.51.100.1", 40000 + UInt16(index % 2), "203.0.113.10", 80,
                                          flags: flags[index / 2]).build()
            bytes.withUnsafeBytes { frame.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            return bytes.count
        }, 10)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 10)
        var servers: [[UInt64]] = [[], []]
        var index = 0
        XCTAssertEqual(rings.transmit { frame, _ in
            servers[index % 2].append(MACAddress(bytes: Array(UnsafeRawBufferPointer(start: frame, count: 6)))!.value)
            index += 1
        }, 10)
        XCTAssertEqual(Set(servers[0]).count, 1, "every segment of a flow to the server its SYN got")
        XCTAssertEqual(Set(servers[1]).count, 1)
        XCTAssertNotEqual(servers[0][0], servers[1][0], "round robin")
        XCTAssertEqual(counters[.newConnections], 2)
        XCTAssertEqual(counters[.dropTCPWithoutConnection], 0)
        let states = engine.listConnections(now: 100).map(\.state)
        XCTAssertEqual(states, [.finWait, .finWait])
    }

    func testAFullTXRingDropsAndRecyclesTheFrames() {
        let rings = MemoryRings(frameCount: 256, ringSize: 64)
        let counters = WorkerCounterBlock()
        var engine = engine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        XCTAssertEqual(deliver(rings, 64), 64)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 64)
        XCTAssertEqual(rings.txLevel, 64, "TX full, and the kernel takes nothing")
        XCTAssertEqual(deliver(rings, 8, firstPort: 43000), 8)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 8)
        XCTAssertEqual(counters[.dropTXRingFull], 8)
        XCTAssertEqual(rings.fillLevel, 256 - 64, "the 8 frames went back to fill")
        XCTAssertEqual(counters[.txKicks], 0, "no wake-up asked, none made")
    }

    func testWakeUpsAreMadeOnlyWhenTheRingsAskForThem() {
        let rings = MemoryRings(frameCount: 256, ringSize: 128)
        let counters = WorkerCounterBlock()
        var engine = engine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        rings.setNeedsWakeup(true)
        XCTAssertEqual(deliver(rings, 4), 4)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100), 4)
        XCTAssertEqual(counters[.txKicks], 1)
        XCTAssertEqual(counters[.txKickErrors], 1, "there is no socket behind these rings")
        XCTAssertEqual(counters[.rxWakeups], 1)
    }

    // MARK: Fragments held for their first

    private func fragmentEngine(_ counters: WorkerCounterBlock) -> ForwardingEngine {
        let snapshot = ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
            SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress("203.0.113.10")!, port: 53),
                            scheduler: .rr, destinations: [SnapshotDestination(weight: 1, mac: realMAC)]),
        ])
        return ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: counters)
    }

    /// Fragments of a 3000-byte datagram (identification `id`, from client port `port`): first, middle, last.
    private func datagram(id: UInt32, port: UInt16 = 40000) -> [[UInt8]] {
        PacketBuilder.udp("198.51.100.1", port, "203.0.113.10", 53, payload: [UInt8](repeating: 5, count: 3000))
            .fragments(dataPerFragment: 1480, identification: id)
    }

    private func deliver(_ rings: MemoryRings, _ frames: [[UInt8]]) {
        XCTAssertEqual(rings.receive(count: frames.count) { frame, index in
            frames[index].withUnsafeBytes { frame.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            return frames[index].count
        }, frames.count)
    }

    func testFragmentsBeforeTheirFirstAreHeldAndSentWhenItComes() {
        let rings = MemoryRings(frameCount: 256, ringSize: 128)
        let counters = WorkerCounterBlock()
        var engine = fragmentEngine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        let fragments = datagram(id: 1)
        deliver(rings, [fragments[2], fragments[1]])
        XCTAssertEqual(loop.turn(engine: &engine, now: 100, milliseconds: 100_000), 2)
        XCTAssertEqual(loop.framesHeld, 2)
        XCTAssertEqual(rings.txLevel, 0)
        XCTAssertEqual(rings.fillLevel, 254, "held frames stay out of the fill ring")
        // Nothing new: the held ones are offered again, and wait.
        XCTAssertEqual(loop.turn(engine: &engine, now: 100, milliseconds: 100_050), 0)
        XCTAssertEqual(loop.framesHeld, 2)
        deliver(rings, [fragments[0]])
        XCTAssertEqual(loop.turn(engine: &engine, now: 100, milliseconds: 100_060), 1)
        XCTAssertEqual(loop.framesHeld, 0)
        var lengths: [Int] = []
        rings.transmit { _, length in lengths.append(length) }
        XCTAssertEqual(lengths, [fragments[0].count, fragments[2].count, fragments[1].count], "the first, then the held in order")
        XCTAssertEqual(counters[.fragmentsHeld], 2)
        XCTAssertEqual(counters[.fragmentsFollowed], 2)
        XCTAssertEqual(counters[.txPackets], 3)
        _ = loop.turn(engine: &engine, now: 100, milliseconds: 100_070)
        XCTAssertEqual(rings.fillLevel, 256, "every frame came back")
    }

    func testAFragmentWhoseFirstNeverComesIsDroppedAndCountedAfterTheHoldTime() {
        let rings = MemoryRings(frameCount: 256, ringSize: 128)
        let counters = WorkerCounterBlock()
        var engine = fragmentEngine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        defer { loop.drainTransmissions() }
        deliver(rings, [datagram(id: 2)[1]])
        XCTAssertEqual(loop.turn(engine: &engine, now: 100, milliseconds: 100_000), 1)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100, milliseconds: 100_000 + RingLoop.holdMilliseconds - 1), 0)
        XCTAssertEqual(loop.framesHeld, 1)
        XCTAssertEqual(counters[.dropFragmentWithoutFirst], 0)
        XCTAssertEqual(loop.turn(engine: &engine, now: 100, milliseconds: 100_000 + RingLoop.holdMilliseconds), 0)
        XCTAssertEqual(loop.framesHeld, 0)
        XCTAssertEqual(counters[.dropFragmentWithoutFirst], 1)
        XCTAssertEqual(rings.fillLevel, 256, "the frame went back to the fill ring")
        XCTAssertEqual(rings.txLevel, 0)
    }

    func testAFullHoldDropsAndCountsTheNextFragment() {
        let rings = MemoryRings(frameCount: 256, ringSize: 128)
        let counters = WorkerCounterBlock()
        var engine = fragmentEngine(counters)
        var loop = RingLoop(rings: rings.rings, counters: counters)
        let later = (0..<RingLoop.holdCapacity + 3).map { datagram(id: UInt32(100 + $0))[1] }
        deliver(rings, Array(later.prefix(60)))
        _ = loop.turn(engine: &engine, now: 100, milliseconds: 100_000)
        deliver(rings, Array(later.dropFirst(60)))
        _ = loop.turn(engine: &engine, now: 100, milliseconds: 100_000)
        XCTAssertEqual(loop.framesHeld, RingLoop.holdCapacity)
        XCTAssertEqual(counters[.dropFragmentHoldFull], 3)
        XCTAssertEqual(rings.fillLevel, UInt32(256 - RingLoop.holdCapacity))
        loop.drainTransmissions()
        XCTAssertEqual(counters[.dropFragmentWithoutFirst], UInt64(RingLoop.holdCapacity), "still held when the worker stops")
    }
}
