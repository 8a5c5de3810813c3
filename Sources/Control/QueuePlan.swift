import Dataplane

/// Which queues the director serves and the core each queue's worker is pinned to.
public struct QueuePlan: Equatable, Sendable {
    public struct Assignment: Equatable, Sendable {
        public var queue: UInt32
        public var core: Int
    }

    public var assignments: [Assignment]

    /// Queues default to all of the interface's; cores default to queue i on the i-th allowed CPU.
    /// Refuses queues the interface lacks, cores that do not exist (or the process may not use), and a
    /// core given to two queues.
    public init(queues: [Int]?, cores: [Int]?, interfaceQueueCount: Int) throws(ControlError) {
        let queues = queues ?? Array(0..<interfaceQueueCount)
        guard !queues.isEmpty else { throw ControlError("no queues to serve") }
        if let bad = queues.first(where: { $0 < 0 || $0 >= interfaceQueueCount }) {
            throw ControlError("queue \(bad) does not exist (the interface has \(interfaceQueueCount) receive queue\(interfaceQueueCount == 1 ? "" : "s"))")
        }
        guard Set(queues).count == queues.count else { throw ControlError("a queue is listed twice in --queues") }
        let usable = CPUs.usable()
        guard let cores else {
            // Wraps when there are more queues than cores: several workers then share one.
            assignments = queues.enumerated().map { Assignment(queue: UInt32($1), core: usable[$0 % usable.count]) }
            return
        }
        guard cores.count == queues.count else {
            throw ControlError("--cores lists \(cores.count) core\(cores.count == 1 ? "" : "s") for \(queues.count) queue\(queues.count == 1 ? "" : "s")")
        }
        if let bad = cores.first(where: { !usable.contains($0) }) {
            throw ControlError("core \(bad) does not exist or is not allowed for this process (usable: \(QueuePlan.format(usable)))")
        }
        guard Set(cores).count == cores.count else {
            throw ControlError("a core is given to two queues in --cores; each worker needs its own core")
        }
        assignments = zip(queues, cores).map { Assignment(queue: UInt32($0), core: $1) }
    }

    /// Parses "0-3,6,8-9".
    public static func parseList(_ text: String) throws(ControlError) -> [Int] {
        var result: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds.last!), low >= 0, low <= high else {
                throw ControlError("'\(text)' is not a list such as 0-3,6")
            }
            result += Array(low...high)
        }
        return result
    }

    static func format(_ values: [Int]) -> String { values.map(String.init).joined(separator: ",") }
}

/// An error of the control side, worded for an operator.
public struct ControlError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
