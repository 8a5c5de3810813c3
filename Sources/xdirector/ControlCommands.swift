import ArgumentParser
import Control
import Foundation

/// Which running director a command talks to.
struct DirectorSocketOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The interface of the director to ask (its socket is /run/xdirector/<interface>.sock).")
    var interface: String?

    @Option(help: "The director's control socket (default: the only one running, or $XDIRECTOR_SOCKET).")
    var socket: String?

    func send(_ request: ControlRequest, timeout: Int = 30) throws -> ControlResponse {
        do {
            let path = try ControlClient.resolve(path: socket, interface: interface)
            return try ControlClient.send(request, path: path, timeout: timeout)
        } catch {
            throw failure("\(error)")
        }
    }
}

/// Prints a director's answer as it is meant and exits with its status.
func deliver(_ response: ControlResponse) throws {
    if !response.output.isEmpty {
        FileHandle.standardOutput.write(Data(response.output.utf8))
    }
    if !response.error.isEmpty {
        FileHandle.standardError.write(Data(response.error.utf8))
    }
    if response.status != 0 { throw ExitCode(response.status) }
}

struct IPVSAdminCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipvsadm",
        abstract: "Change or list the running director with ipvsadm's own commands and options.",
        discussion: """
            Every argument goes to the director as ipvsadm would take it, e.g. `xdirector ipvsadm -Ln`, \
            `xdirector ipvsadm -a -t 192.0.2.10:80 -r 198.51.100.11 -w 2`, `xdirector ipvsadm -S -n > rules`, \
            `xdirector ipvsadm -R < rules`. To choose among several running directors, put `--socket PATH` or \
            `--interface NAME` first; otherwise the only one running is asked.
            """)

    @Argument(parsing: .captureForPassthrough, help: "ipvsadm's arguments.")
    var arguments: [String] = []

    func run() throws {
        var arguments = self.arguments
        var socket: String? = nil, interface: String? = nil
        // Our own options come first; everything else is ipvsadm's (whose -i is --ipip).
        while let first = arguments.first {
            if first == "--socket" || first == "--interface", arguments.count >= 2 {
                if first == "--socket" { socket = arguments[1] } else { interface = arguments[1] }
                arguments.removeFirst(2)
            } else if first.hasPrefix("--socket=") {
                socket = String(first.dropFirst("--socket=".count))
                arguments.removeFirst()
            } else if first.hasPrefix("--interface=") {
                interface = String(first.dropFirst("--interface=".count))
                arguments.removeFirst()
            } else {
                break
            }
        }
        // -R reads the rules on standard input, as ipvsadm does.
        let restoring = arguments.contains { $0 == "-R" || $0 == "--restore" || ($0.hasPrefix("-") && !$0.hasPrefix("--") && $0.contains("R")) }
        let input = restoring ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) : nil
        var target = DirectorSocketOptions()
        target.socket = socket
        target.interface = interface
        try deliver(try target.send(ControlRequest(command: "ipvsadm", arguments: arguments, input: input)))
    }
}

struct PinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pin", abstract: "Move a running worker (its queue) to another core.")

    @OptionGroup var target: DirectorSocketOptions

    @Option(help: "The receive queue whose worker moves.")
    var queue: UInt32

    @Option(help: "The core it moves to: one that exists and runs no other worker.")
    var core: Int

    func run() throws {
        try deliver(try target.send(ControlRequest(command: "pin", arguments: [String(queue), String(core)])))
    }
}

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Per-core statistics of the running director: one row per worker, totals, the XDP program's counters.")

    @OptionGroup var target: DirectorSocketOptions

    @Flag(help: "Per-second rates (over one second, or over the --watch interval).")
    var rate = false

    @Option(help: "Refresh in place every SECONDS until interrupted.")
    var watch: Double?

    @Flag(help: "JSON for machines.")
    var json = false

    func validate() throws {
        if let watch, !(watch >= 0.1 && watch <= 3600) { throw ValidationError("--watch takes 0.1 to 3600 seconds") }
    }

    func run() throws {
        var previous: (reading: DirectorStatistics, at: Date)? = nil
        if rate && watch == nil {
            previous = (try reading(), Date())
            usleep(1_000_000)
        }
        while true {
            let current = try reading(), now = Date()
            let report = StatisticsReport(current, previous: previous?.reading,
                                          interval: previous.map { now.timeIntervalSince($0.at) } ?? 0)
            let withRates = rate && previous != nil
            let text = json ? report.json(rate: withRates) : report.table(rate: withRates)
            // In place: home the cursor and clear the screen before each refresh.
            print((watch != nil ? "\u{1B}[H\u{1B}[2J" : "") + text)
            fflush(nil)
            guard let watch else { return }
            previous = (current, now)
            usleep(useconds_t(watch * 1_000_000))
        }
    }

    private func reading() throws -> DirectorStatistics {
        let response = try target.send(ControlRequest(command: "statistics"))
        guard response.status == 0 else {
            try deliver(response)
            throw ExitCode.failure
        }
        do {
            return try DirectorStatistics(encoded: response.output)
        } catch {
            throw failure("the director's statistics are not readable: \(error)")
        }
    }
}

struct QueuesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queues",
        abstract: "The running director's queues: core, socket mode, ring and UMEM sizes.")

    @OptionGroup var target: DirectorSocketOptions

    func run() throws {
        let response = try target.send(ControlRequest(command: "statistics"))
        guard response.status == 0 else { return try deliver(response) }
        do {
            print(StatisticsReport(try DirectorStatistics(encoded: response.output)).queuesTable())
        } catch {
            throw failure("the director's statistics are not readable: \(error)")
        }
    }
}
