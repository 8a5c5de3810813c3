import Packet
import Dataplane
import Foundation

// The control socket's protocol: one JSON request per connection, written whole and the write side shut;
// one JSON response, then the daemon closes. Small and synchronous: the CLI is its only client.

/// What the CLI asks the running director.
public struct ControlRequest: Codable, Sendable, Equatable {
    /// "ipvsadm", "statistics" or "pin".
    public var command: String
    public var arguments: [String]
    /// Standard input the command reads (`ipvsadm -R`).
    public var input: String?

    public init(command: String, arguments: [String] = [], input: String? = nil) {
        self.command = command
        self.arguments = arguments
        self.input = input
    }
}

/// The director's answer: what to print on standard output and standard error, and the exit status.
public struct ControlResponse: Codable, Sendable, Equatable {
    public var status: Int32
    public var output: String
    public var error: String

    public init(status: Int32 = 0, output: String = "", error: String = "") {
        self.status = status
        self.output = output
        self.error = error
    }

    public static func failure(_ message: String, status: Int32 = 1) -> ControlResponse {
        ControlResponse(status: status, error: message.hasSuffix("\n") ? message : message + "\n")
    }
}

/// `DirectorStatistics` on the wire (the CLI computes rates from two readings itself).
struct StatisticsMessage: Codable {
    struct Worker: Codable {
        var queue: UInt32
        var core: Int
        var cpu: Int
        var zeroCopy: Bool
        var threadID: Int32
        var frameCount: UInt32
        var frameSize: UInt32
        var rxRingSize: UInt32
        var txRingSize: UInt32
        var completionRingSize: UInt32
        var counters: [UInt64]
    }

    var workers: [Worker]
    var xdp: [UInt64]

    init(_ statistics: DirectorStatistics) {
        workers = statistics.workers.map { row in
            Worker(queue: row.queue, core: row.core, cpu: row.cpu, zeroCopy: row.zeroCopy, threadID: row.threadID,
                   frameCount: row.rings.frameCount, frameSize: row.rings.frameSize, rxRingSize: row.rings.rxRingSize,
                   txRingSize: row.rings.txRingSize, completionRingSize: row.rings.completionRingSize,
                   counters: row.counters)
        }
        xdp = statistics.xdp
    }

    var statistics: DirectorStatistics {
        DirectorStatistics(workers: workers.map { worker in
            var rings = XSKConfiguration()
            rings.frameCount = worker.frameCount
            rings.frameSize = worker.frameSize
            rings.rxRingSize = worker.rxRingSize
            rings.txRingSize = worker.txRingSize
            rings.completionRingSize = worker.completionRingSize
            rings.allowZeroCopy = worker.zeroCopy
            // Counters a newer daemon has and this CLI does not know are left out; missing ones read 0.
            var counters = Array(worker.counters.prefix(WorkerCounter.allCases.count))
            counters += Array(repeating: 0, count: WorkerCounter.allCases.count - counters.count)
            return DirectorStatistics.WorkerRow(queue: worker.queue, core: worker.core, cpu: worker.cpu,
                                                zeroCopy: worker.zeroCopy, threadID: worker.threadID, rings: rings,
                                                counters: counters)
        }, xdp: xdp)
    }
}

extension DirectorStatistics {
    /// The reading as the control socket carries it.
    public func encoded() throws -> String {
        String(decoding: try JSONEncoder().encode(StatisticsMessage(self)), as: UTF8.self)
    }

    public init(encoded text: String) throws {
        self = try JSONDecoder().decode(StatisticsMessage.self, from: Data(text.utf8)).statistics
    }
}
