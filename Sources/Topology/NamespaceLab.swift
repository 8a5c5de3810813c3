import Foundation

/// Network namespaces made for one lab, and the processes started in them: all removed by `teardown()`
/// (safe to call twice), also when the lab fails half-built. Every name carries the lab's unique prefix.
public final class NamespaceLab: @unchecked Sendable {
    public let prefix: String
    private var namespaces: [String] = []
    private var processes: [Process] = []
    private let lock = NSLock()

    /// `kind` starts the prefix (`xd` for the labs of the tests and demo), five random hex digits follow.
    public init(prefix kind: String) {
        prefix = kind + String(format: "%05x", UInt32.random(in: 0..<0xFFFFF))
    }

    deinit { teardown() }

    /// Makes namespace `name` with its loopback up and the labs' settings.
    public func add(_ name: String) throws {
        try Topology.run(["ip", "netns", "add", name])
        lock.lock(); namespaces.append(name); lock.unlock()
        try exec(name, ["ip", "link", "set", "lo", "up"])
        try exec(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"])
        // A NIC's RSS puts a flow on the queue its addresses and ports hash to, for its whole life. Across
        // veth the queue follows the sending socket's hash instead, which TCP redraws at each retransmission
        // timeout: the flow would then hop to another worker's queue, which a real NIC never does.
        try exec(name, ["sysctl", "-qw", "net.core.txrehash=0"])
    }

    /// Stops the processes started in the lab and deletes its namespaces (their veths go with them).
    public func teardown() {
        lock.lock()
        let running = processes, made = namespaces
        processes = []
        namespaces = []
        lock.unlock()
        for process in running where process.isRunning {
            process.terminate()
            Topology.wait(process, seconds: 3)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        for namespace in made { _ = try? Topology.run(["ip", "netns", "del", namespace], check: false) }
        // What a director killed in the lab left: its connection state (a clean stop removes its own). Lab
        // directors' instances are named after their interfaces, which carry the prefix.
        let shm = "/dev/shm/xdirector"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: shm)) ?? [] where name.hasPrefix(prefix) {
            try? FileManager.default.removeItem(atPath: "\(shm)/\(name)")
        }
    }

    /// Runs a command in a namespace and returns its standard output; throws on a non-zero exit.
    @discardableResult
    public func exec(_ namespace: String, _ arguments: [String], check: Bool = true) throws -> String {
        try Topology.run(["ip", "netns", "exec", namespace] + arguments, check: check)
    }

    /// Starts a long-running command in a namespace; it is stopped by `teardown()` if still running.
    public func spawn(_ namespace: String, _ arguments: [String], output: Pipe? = nil) throws -> Process {
        // Quiet by default: a lab's servers must not write over the caller's output.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace] + arguments
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = output ?? FileHandle.nullDevice
        try process.run()
        lock.lock(); processes.append(process); lock.unlock()
        return process
    }
}
