import Dataplane
import Foundation

/// A reading of the director's counters.
public struct DirectorStatistics: Sendable {
    public struct WorkerRow: Sendable {
        public var queue: UInt32
        public var core: Int
        public var cpu: Int
        public var zeroCopy: Bool
        /// The worker thread's kernel id (`/proc/<pid>/task/<tid>`), 0 before it started.
        public var threadID: Int32
        /// The socket's ring and UMEM sizes.
        public var rings: XSKConfiguration
        /// Indexed by `WorkerCounter`.
        public var counters: [UInt64]

        public init(queue: UInt32, core: Int, cpu: Int, zeroCopy: Bool, threadID: Int32 = 0,
                    rings: XSKConfiguration = XSKConfiguration(), counters: [UInt64]) {
            self.queue = queue
            self.core = core
            self.cpu = cpu
            self.zeroCopy = zeroCopy
            self.threadID = threadID
            self.rings = rings
            self.counters = counters
        }

        public subscript(_ counter: WorkerCounter) -> UInt64 { counters[counter.rawValue] }
    }

    public var workers: [WorkerRow]
    /// Indexed by `xd_xdp_counter`.
    public var xdp: [UInt64]

    public init(workers: [WorkerRow], xdp: [UInt64]) {
        self.workers = workers
        self.xdp = xdp
    }

    public static let xdpCounterNames = ["rx", "redirected", "pass_not_ip", "pass_not_service", "pass_other_l4",
                                         "pass_fragment", "pass_no_socket", "pass_malformed",
                                         "redirected_reply", "redirected_icmp"]

    /// A table for people: one row per queue, then every non-zero counter, then the XDP program's.
    public func render() -> String {
        var lines = ["queue  core  mode       rx_packets  tx_packets  new_conns  dropped"]
        for row in workers {
            let dropped = WorkerCounter.allCases.filter { $0.name.hasPrefix("drop_") }.reduce(UInt64(0)) { $0 + row[$1] }
            lines.append(String(format: "%5u  %4d  %-9@  %10llu  %10llu  %9llu  %7llu", row.queue, row.core,
                                (row.zeroCopy ? "zero-copy" : "copy") as NSString, row[.rxPackets], row[.txPackets],
                                row[.newConnections], dropped))
        }
        for row in workers {
            let details = WorkerCounter.allCases.filter { row[$0] != 0 && ![.rxPackets, .txPackets, .newConnections].contains($0) }
            if !details.isEmpty {
                lines.append("queue \(row.queue): " + details.map { "\($0.name)=\(row[$0])" }.joined(separator: " "))
            }
        }
        if !xdp.isEmpty {
            lines.append("xdp: " + zip(Self.xdpCounterNames, xdp).map { "\($0)=\($1)" }.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}
