@testable import Control
import Dataplane
import Foundation
import XCTest

final class StatisticsReportTests: XCTestCase {
    static func counters(_ values: [WorkerCounter: UInt64]) -> [UInt64] {
        WorkerCounter.allCases.map { values[$0] ?? 0 }
    }

    /// Two workers, one with drops of two reasons, the other with one.
    static let first = DirectorStatistics(
        workers: [
            .init(queue: 0, core: 2, cpu: 2, zeroCopy: false, threadID: 4101,
                  counters: counters([.rxPackets: 1000, .rxBytes: 64000, .txPackets: 990, .txBytes: 63360,
                                      .newConnections: 40, .activeConnections: 12, .dropNoService: 7,
                                      .dropTruncated: 3, .emptyPolls: 500, .fillRingShortfalls: 2, .rxWakeups: 9,
                                      .txKicks: 11, .repliesTranslated: 5])),
            .init(queue: 1, core: 3, cpu: 3, zeroCopy: true, threadID: 4102,
                  counters: counters([.rxPackets: 2000, .rxBytes: 128000, .txPackets: 1999, .txBytes: 127936,
                                      .newConnections: 60, .activeConnections: 20, .dropNoService: 1, .txKicks: 4])),
        ],
        xdp: [3100, 3000, 50, 40, 8, 2, 0, 0, 10, 1, 0, 0, 0])

    /// Two seconds later; queue 1 restarted (its counters went back).
    static let second = DirectorStatistics(
        workers: [
            .init(queue: 0, core: 2, cpu: 2, zeroCopy: false, threadID: 4101,
                  counters: counters([.rxPackets: 1400, .rxBytes: 89600, .txPackets: 1390, .txBytes: 88960,
                                      .newConnections: 50, .activeConnections: 15, .dropNoService: 9,
                                      .dropTruncated: 3, .emptyPolls: 700, .fillRingShortfalls: 2, .rxWakeups: 10,
                                      .txKicks: 15, .repliesTranslated: 5])),
            .init(queue: 1, core: 3, cpu: 3, zeroCopy: true, threadID: 4202,
                  counters: counters([.rxPackets: 100, .rxBytes: 6400, .txPackets: 100, .txBytes: 6400,
                                      .newConnections: 2, .activeConnections: 2])),
        ],
        xdp: [3700, 3500, 60, 40, 8, 2, 0, 0, 20, 1, 0, 0, 0])

