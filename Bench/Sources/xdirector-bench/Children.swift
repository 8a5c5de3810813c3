import Foundation
import Topology

/// A helper process the bench started (generator, sink, forwarder), with its output collected.
final class Child: @unchecked Sendable {
    let name: String
    let process = Process()
    let output = CollectedOutput()
    let errors = CollectedOutput()

    init(_ name: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        self.name = name
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" } + arguments
        process.standardOutput = output.pipe
        process.standardError = errors.pipe
        try process.run()
        Children.shared.add(self)
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits for a line containing "ready"; false if the process ended or the time ran out first.
    func waitReady(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if output.text.contains("ready") { return true }
            if !process.isRunning { return false }
            usleep(20_000)
        }
        return false
    }

    /// SIGINT, then SIGKILL after `grace` seconds.
    func stop(grace: Double = 5) {
        if process.isRunning { kill(pid, SIGINT) }
        Topology.wait(process, seconds: grace)
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        Children.shared.remove(self)
    }

    /// The last non-empty line the process wrote on standard error, for "skipped: ..." notes.
    var lastError: String {
        let lines = errors.text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return lines.first { $0.hasPrefix("Error:") } ?? lines.last ?? "exited with status \(process.isRunning ? 0 : process.terminationStatus)"
    }
}

/// Every live child and the lab, so Ctrl-C and errors leave nothing behind.
final class Children: @unchecked Sendable {
    static let shared = Children()
    private let lock = NSLock()
    private var children: [Child] = []
    var topology: BenchTopology?
    private var sources: [DispatchSourceSignal] = []

    func add(_ child: Child) { lock.lock(); children.append(child); lock.unlock() }
    func remove(_ child: Child) { lock.lock(); children.removeAll { $0 === child }; lock.unlock() }

    func stopAll() {
        lock.lock(); let running = children; lock.unlock()
        for child in running { child.stop(grace: 3) }
        topology?.teardown()
    }

    /// On SIGINT/SIGTERM: stop the children, delete the lab, exit.
    func installSignalHandlers() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("\nxdirector-bench: interrupted; cleaning up\n".utf8))
                Children.shared.stopAll()
                exit(130)
            }
            source.resume()
            sources.append(source)
        }
    }
}
