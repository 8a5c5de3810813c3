import Foundation
import Topology
import XCTest

/// A test case with its own namespace lab (client, director with a 2-queue veth, real servers running the
/// lab's HTTP server), torn down in tearDown, also when the test fails. Needs root.
class LabTestCase: XCTestCase {
    var lab: Topology?
    var director: Process?
    var directorOutput: CollectedOutput?
    /// The rules file the running director was started with (SIGHUP reloads it).
    var rulesPath: String?
    /// The running director's control socket.
    var socketPath: String?

    /// Real servers in the lab.
    class var realCount: Int { 2 }

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("integration tests need root: network namespaces and XDP") }
        let lab = try Topology(realCount: Self.realCount, directorQueues: 2)
        self.lab = lab
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-http", "--name", "rs\(index + 1)", "--port", "80"])
        }
    }

    override func tearDown() {
        if let director, director.isRunning { director.terminate(); Topology.wait(director, seconds: 10) }
        lab?.teardown()
        lab = nil
    }

    /// The xdirector binary built beside this test bundle.
    static let xdirector: String = {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: me).deletingLastPathComponent()
        while directory.pathExtension == "xctest" || directory.lastPathComponent == "Contents" || directory.lastPathComponent == "MacOS" {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("xdirector").path
    }()

    /// The director's instance name in the lab: its interface, qualified by the lab's network namespace.
    var directorInstance: String {
        guard let lab else { return "" }
        return "\(lab.directorInterface)@\(lab.director)"
    }

    /// Where the running director pins its maps (inside its own mount namespace).
    var pinDirectory: String { "/sys/fs/bpf/xdirector/\(directorInstance)" }

    func writeRules(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(lab?.prefix ?? "xd")-\(UUID().uuidString).rules"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func startDirector(rules: String, arguments: [String] = []) throws {
        let path = try writeRules(rules + "\n")
        rulesPath = path
        try startDirector(configuration: ["--rules", path], arguments: arguments)
    }

    /// Starts the director with `configuration` (`--rules PATH`, `--keepalived PATH`), a socket and a rules
    /// state file of the test's own, removed afterwards (never the host's /var/lib/xdirector).
    func startDirector(configuration: [String], arguments: [String] = []) throws {
        let lab = try XCTUnwrap(lab)
        let output = CollectedOutput()
        let socket = NSTemporaryDirectory() + "\(lab.prefix)-\(UUID().uuidString.prefix(8)).sock"
        socketPath = socket
        let state = NSTemporaryDirectory() + "\(lab.prefix)-\(UUID().uuidString).rules.state"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: state) }
        director = try lab.spawn(lab.director, [Self.xdirector, "run", "--interface", lab.directorInterface] + configuration
                                 + ["--socket", socket, "--state-file", state] + arguments, output: output.pipe)
        directorOutput = output
        guard output.waitFor("ready", seconds: 30) else { throw TestFailure("the director did not start: \(output.text)") }
    }

    /// Replaces the running director's rules file (send SIGHUP to apply it).
    func rewriteRules(_ rules: String) throws {
        try (rules + "\n").write(toFile: try XCTUnwrap(rulesPath), atomically: true, encoding: .utf8)
    }

    func stopDirector() throws -> DirectorReport {
        let director = try XCTUnwrap(director)
        director.terminate()
        Topology.wait(director, seconds: 15)
        XCTAssertFalse(director.isRunning, "the director stops on SIGTERM")
        return DirectorReport(text: directorOutput?.text ?? "")
    }

    /// Runs `xdirector COMMAND --socket <the director's> ARGUMENTS` (ipvsadm: the socket first) from the host,
    /// bounded to 30 s, with `input` on its standard input.
    func cli(_ command: String, _ arguments: [String], input: String = "") throws -> CLIResult {
        let socket = try XCTUnwrap(socketPath)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.xdirector)
        process.arguments = [command, "--socket", socket] + arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let group = DispatchGroup()
        nonisolated(unsafe) var out = Data(), err = Data()
        group.enter()
        DispatchQueue.global().async { out = stdout.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { err = stderr.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        Topology.wait(process, seconds: 30)
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        group.wait()
        return CLIResult(status: process.terminationStatus, output: String(decoding: out, as: UTF8.self),
                         error: String(decoding: err, as: UTF8.self))
    }

    /// `xdirector ipvsadm ARGUMENTS` against the running director; fails the test when it exits non-zero.
    @discardableResult
    func ipvsadm(_ arguments: String, input: String = "", file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try cli("ipvsadm", arguments.split(separator: " ").map(String.init), input: input)
        XCTAssertEqual(result.status, 0, "ipvsadm \(arguments): \(result.error)", file: file, line: line)
        return result.output
    }

    /// Sends `count` requests, one TCP connection each, and counts the answering real servers.
    func answers(_ lab: Topology, url: String, count: Int) throws -> [String: Int] {
        var tally: [String: Int] = [:]
        for _ in 0..<count {
            let body = try lab.exec(lab.client, ["curl", "-sg", "-m", "5", url], check: false)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            tally[body.isEmpty ? "(none)" : body, default: 0] += 1
        }
        return tally
    }
}

struct CLIResult {
    let status: Int32
    let output: String
    let error: String
}

/// What `xdirector session-probe` reported (its last JSON line), once it has ended (at most `seconds`).
func sessionProbeReport(_ process: Process, _ output: CollectedOutput, seconds: Double) throws -> [String: Any] {
    Topology.wait(process, seconds: seconds)
    let line = try XCTUnwrap(output.text.split(separator: "\n").last { $0.hasPrefix("{") }, output.text)
    return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
}

extension XCTestCase {
    /// Polls `condition` every 100 ms for up to `seconds`; returns how long it took, or nil when it never held.
    func elapsedUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            if try condition() { return Date().timeIntervalSince(start) }
            usleep(100_000)
        }
        return try condition() ? Date().timeIntervalSince(start) : nil
    }

    /// Whether `condition` held within `seconds` (polled every 100 ms).
    func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        try elapsedUntil(seconds: seconds, condition) != nil
    }
}
