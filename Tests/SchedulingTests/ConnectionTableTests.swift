import Packet
@testable import Scheduling
import XCTest

private let syn = TCPStateMachine.syn
private let ack = TCPStateMachine.ack
private let fin = TCPStateMachine.fin
private let rst = TCPStateMachine.rst
private let psh = TCPStateMachine.psh

private func tcpFlow(_ n: UInt32, port: UInt16 = 1234) -> FlowKey {
    FlowKey(source: .v4(0x0A00_0000 | n), sourcePort: port, destination: .v4(0xC633_6401), destinationPort: 80,
            proto: IPProtocolNumber.tcp)
}

private func udpFlow(_ n: UInt32) -> FlowKey {
    FlowKey(source: .v4(0x0A00_0000 | n), sourcePort: 5353, destination: .v4(0xC633_6401), destinationPort: 53,
            proto: IPProtocolNumber.udp)
}

final class ConnectionTableTests: XCTestCase {
    func testEntryIsOneCacheLine() {
        XCTAssertTrue(_isPOD(ConnectionTable.Entry.self))
        XCTAssertEqual(MemoryLayout<ConnectionTable.Entry>.stride, 64)
        XCTAssertEqual(ConnectionTable(capacity: 1).slotCount, 64)
        XCTAssertEqual(ConnectionTable(capacity: 33).slotCount, 128)
    }

    func testInsertAndFind() throws {
        var table = ConnectionTable(capacity: 100)
        XCTAssertEqual(table.capacity, 100)
        XCTAssertGreaterThanOrEqual(table.slotCount, 200)
        XCTAssertEqual(table.slotCount & (table.slotCount - 1), 0)
        let key = tcpFlow(1)
        XCTAssertNil(table.find(key, now: 1000))
        let slot = try XCTUnwrap(table.insert(key, service: 7, destination: 3, tcpFlags: syn, now: 1000))
        XCTAssertEqual(table.find(key, now: 1000), slot)
        XCTAssertEqual(table.service(at: slot), 7)
        XCTAssertEqual(table.destination(at: slot), 3)
        XCTAssertEqual(table.state(at: slot), .synReceived)
        XCTAssertEqual(table.expiry(at: slot), 1060)
        XCTAssertEqual(table.key(at: slot), key)
        XCTAssertEqual(table.count, 1)
        XCTAssertNil(table.find(tcpFlow(2), now: 1000))
        XCTAssertNil(table.find(tcpFlow(1, port: 1235), now: 1000))
        // Same addresses and ports, other protocol: another flow.
        var udp = key
        udp.proto = IPProtocolNumber.udp
        XCTAssertNil(table.find(udp, now: 1000))
        let entry = try XCTUnwrap(table.entry(at: slot))
        XCTAssertEqual(entry, ConnectionEntry(slot: slot, key: key, service: 7, destination: 3, state: .synReceived,
                                              expires: 1060, inputOnly: true))
        XCTAssertEqual(entry.remaining(now: 1000), 60)
        XCTAssertEqual(entry.remaining(now: 2000), 0)
        XCTAssertEqual(table.liveEntries(now: 1000), [entry])
    }

    func testRemovedEntryIsNotFoundInItsHomeSlot() throws {
        // A lookup decides a hit in the home slot from the entry alone: a removed entry, whose key and hash
        // stay in the slot, must not be found there, nor after `removeAll`.
        var table = ConnectionTable(capacity: 16)
        let key = tcpFlow(1)
        let slot = try XCTUnwrap(table.insert(key, service: 0, destination: 0, tcpFlags: syn, now: 100))
        XCTAssertEqual(slot, Int(key.flowHash) & (table.slotCount - 1))
        table.remove(at: slot)
        XCTAssertNil(table.find(key, now: 100))
        XCTAssertEqual(table.insert(key, service: 0, destination: 1, tcpFlags: syn, now: 100), slot)
        XCTAssertEqual(table.find(key, now: 100), slot)
        table.removeAll()
        XCTAssertNil(table.find(key, now: 100))
        // Reclaimed by the sweep once expired: not found either, even at a clock that wrapped back.
        _ = try XCTUnwrap(table.insert(key, service: 0, destination: 0, tcpFlags: syn, now: 100))
        XCTAssertEqual(table.sweep(now: 200, limit: table.slotCount), 1)
        XCTAssertNil(table.find(key, now: 100))
    }

