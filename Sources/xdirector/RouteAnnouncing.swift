import ArgumentParser
import Control
import Foundation
import Logging

/// `run --bird-socket --bird-include`: the VIPs the director serves, announced through BIRD while it serves
/// them, and a guard process that withdraws them if the director dies.
///
/// Why a guard: a director killed (kill -9, a crash) cannot withdraw anything, and BIRD would go on
/// announcing its VIPs, drawing flows to a host that holds them (for `--restart-grace`) and then hands them
/// to its kernel. The guard is a small process of its own that reads a pipe from the director: the kernel
/// closes the pipe when the director dies, however it dies, and the guard then empties the include file and
/// asks BIRD to reconfigure, which withdraws the routes from the BGP peers at once. Worst case: the time to
/// write a small file and for BIRD to reconfigure and send its UPDATEs, well under a second.
final class RouteAnnouncing {
    private let announcer: RouteAnnouncer
    private let guardProcess: Process
    private let guardInput: FileHandle
    private var lastUpdate = Date.distantPast
    /// Set once the director stops serving (SIGTERM): nothing is announced again.
    private var withdrawn = false

    init(socket: String, include: String, instance: String, restartGrace: Double, logger: Logger) throws {
        let name = VIPAnnouncement.protocolName(instance: instance)
        announcer = RouteAnnouncer(includePath: include, bird: BIRDControl(socketPath: socket), name: name, logger: logger)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                                    ?? CommandLine.arguments[0])
        process.arguments = ["route-guard", "--bird-socket", socket, "--bird-include", include, "--name", name,
                             "--restart-grace", "\(restartGrace)"]
        let pipe = Pipe()
        process.standardInput = pipe
        try process.run()
        guardProcess = process
        guardInput = pipe.fileHandleForWriting
    }

    /// Announces the VIPs of the services that can take connections now (with health checks, those that
    /// hold their quorum); at most once a second unless `now`.
    func update(_ director: Director, hasQuorum: (ServiceConfig) -> Bool = { _ in true }, now: Bool = false) {
        guard !withdrawn, now || Date().timeIntervalSince(lastUpdate) >= 1 else { return }
        lastUpdate = Date()
        let unresolved = director.unresolvedRealServers
        announcer.announce(VIPAnnouncement.prefixes(director.configuration, hasQuorum: hasQuorum) { _, real in
            real.weight > 0 && !unresolved.contains(real.endpoint.address)
        })
    }

    /// Withdraws every VIP (the first step of stopping), for good.
    func withdraw() {
        withdrawn = true
        announcer.announce([])
    }

    /// Tells the guard how the director ended: `done` (it withdrew itself) or `handover` (a successor is
    /// about to take over and announce; the guard withdraws only if none does within the restart grace).
    func finish(handingOver: Bool) {
        guardInput.write(Data((handingOver ? "handover\n" : "done\n").utf8))
        try? guardInput.close()
        if !handingOver { guardProcess.waitUntilExit() }
    }
}

/// The guard `RouteAnnouncing` starts: waits for the director's pipe to close, then withdraws its VIPs
/// unless the director said it did (`done`) or a successor rewrote the include file after a hand-over.
struct RouteGuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route-guard",
        abstract: "Withdraw a director's VIPs from BIRD when the director dies (started by `run`).",
        shouldDisplay: false
    )

    @Option(name: .customLong("bird-socket")) var birdSocket: String
    @Option(name: .customLong("bird-include")) var birdInclude: String
    @Option var name: String
    @Option(name: .customLong("restart-grace")) var restartGrace: Double = 30

    func run() throws {
        // The director's terminal signals are not ours: only the pipe tells us it ended.
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        for ignored in [SIGINT, SIGHUP, SIGUSR2, SIGPIPE] { signal(ignored, SIG_IGN) }
        let logger = makeLogger()
        var last = ""
        while let line = readLine() { last = line }
        switch last {
        case "done":
            return
        case "handover":
            let since = Date()
            while Date().timeIntervalSince(since) < restartGrace {
                if let modified = (try? FileManager.default.attributesOfItem(atPath: birdInclude))?[.modificationDate] as? Date,
                   modified > since { return }  // the successor announces now
                usleep(250_000)
            }
            logger.warning("no director took over within \(restartGrace) s: withdrawing its VIPs")
        default:
            logger.warning("the director ended without withdrawing its VIPs: withdrawing them")
        }
        RouteAnnouncer(includePath: birdInclude, bird: BIRDControl(socketPath: birdSocket), name: name, logger: logger).announce([])
    }
}
