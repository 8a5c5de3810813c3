import Foundation

/// CPU time of a forwarder's packet threads, read from `/proc/<pid>/task/<tid>/`: `schedstat`'s first field
/// (nanoseconds on a CPU, exact) for the total, and `stat`'s utime and stime (clock ticks, 10 ms) to split it
/// into user and system time. Threads are picked by name prefix (XDirector's workers are `xd-q<N>`, the C
/// reference's `xdb-ref-q<N>`), so the control thread, the sink and the generator are not counted. Time the
/// kernel spends for the forwarder in another thread's softirq (veth runs the peer's NAPI, hence the XDP
/// program and the forwarder's RX, on the sending core) is not in these figures.
struct ThreadCPU: Equatable {
    var nanoseconds: UInt64 = 0
    var userTicks: UInt64 = 0
    var systemTicks: UInt64 = 0
    var threads = 0

    /// The sum over the threads of `pid` whose name starts with `prefix`; nil when none is found.
    static func read(pid: Int32, prefix: String) -> ThreadCPU? {
        let directory = "/proc/\(pid)/task"
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return nil }
        var total = ThreadCPU()
        for task in tasks {
            let base = "\(directory)/\(task)"
            guard let name = try? String(contentsOfFile: "\(base)/comm", encoding: .utf8), name.hasPrefix(prefix),
                  let schedstat = try? String(contentsOfFile: "\(base)/schedstat", encoding: .utf8),
                  let stat = try? String(contentsOfFile: "\(base)/stat", encoding: .utf8),
                  let onCPU = schedstat.split(separator: " ").first.flatMap({ UInt64($0) }),
                  let (user, system) = ticks(stat)
            else { continue }
            total.nanoseconds &+= onCPU
            total.userTicks &+= user
            total.systemTicks &+= system
            total.threads += 1
        }
        return total.threads > 0 ? total : nil
    }

    /// utime and stime (fields 14 and 15) of a `stat` line; the name in parentheses may hold spaces.
    static func ticks(_ stat: String) -> (UInt64, UInt64)? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        // After ")": field 3 (state) is the first; utime is field 14, the 12th after it.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        return (user, system)
    }

    /// Nanoseconds per packet over the window from `start` to `self`: total, user, system. The split follows
    /// the ratio of the tick counts (none counted: all of it shown as system, "-" for user would hide it).
    func perPacket(since start: ThreadCPU, packets: UInt64) -> (total: Double, user: Double, system: Double)? {
        guard packets > 0, nanoseconds >= start.nanoseconds else { return nil }
        let total = Double(nanoseconds - start.nanoseconds) / Double(packets)
        let user = Double(userTicks &- start.userTicks), system = Double(systemTicks &- start.systemTicks)
        let userShare = user + system > 0 ? user / (user + system) : 0
        return (total, total * userShare, total * (1 - userShare))
    }
}