    func parse(_ text: String) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8))
        return try XCTUnwrap(object as? [String: Any])
    }

    func testTableHasARowPerWorkerAndTotals() {
        let table = StatisticsReport(Self.first).table(rate: false)
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertTrue(lines[0].hasPrefix("queue  core  cpu  mode"), table)
        XCTAssertTrue(lines[0].contains("kernel_passes"))
        let queue0 = lines[1].split(separator: " ").map(String.init)
        XCTAssertEqual(Array(queue0.prefix(9)), ["0", "2", "2", "copy", "1000", "64000", "990", "63360", "10"])
        XCTAssertEqual(lines[2].split(separator: " ")[3], "zero-copy")
        let totals = lines[3].split(separator: " ").map(String.init)
        // rx, rx bytes, tx, tx bytes, drops, new, active, empty polls, shortfalls, wake-ups, kicks, passes.
        XCTAssertEqual(totals, ["total", "3000", "192000", "2989", "191296", "11", "100", "32", "500", "2", "9", "15", "100"])
        // Columns line up: every row of the first block is as wide as the header.
        XCTAssertEqual(Set(lines[0...3].map(\.count)).count, 1, table)

        XCTAssertTrue(table.contains("drops by reason"))
        XCTAssertEqual(lines.first { $0.hasPrefix("drop_no_service") }?.split(separator: " "), ["drop_no_service", "7", "1", "8"])
        XCTAssertEqual(lines.first { $0.hasPrefix("drop_truncated") }?.split(separator: " "), ["drop_truncated", "3", "0", "3"])
        XCTAssertFalse(table.contains("drop_not_service"), "zero drop reasons stay out")
        XCTAssertEqual(lines.first { $0.hasPrefix("replies_translated") }?.split(separator: " "), ["replies_translated", "5", "0", "5"])
        XCTAssertEqual(lines.first { $0.hasPrefix("pass_not_ip") }?.split(separator: " "), ["pass_not_ip", "50"])
        XCTAssertEqual(lines.first { $0.hasPrefix("redirected_reply") }?.split(separator: " "), ["redirected_reply", "10"])
        XCTAssertEqual(Self.first.render(), table)
    }

    func testRatesFromTwoReadings() {
        let report = StatisticsReport(Self.second, previous: Self.first, interval: 2)
        let table = report.table(rate: true)
        let lines = table.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines[0], "per second, over 2.0 s")
        // Queue 0: (1400 - 1000) / 2 = 200; drops (9 + 3) - (7 + 3) = 2 → 1/s; the gauge stays 15.
        let queue0 = lines[2].split(separator: " ").map(String.init)
        XCTAssertEqual(Array(queue0.prefix(11)), ["0", "2", "2", "copy", "200.0", "12800.0", "200.0", "12800.0", "1.0", "5.0", "15"])
        // Queue 1 restarted: its whole reading counts (100 / 2), never a huge wrapped delta.
        let queue1 = lines[3].split(separator: " ").map(String.init)
        XCTAssertEqual(Array(queue1.prefix(11)), ["1", "3", "3", "zero-copy", "50.0", "3200.0", "50.0", "3200.0", "0.0", "1.0", "2"])
        let totals = lines[4].split(separator: " ").map(String.init)
        XCTAssertEqual(totals.first, "total")
        XCTAssertEqual(totals[1], "250.0")
        XCTAssertEqual(totals[7], "17", "the gauge is summed, not turned into a rate")
        XCTAssertEqual(totals.last, "5.0", "passes: (60 - 50) / 2")
        XCTAssertEqual(lines.first { $0.hasPrefix("rx ") }?.split(separator: " "), ["rx", "300.0"])

        XCTAssertEqual(StatisticsReport.delta(5, since: 9), 5)
        XCTAssertEqual(StatisticsReport.delta(9, since: 5), 4)
        XCTAssertEqual(StatisticsReport.delta(9, since: nil), 9)
    }

    func testRateWithoutAPreviousReadingIsZero() throws {
        let json = try parse(StatisticsReport(Self.first).json(rate: true))
        let totals = try XCTUnwrap(json["totals"] as? [String: Any])
        XCTAssertEqual((totals["rx_packets"] as? NSNumber)?.doubleValue, 0)
        XCTAssertEqual((totals["active_connections"] as? NSNumber)?.intValue, 32)
    }

    func testJSONParsesAndTotalsAreTheSums() throws {
        let text = StatisticsReport(Self.first).json(rate: false)
        let json = try parse(text)
        XCTAssertEqual(Set(json.keys), ["workers", "totals", "xdp"])
        let workers = try XCTUnwrap(json["workers"] as? [[String: Any]])
        XCTAssertEqual(workers.count, 2)
        XCTAssertEqual(workers[0]["queue"] as? Int, 0)
        XCTAssertEqual(workers[0]["core"] as? Int, 2)
        XCTAssertEqual(workers[0]["cpu"] as? Int, 2)
        XCTAssertEqual(workers[0]["mode"] as? String, "copy")
        XCTAssertEqual(workers[1]["mode"] as? String, "zero-copy")
        XCTAssertEqual(workers[1]["thread_id"] as? Int, 4102)
        let counters = try workers.map { try XCTUnwrap($0["counters"] as? [String: Any]) }
        let totals = try XCTUnwrap(json["totals"] as? [String: Any])
        XCTAssertEqual(Set(totals.keys), Set(WorkerCounter.allCases.map(\.name) + ["drops"]))
        for (name, total) in totals {
            let sum = counters.map { ($0[name] as? NSNumber)?.uint64Value ?? 0 }.reduce(0, +)
            XCTAssertEqual((total as? NSNumber)?.uint64Value, sum, name)
        }
        XCTAssertEqual((totals["drops"] as? NSNumber)?.intValue, 11)
        XCTAssertEqual((counters[0]["drop_no_service"] as? NSNumber)?.intValue, 7)
        let xdp = try XCTUnwrap(json["xdp"] as? [String: Any])
        XCTAssertEqual(Set(xdp.keys), Set(DirectorStatistics.xdpCounterNames))
        XCTAssertEqual((xdp["pass_not_service"] as? NSNumber)?.intValue, 40)
        // Stable: keys sorted, so the same reading gives the same text.
        XCTAssertEqual(text, StatisticsReport(Self.first).json(rate: false))
        XCTAssertLessThan(try XCTUnwrap(text.range(of: "\"totals\"")).lowerBound, try XCTUnwrap(text.range(of: "\"workers\"")).lowerBound)
    }

    func testJSONRates() throws {
        let json = try parse(StatisticsReport(Self.second, previous: Self.first, interval: 2).json(rate: true))
        XCTAssertEqual((json["interval_seconds"] as? NSNumber)?.doubleValue, 2)
        let workers = try XCTUnwrap(json["workers"] as? [[String: Any]])
        let counters = try workers.map { try XCTUnwrap($0["counters"] as? [String: Any]) }
        XCTAssertEqual((counters[0]["rx_packets"] as? NSNumber)?.doubleValue, 200)
        XCTAssertEqual((counters[1]["rx_packets"] as? NSNumber)?.doubleValue, 50)
        XCTAssertEqual((counters[0]["active_connections"] as? NSNumber)?.intValue, 15)
        let totals = try XCTUnwrap(json["totals"] as? [String: Any])
        XCTAssertEqual((totals["rx_packets"] as? NSNumber)?.doubleValue, 250)
        XCTAssertEqual((totals["drops"] as? NSNumber)?.doubleValue, 1)
        let xdp = try XCTUnwrap(json["xdp"] as? [String: Any])
        XCTAssertEqual((xdp["redirected"] as? NSNumber)?.doubleValue, 250)
    }

    /// The kernel's counts for a worker's socket land in their own counters: ring-full and fill-empty apart,
    /// the losses among the drops, everywhere the counters are shown.
    func testSocketStatisticsAreCountedAsDropsAndEvents() throws {
        let block = WorkerCounterBlock()
        block.record(XSKSocketStatistics(rxDropped: 5, rxInvalidDescriptors: 1, txInvalidDescriptors: 2, rxRingFull: 700,
                                         fillRingEmpty: 4, txRingEmpty: 9))
        XCTAssertEqual(block[.dropSocketRXRingFull], 700)
        XCTAssertEqual(block[.dropSocketRX], 5)
        XCTAssertEqual(block[.socketFillRingEmpty], 4)
        XCTAssertEqual(WorkerCounter.dropSocketRXRingFull.name, "drop_socket_rx_ring_full")
        XCTAssertEqual(WorkerCounter.socketFillRingEmpty.name, "socket_fill_ring_empty")
        let reading = DirectorStatistics(workers: [.init(queue: 0, core: 0, cpu: 0, zeroCopy: false, counters: block.values())],
                                         xdp: [])
        let report = StatisticsReport(reading)
        XCTAssertEqual(report.totalDrops(rate: false), .count(707), "ring full, rx dropped and tx invalid are losses")
        let table = report.table(rate: false)
        for name in ["drop_socket_rx_ring_full", "drop_socket_rx", "drop_socket_tx_invalid", "socket_fill_ring_empty",
                     "socket_rx_invalid", "socket_tx_ring_empty"] {
            XCTAssertTrue(table.contains(name), "\(name) in the table:\n\(table)")
        }
        let json = try parse(report.json(rate: false))
        let totals = try XCTUnwrap(json["totals"] as? [String: Any])
        XCTAssertEqual(totals["drop_socket_rx_ring_full"] as? Int, 700)
        XCTAssertEqual(totals["drops"] as? Int, 707)
    }

    func testShortAndEmptyReadingsDoNotCrash() throws {
        let short = DirectorStatistics(workers: [.init(queue: 0, core: 0, cpu: -1, zeroCopy: false, counters: [1, 2])], xdp: [1])
        let report = StatisticsReport(short, previous: DirectorStatistics(workers: [], xdp: []), interval: 0)
        XCTAssertTrue(report.table(rate: true).contains("total"))
        XCTAssertNotNil(try parse(report.json(rate: true))["workers"])
        let empty = StatisticsReport(DirectorStatistics(workers: [], xdp: []))
        XCTAssertTrue(empty.table(rate: false).hasPrefix("queue"))
        XCTAssertEqual((try parse(empty.json(rate: false))["workers"] as? [Any])?.count, 0)
    }

    func testQueuesTable() {
        var rings = XSKConfiguration()
        rings.frameCount = 8192
        rings.rxRingSize = 1024
        let statistics = DirectorStatistics(
            workers: [.init(queue: 0, core: 2, cpu: 5, zeroCopy: true, threadID: 77, rings: rings, counters: []),
                      .init(queue: 1, core: 3, cpu: 3, zeroCopy: false, threadID: 78, counters: [])],
            xdp: [])
        let lines = StatisticsReport(statistics).queuesTable().split(separator: "\n").map(String.init)
        XCTAssertEqual(lines[0].split(separator: " "),
                       ["queue", "core", "cpu", "thread", "mode", "rx_ring", "tx_ring", "fill_ring", "completion_ring", "umem"])
        XCTAssertEqual(lines[1].split(separator: " "),
                       ["0", "2", "5", "77", "zero-copy", "1024", "2048", "8192", "2048", "8192", "x", "4096", "B", "=", "32", "MiB"])
        XCTAssertEqual(lines[2].split(separator: " "),
                       ["1", "3", "3", "78", "copy", "2048", "2048", "4096", "2048", "4096", "x", "4096", "B", "=", "16", "MiB"])
    }
}