    func testTouchSteadyMovesOnlyTheTimerOfAnUnchangedState() throws {
        var table = ConnectionTable(capacity: 16)
        let key = tcpFlow(1), hash = tcpFlow(1).flowHash
        let slot = try XCTUnwrap(table.insert(key, service: 0, destination: 0, tcpFlags: syn, now: 100))
        // SYN_RECV + ACK changes the state: not the fast path, nothing touched.
        XCTAssertEqual(table.touchSteady(key, hash: hash, tcpFlags: ack, now: 110), -1)
        XCTAssertEqual(table.expiry(at: slot), 160)
        table.update(at: slot, tcpFlags: ack, now: 110)
        XCTAssertEqual(table.state(at: slot), .established)
        XCTAssertEqual(table.touchSteady(key, hash: hash, tcpFlags: ack | psh, now: 120), slot)
        XCTAssertEqual(table.expiry(at: slot), 120 + ConnectionTimeouts().tcpEstablished)
        for flags in [syn, fin | ack, rst, ack | syn] {
            XCTAssertEqual(table.touchSteady(key, hash: hash, tcpFlags: flags, now: 130), -1, "flags \(flags)")
        }
        XCTAssertEqual(table.touchSteady(tcpFlow(2), hash: tcpFlow(2).flowHash, tcpFlags: ack, now: 130), -1)
        let datagram = udpFlow(3)
        let udpSlot = try XCTUnwrap(table.insert(datagram, service: 0, destination: 0, tcpFlags: 0, now: 100))
        XCTAssertEqual(table.touchSteady(datagram, hash: datagram.flowHash, tcpFlags: 0, now: 140), udpSlot)
        XCTAssertEqual(table.expiry(at: udpSlot), 140 + ConnectionTimeouts().udp)
    }

