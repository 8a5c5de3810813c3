import Dataplane
import Foundation

/// A reading of the director's counters.
public struct DirectorStatistics: Codable, Sendable {
    public struct WorkerRow: Codable, Sendable {
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

    /// The XDP counters' names, in the order of `xdp`: the shared header's `XD_XDP_COUNTERS`, the one definition.
    public static let xdpCounterNames = XDPProgram.counterNames

    /// A table for people (what `run` prints at exit): see `StatisticsReport.table(rate:)`.
    public func render() -> String {
        StatisticsReport(self).table(rate: false)
    }
}