    func testExpiryAtExactBoundary() throws {
        var table = ConnectionTable(capacity: 16)
        let slot = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: syn, now: 500))
        XCTAssertEqual(table.find(tcpFlow(1), now: 559), slot)
        XCTAssertTrue(table.isLive(at: slot, now: 559))
        XCTAssertNil(table.find(tcpFlow(1), now: 560))
        XCTAssertFalse(table.isLive(at: slot, now: 560))
        XCTAssertTrue(table.isOccupied(slot))  // expired, not yet reclaimed
        XCTAssertEqual(table.count, 1)
        XCTAssertEqual(table.liveEntries(now: 560), [])
    }

    func testExpiryAcrossClockWrap() throws {
        var table = ConnectionTable(capacity: 16)
        let start = UInt32.max - 20
        let slot = try XCTUnwrap(table.insert(udpFlow(1), service: 0, destination: 0, tcpFlags: 0, now: start))
        XCTAssertEqual(table.expiry(at: slot), start &+ 300)
        XCTAssertEqual(table.find(udpFlow(1), now: start &+ 299), slot)
        XCTAssertNil(table.find(udpFlow(1), now: start &+ 300))
    }

    /// Direct routing: the director sees only the client, IPVS's input-only table.
    func testInputOnlyHandshakeAndClose() throws {
        var table = ConnectionTable(capacity: 16)
        let key = tcpFlow(1)
        let slot = try XCTUnwrap(table.insert(key, service: 0, destination: 1, tcpFlags: syn, now: 0))
        XCTAssertEqual(table.state(at: slot), .synReceived)
        XCTAssertEqual(table.expiry(at: slot), 60)

        table.update(at: slot, tcpFlags: ack, now: 10)
        XCTAssertEqual(table.state(at: slot), .established)
        XCTAssertEqual(table.expiry(at: slot), 910)
        table.update(at: slot, tcpFlags: ack | psh, now: 20)
        XCTAssertEqual(table.state(at: slot), .established)
        XCTAssertEqual(table.expiry(at: slot), 920)
        XCTAssertEqual(table.find(key, now: 919), slot)
        XCTAssertNil(table.find(key, now: 920))

        // Client FIN: the server's half is never seen, so FIN_WAIT (not CLOSE_WAIT as with replies).
        table.update(at: slot, tcpFlags: fin | ack, now: 30)
        XCTAssertEqual(table.state(at: slot), .finWait)
        XCTAssertEqual(table.expiry(at: slot), 150)
        table.update(at: slot, tcpFlags: ack, now: 40)
        XCTAssertEqual(table.state(at: slot), .finWait)
        XCTAssertEqual(table.expiry(at: slot), 160)
        XCTAssertEqual(table.find(key, now: 159), slot)
        XCTAssertNil(table.find(key, now: 160))
    }

    func testResetMovesToCloseWithShortTimeout() throws {
        var table = ConnectionTable(capacity: 16)
        let slot = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: syn, now: 0))
        table.update(at: slot, tcpFlags: ack, now: 1)
        table.update(at: slot, tcpFlags: rst | ack, now: 100)
        XCTAssertEqual(table.state(at: slot), .close)
        XCTAssertEqual(table.expiry(at: slot), 110)
        XCTAssertEqual(table.find(tcpFlow(1), now: 109), slot)
        XCTAssertNil(table.find(tcpFlow(1), now: 110))
        // RST takes priority over every other flag.
        table.update(at: slot, tcpFlags: rst | syn | fin | ack, now: 105)
        XCTAssertEqual(table.state(at: slot), .close)
    }

    func testResetInSynReceivedStaysAsIPVSDoes() throws {
        var table = ConnectionTable(capacity: 16)
        let slot = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: syn, now: 0))
        table.update(at: slot, tcpFlags: rst, now: 5)
        XCTAssertEqual(table.state(at: slot), .synReceived)
        XCTAssertEqual(table.expiry(at: slot), 65)
    }

    func testFirstPacketWithoutSynAndOddFlags() throws {
        var table = ConnectionTable(capacity: 16)
        // A mid-stream ACK (sloppy scheduling, or state lost): NONE + ACK is ESTABLISHED.
        let a = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: ack, now: 0))
        XCTAssertEqual(table.state(at: a), .established)
        XCTAssertEqual(table.expiry(at: a), 900)
        // A first RST or FIN closes; no SYN/FIN/ACK/RST at all also means CLOSE.
        let b = try XCTUnwrap(table.insert(tcpFlow(2), service: 0, destination: 0, tcpFlags: rst, now: 0))
        XCTAssertEqual(table.state(at: b), .close)
        let c = try XCTUnwrap(table.insert(tcpFlow(3), service: 0, destination: 0, tcpFlags: fin, now: 0))
        XCTAssertEqual(table.state(at: c), .close)
        let d = try XCTUnwrap(table.insert(tcpFlow(4), service: 0, destination: 0, tcpFlags: psh, now: 0))
        XCTAssertEqual(table.state(at: d), .close)
        XCTAssertEqual(table.expiry(at: d), 10)
        table.update(at: a, tcpFlags: 0, now: 1)
        XCTAssertEqual(table.state(at: a), .close)
    }

    func testSynReopensClosedConnection() throws {
        var table = ConnectionTable(capacity: 16)
        let slot = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: syn, now: 0))
        table.update(at: slot, tcpFlags: ack, now: 1)
        table.update(at: slot, tcpFlags: fin, now: 2)
        XCTAssertEqual(table.state(at: slot), .finWait)
        table.update(at: slot, tcpFlags: fin | ack, now: 3)  // FIN again in FIN_WAIT: stays
        XCTAssertEqual(table.state(at: slot), .finWait)
        table.update(at: slot, tcpFlags: syn, now: 4)
        XCTAssertEqual(table.state(at: slot), .synReceived)
        // SYN while established does not reset the state.
        table.update(at: slot, tcpFlags: ack, now: 5)
        table.update(at: slot, tcpFlags: syn, now: 6)
        XCTAssertEqual(table.state(at: slot), .established)
    }

    /// NAT: replies pass through the director; IPVS's input and output tables.
    func testBothDirections() throws {
        var table = ConnectionTable(capacity: 16)
        let slot = try XCTUnwrap(
            table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: syn, now: 0, seesReplies: true))
        XCTAssertEqual(table.entry(at: slot)?.inputOnly, false)
        XCTAssertEqual(table.state(at: slot), .synReceived)
        table.update(at: slot, tcpFlags: syn | ack, direction: .output, now: 1)
        XCTAssertEqual(table.state(at: slot), .synReceived)
        table.update(at: slot, tcpFlags: ack, now: 2)
        XCTAssertEqual(table.state(at: slot), .established)
        // Client closes first: CLOSE_WAIT (60 s), then the server's FIN: TIME_WAIT (120 s).
        table.update(at: slot, tcpFlags: fin | ack, now: 10)
        XCTAssertEqual(table.state(at: slot), .closeWait)
        XCTAssertEqual(table.expiry(at: slot), 70)
        table.update(at: slot, tcpFlags: fin | ack, direction: .output, now: 11)
        XCTAssertEqual(table.state(at: slot), .timeWait)
        XCTAssertEqual(table.expiry(at: slot), 131)
        table.update(at: slot, tcpFlags: ack, now: 12)
        XCTAssertEqual(table.state(at: slot), .timeWait)

        // Server closes first: output FIN from ESTABLISHED is FIN_WAIT.
        let other = try XCTUnwrap(
            table.insert(tcpFlow(2), service: 0, destination: 0, tcpFlags: syn, now: 0, seesReplies: true))
        table.update(at: other, tcpFlags: ack, now: 1)
        table.update(at: other, tcpFlags: fin | ack, direction: .output, now: 2)
        XCTAssertEqual(table.state(at: other), .finWait)
    }

    func testReplyMovesInputOnlyConnectionToBothTables() throws {
        var table = ConnectionTable(capacity: 16)
        let slot = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: syn, now: 0))
        XCTAssertEqual(table.entry(at: slot)?.inputOnly, true)
        table.update(at: slot, tcpFlags: ack, now: 1)
        table.update(at: slot, tcpFlags: ack, direction: .output, now: 2)
        XCTAssertEqual(table.entry(at: slot)?.inputOnly, false)
        table.update(at: slot, tcpFlags: fin, now: 3)
        XCTAssertEqual(table.state(at: slot), .closeWait)
    }

    func testStateMachineFlagPriority() {
        // RST, then SYN, then FIN, then ACK.
        XCTAssertEqual(TCPStateMachine.next(.established, flags: rst | syn, table: .inputOnly), .close)
        XCTAssertEqual(TCPStateMachine.next(.initial, flags: syn | fin, table: .inputOnly), .synReceived)
        XCTAssertEqual(TCPStateMachine.next(.established, flags: fin | ack, table: .inputOnly), .finWait)
        XCTAssertEqual(TCPStateMachine.next(.synReceived, flags: ack | psh, table: .inputOnly), .established)
        XCTAssertEqual(TCPStateMachine.next(.udp, flags: syn, table: .input), .udp)
        XCTAssertEqual(TCPStateMachine.next(.udp, flags: 0, table: .input), .udp)
        // Where the input-only table differs from the input table.
        XCTAssertEqual(TCPStateMachine.next(.established, flags: fin, table: .input), .closeWait)
        XCTAssertEqual(TCPStateMachine.next(.finWait, flags: fin, table: .input), .timeWait)
        XCTAssertEqual(TCPStateMachine.next(.finWait, flags: fin, table: .inputOnly), .finWait)
        XCTAssertEqual(TCPStateMachine.next(.synAck, flags: rst, table: .input), .synReceived)
        XCTAssertEqual(TCPStateMachine.next(.synAck, flags: rst, table: .inputOnly), .close)
        // A few of the output table.
        XCTAssertEqual(TCPStateMachine.next(.initial, flags: syn, table: .output), .synSent)
        XCTAssertEqual(TCPStateMachine.next(.listen, flags: ack, table: .output), .established)
        XCTAssertEqual(TCPStateMachine.next(.timeWait, flags: rst, table: .output), .timeWait)
        XCTAssertEqual(TCPStateMachine.next(.lastAck, flags: ack, table: .output), .lastAck)
        XCTAssertEqual(TCPStateMachine.next(.lastAck, flags: ack, table: .input), .close)
    }

    func testStateNamesAndActivity() {
        XCTAssertEqual(ConnectionState.allCases.map(\.ipvsName),
                       ["NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE",
                        "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK", "UDP"])
        XCTAssertEqual(ConnectionState.allCases.filter(\.isActive), [.established])
    }

    func testUDPRefreshes() throws {
        var table = ConnectionTable(capacity: 16)
        let key = udpFlow(1)
        let slot = try XCTUnwrap(table.insert(key, service: 1, destination: 2, tcpFlags: 0, now: 0))
        XCTAssertEqual(table.state(at: slot), .udp)
        XCTAssertEqual(table.expiry(at: slot), 300)
        table.update(at: slot, tcpFlags: 0, now: 299)
        XCTAssertEqual(table.expiry(at: slot), 599)
        // TCP flag bits mean nothing to UDP.
        table.update(at: slot, tcpFlags: rst, now: 299)
        XCTAssertEqual(table.state(at: slot), .udp)
        XCTAssertEqual(table.find(key, now: 598), slot)
        XCTAssertNil(table.find(key, now: 599))
    }

    func testTimeoutsAreConfigurable() throws {
        var table = ConnectionTable(capacity: 16, timeouts: ConnectionTimeouts(tcpEstablished: 50, tcpFin: 7, udp: 9))
        let tcp = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 0, tcpFlags: ack, now: 0))
        XCTAssertEqual(table.expiry(at: tcp), 50)
        table.update(at: tcp, tcpFlags: fin, now: 1)
        XCTAssertEqual(table.expiry(at: tcp), 8)
        let udp = try XCTUnwrap(table.insert(udpFlow(1), service: 0, destination: 0, tcpFlags: 0, now: 0))
        XCTAssertEqual(table.expiry(at: udp), 9)
        // New values apply from the next packet on.
        table.timeouts.udp = 30
        XCTAssertEqual(table.expiry(at: udp), 9)
        table.update(at: udp, tcpFlags: 0, now: 5)
        XCTAssertEqual(table.expiry(at: udp), 35)
        XCTAssertEqual(ConnectionTimeouts().seconds(for: .established), 900)
        XCTAssertEqual(ConnectionTimeouts().seconds(for: .finWait), 120)
        XCTAssertEqual(ConnectionTimeouts().seconds(for: .udp), 300)
        XCTAssertEqual(ConnectionTimeouts().seconds(for: .close), 10)
        XCTAssertEqual(ConnectionTimeouts().seconds(for: .synReceived), 60)
    }

    func testExpiredSlotIsReused() throws {
        var table = ConnectionTable(capacity: 16)
        let first = try XCTUnwrap(table.insert(udpFlow(1), service: 0, destination: 1, tcpFlags: 0, now: 0))
        XCTAssertNil(table.find(udpFlow(1), now: 300))
        // The same flow again lands in its old (expired) slot; nothing grows.
        let again = try XCTUnwrap(table.insert(udpFlow(1), service: 0, destination: 2, tcpFlags: 0, now: 300))
        XCTAssertEqual(again, first)
        XCTAssertEqual(table.count, 1)
        XCTAssertEqual(table.destination(at: again), 2)
        XCTAssertEqual(table.find(udpFlow(1), now: 300), again)
    }

    func testCapacityExhaustionKeepsLiveEntries() throws {
        var table = ConnectionTable(capacity: 16)
        var slots: [FlowKey: Int] = [:]
        for n in 0..<8 {
            slots[udpFlow(UInt32(n))] = try XCTUnwrap(
                table.insert(udpFlow(UInt32(n)), service: 0, destination: UInt32(n), tcpFlags: 0, now: 0))
        }
        for n in 8..<16 {
            slots[udpFlow(UInt32(n))] = try XCTUnwrap(
                table.insert(udpFlow(UInt32(n)), service: 0, destination: UInt32(n), tcpFlags: 0, now: 200))
        }
        XCTAssertEqual(table.count, 16)
        // Full: the newcomer is refused, nobody is evicted.
        XCTAssertNil(table.insert(udpFlow(100), service: 0, destination: 100, tcpFlags: 0, now: 250))
        XCTAssertNil(table.insert(tcpFlow(100), service: 0, destination: 100, tcpFlags: syn, now: 299))
        XCTAssertEqual(table.count, 16)
        for n in 0..<16 {
            let slot = try XCTUnwrap(table.find(udpFlow(UInt32(n)), now: 299), "flow \(n)")
            XCTAssertEqual(table.destination(at: slot), UInt32(n))
        }
        // At 300 the first eight have expired: room again, the other eight untouched.
        let newcomer = try XCTUnwrap(table.insert(udpFlow(100), service: 0, destination: 100, tcpFlags: 0, now: 300))
        XCTAssertEqual(table.destination(at: newcomer), 100)
        XCTAssertLessThanOrEqual(table.count, 16)
        for n in 8..<16 {
            let slot = try XCTUnwrap(table.find(udpFlow(UInt32(n)), now: 300), "flow \(n)")
            XCTAssertEqual(table.destination(at: slot), UInt32(n))
        }
        for n in 0..<8 { XCTAssertNil(table.find(udpFlow(UInt32(n)), now: 300)) }
        XCTAssertEqual(table.find(udpFlow(100), now: 300), newcomer)
    }

    func testSweepReclaimsExpired() throws {
        var table = ConnectionTable(capacity: 32)
        for n in 0..<20 {
            let now: UInt32 = n < 10 ? 0 : 100
            XCTAssertNotNil(table.insert(udpFlow(UInt32(n)), service: 0, destination: 0, tcpFlags: 0, now: now))
        }
        XCTAssertEqual(table.sweep(now: 299, limit: table.slotCount), 0)
        XCTAssertEqual(table.count, 20)
        // A bounded sweep makes bounded progress; several cover the table.
        var reclaimed = 0
        for _ in 0..<(table.slotCount / 8 + 2) { reclaimed += table.sweep(now: 300, limit: 8) }
        XCTAssertEqual(reclaimed, 10)
        XCTAssertEqual(table.count, 10)
        for n in 10..<20 { XCTAssertNotNil(table.find(udpFlow(UInt32(n)), now: 300)) }
        XCTAssertEqual(table.sweep(now: 400, limit: 0), 0)
        XCTAssertEqual(table.sweep(now: 400, limit: table.slotCount * 2), 10)
        XCTAssertEqual(table.count, 0)
        XCTAssertEqual((0..<table.slotCount).filter { table.isOccupied($0) }, [])
    }

    func testExpiredBitIsNotLive() {
        let distances: [UInt32] = [0, 1, 2, 299, 300, 0x7FFF_FFFE, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001,
                                   0xFFFF_FFFE, 0xFFFF_FFFF]
        for now: UInt32 in [0, 1, 1000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF] {
            for distance in distances {
                let expires = now &+ distance
                XCTAssertEqual(ConnectionTable.expiredBit(expires, now), ConnectionTable.isLive(expires, now) ? 0 : 1,
                               "expires \(expires), now \(now)")
            }
        }
    }

    func testOccupiedBitIsAboveTheTombstone() {
        for tag in 0...UInt16.max {
            XCTAssertEqual(ConnectionTable.occupiedBit(tag), tag > ConnectionTable.tombstone ? 1 : 0, "tag \(tag)")
        }
    }

    /// Sweeps of many sizes (none, chunk-sized or not, across the table's end, beyond a round) each reclaim
    /// exactly the entries of the slots they examine that are expired or whose cell `orphaned` names, and
    /// move on by `limit`.
    func testSweepsOfAnySizeReclaimExactlyTheirWindow() {
        var table = ConnectionTable(capacity: 64)
        let slots = table.slotCount
        var rng = SplitMix64(seed: 11)
        for n in 0..<56 {
            let born = UInt32(rng.next() % 200)
            XCTAssertNotNil(table.insert(udpFlow(UInt32(n)), service: 0, destination: UInt32(n), tcpFlags: 0, now: born,
                                         cell: UInt32(n % 5)))
        }
        let now: UInt32 = 400  // UDP lives 300 s: those born before 100 have expired
        var cursor = table.sweepCursor
        var examined = 0
        for limit in [1, 5, 16, 17, 0, -3, 37, 2, 64, 15, 33, slots, 2 * slots + 3] {
            let window = Set((0..<max(0, limit)).map { (cursor + $0) % slots })
            let expected = window.filter { slot in
                guard let entry = table.entry(at: slot) else { return false }
                return !ConnectionTable.isLive(entry.expires, now) || table.cell(at: slot) == 3
            }
            let kept = (0..<slots).filter { table.isOccupied($0) && !expected.contains($0) }
            XCTAssertEqual(table.sweep(now: now, limit: limit, orphaned: { $0 == 3 }), expected.count, "limit \(limit)")
            for slot in expected { XCTAssertFalse(table.isOccupied(slot), "slot \(slot), limit \(limit)") }
            for slot in kept { XCTAssertTrue(table.isOccupied(slot), "slot \(slot), limit \(limit)") }
            cursor = (cursor + max(0, limit)) % slots
            XCTAssertEqual(table.sweepCursor, cursor)
            examined += max(0, limit)
        }
        XCTAssertGreaterThan(examined, slots, "the sweeps went round the table's end")
        XCTAssertEqual(table.count, (0..<slots).filter { table.isOccupied($0) }.count)
        for slot in 0..<slots where table.isOccupied(slot) {
            XCTAssertTrue(table.isLive(at: slot, now: now))
            XCTAssertNotEqual(table.cell(at: slot), 3)
        }
    }

    func testRemove() throws {
        var table = ConnectionTable(capacity: 16)
        for n in 0..<3 {
            XCTAssertNotNil(table.insert(tcpFlow(UInt32(n)), service: 0, destination: UInt32(n), tcpFlags: syn, now: 0))
        }
        table.remove(at: try XCTUnwrap(table.find(tcpFlow(1), now: 0)))
        XCTAssertEqual(table.count, 2)
        XCTAssertNil(table.find(tcpFlow(1), now: 0))
        XCTAssertEqual(table.find(tcpFlow(0), now: 0).map { table.destination(at: $0) }, 0)
        XCTAssertEqual(table.find(tcpFlow(2), now: 0).map { table.destination(at: $0) }, 2)
        let back = try XCTUnwrap(table.insert(tcpFlow(1), service: 0, destination: 9, tcpFlags: syn, now: 0))
        XCTAssertEqual(table.destination(at: back), 9)
        XCTAssertEqual(table.count, 3)
        table.removeAll()
        XCTAssertEqual(table.count, 0)
        for n in 0..<3 { XCTAssertNil(table.find(tcpFlow(UInt32(n)), now: 0)) }
    }

    /// Flows that share a home slot form a run; deleting from the middle must keep the rest reachable.
    func testCollidingFlowsSurviveDeletion() throws {
        var table = ConnectionTable(capacity: 64)
        let mask = UInt32(table.slotCount - 1)
        var rng = SplitMix64(seed: 7)
        var colliding: [FlowKey] = []
        var target: UInt32?
        while colliding.count < 12 {
            let key = randomFlow(&rng)
            let home = key.flowHash & mask
            if target == nil { target = home }
            if home == target || home == (target! + 1) & mask { colliding.append(key) }
        }
        for (n, key) in colliding.enumerated() {
            _ = try XCTUnwrap(table.insert(key, service: 0, destination: UInt32(n), tcpFlags: syn, now: 0))
        }
        var removed = Set<Int>()
        for victim in [0, 5, 11, 1] {
            table.remove(at: try XCTUnwrap(table.find(colliding[victim], now: 0)))
            removed.insert(victim)
            XCTAssertNil(table.find(colliding[victim], now: 0))
            for (n, key) in colliding.enumerated() where !removed.contains(n) {
                let slot = try XCTUnwrap(table.find(key, now: 0), "flow \(n) after removing \(victim)")
                XCTAssertEqual(table.destination(at: slot), UInt32(n))
            }
        }
        XCTAssertEqual(table.count, 8)
    }

    /// A run that starts in the last slot goes on in slot 0: the flows displaced from the last slot by up to
    /// `directSlots - 1` are found there (`find` checks their entries directly), the one displaced further
    /// through the tags, and an absent flow of the same home is not found, also once the run's first entry
    /// is removed.
    func testARunAcrossTheTableEndIsFound() throws {
        var table = ConnectionTable(capacity: 64)
        let mask = table.slotCount - 1
        var rng = SplitMix64(seed: 11)
        var run: [FlowKey] = []
        while run.count < ConnectionTable.directSlots + 2 {
            let key = randomFlow(&rng)
            if Int(key.flowHash) & mask == mask && !run.contains(key) { run.append(key) }
        }
        let absent = run.removeLast()
        for (n, key) in run.enumerated() {
            let slot = try XCTUnwrap(table.insert(key, service: 0, destination: UInt32(n), tcpFlags: syn, now: 0))
            XCTAssertEqual(slot, (mask + n) & mask)
        }
        for (n, key) in run.enumerated() { XCTAssertEqual(table.find(key, now: 0), (mask + n) & mask) }
        XCTAssertNil(table.find(absent, now: 0))
        table.remove(at: mask)
        XCTAssertNil(table.find(run[0], now: 0))
        for n in 1..<run.count { XCTAssertEqual(table.find(run[n], now: 0), n - 1, "flow displaced by \(n)") }
        XCTAssertNil(table.find(absent, now: 0))
    }

    /// `find` checks the first `directSlots` entries by hash, occupancy, key and expiry: two flows of one
    /// full 32-bit hash each find their own entry (the second one slot further), an expired entry there is not
    /// found while its neighbour is, and its reused slot holds the flow again.
    func testDirectSlotsCompareKeysAndExpiry() throws {
        var rng = SplitMix64(seed: 23)
        var byHash: [UInt32: FlowKey] = [:]
        var pair: (FlowKey, FlowKey)?
        for _ in 0..<2_000_000 where pair == nil {
            let key = randomFlow(&rng, proto: IPProtocolNumber.tcp)
            if let other = byHash[key.flowHash], other != key { pair = (other, key) }
            byHash[key.flowHash] = key
        }
        let (first, second) = try XCTUnwrap(pair, "no two flows of one hash among the keys drawn")
        var table = ConnectionTable(capacity: 64)
        let home = Int(first.flowHash) & (table.slotCount - 1)
        XCTAssertEqual(table.insert(first, service: 0, destination: 1, tcpFlags: syn, now: 0), home)
        XCTAssertEqual(table.insert(second, service: 0, destination: 2, tcpFlags: syn, now: 0),
                       (home + 1) & (table.slotCount - 1))
        let secondSlot = (home + 1) & (table.slotCount - 1)
        XCTAssertEqual(table.find(first, now: 1), home)
        XCTAssertEqual(table.find(second, now: 1), secondSlot)
        table.setExpiry(at: secondSlot, 10)
        XCTAssertNil(table.find(second, now: 10))
        XCTAssertEqual(table.find(first, now: 10), home)
        XCTAssertEqual(table.insert(second, service: 0, destination: 3, tcpFlags: syn, now: 10), secondSlot)
        XCTAssertEqual(table.find(second, now: 11).map { table.destination(at: $0) }, 3)
    }

    func testManyRandomKeysNoFalseHits() throws {
        let capacity = 20_000
        var table = ConnectionTable(capacity: capacity)
        var rng = SplitMix64(seed: 42)
        var keys: [FlowKey] = []
        var seen = Set<FlowKey>()
        while keys.count < capacity {
            let key = randomFlow(&rng)
            if seen.insert(key).inserted { keys.append(key) }
        }
        for (n, key) in keys.enumerated() {
            let slot = try XCTUnwrap(
                table.insert(key, service: UInt32(n % 5), destination: UInt32(n), tcpFlags: syn, now: 0))
            XCTAssertEqual(table.destination(at: slot), UInt32(n))
        }
        XCTAssertEqual(table.count, capacity)
        for (n, key) in keys.enumerated() {
            guard let slot = table.find(key, now: 1) else { return XCTFail("lost flow \(n)") }
            XCTAssertEqual(table.destination(at: slot), UInt32(n))
            XCTAssertEqual(table.service(at: slot), UInt32(n % 5))
        }
        var misses = 0
        while misses < capacity {
            let key = randomFlow(&rng)
            if seen.contains(key) { continue }
            XCTAssertNil(table.find(key, now: 1))
            misses += 1
        }
        // Remove every other one; the rest stay, the removed are gone.
        for n in stride(from: 0, to: capacity, by: 2) {
            table.remove(at: try XCTUnwrap(table.find(keys[n], now: 2)))
        }
        XCTAssertEqual(table.count, capacity / 2)
        for (n, key) in keys.enumerated() {
            if n % 2 == 0 {
                XCTAssertNil(table.find(key, now: 2))
            } else {
                XCTAssertEqual(table.find(key, now: 2).map { table.destination(at: $0) }, UInt32(n))
            }
        }
    }

    /// Random inserts, packets, removals, sweeps and clock steps against a dictionary model.
    func testMatchesModelUnderChurn() throws {
        var table = ConnectionTable(capacity: 64, timeouts: ConnectionTimeouts(tcpEstablished: 40, tcpFin: 12, udp: 25))
        var rng = SplitMix64(seed: 99)
        var pool: [FlowKey] = []
        for _ in 0..<300 { pool.append(randomFlow(&rng)) }
        // Model: flow -> (destination, expiry)
        var model: [FlowKey: (UInt32, UInt32)] = [:]
        var now: UInt32 = 1_000
        var refused = 0
        for step in 0..<30_000 {
            let key = pool[Int(rng.next() % UInt64(pool.count))]
            let live = model[key].map { $0.1 > now } ?? false
            let found = table.find(key, now: now)
            XCTAssertEqual(found != nil, live, "step \(step)")
            if let slot = found {
                XCTAssertEqual(table.destination(at: slot), model[key]!.0)
                switch rng.next() % 8 {
                case 0:
                    table.remove(at: slot)
                    model[key] = nil
                default:
                    table.update(at: slot, tcpFlags: ack, now: now)
                    model[key]!.1 = now + table.timeouts.seconds(for: table.state(at: slot))
                }
            } else {
                let destination = UInt32(step)
                if let slot = table.insert(key, service: 0, destination: destination, tcpFlags: syn, now: now) {
                    model[key] = (destination, table.expiry(at: slot))
                } else {
                    refused += 1
                    XCTAssertEqual(table.count, table.capacity, "refused below capacity at step \(step)")
                }
            }
            switch rng.next() % 16 {
            case 0: now += UInt32(rng.next() % 30)
            case 1: table.sweep(now: now, limit: Int(rng.next() % 40))
            default: break
            }
            XCTAssertGreaterThanOrEqual(table.count, model.values.filter { $0.1 > now }.count)
            XCTAssertLessThanOrEqual(table.count, table.capacity)
        }
        XCTAssertGreaterThan(refused, 0, "the churn should have filled the table at times")
        table.sweep(now: now, limit: table.slotCount)
        let live = model.filter { $0.value.1 > now }
        XCTAssertEqual(table.count, live.count)
        let listed = table.liveEntries(now: now)
        XCTAssertEqual(listed.count, live.count)
        for entry in listed { XCTAssertEqual(live[entry.key]?.0, entry.destination) }
    }
}
