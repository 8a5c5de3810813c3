import Control
import Foundation
import Keepalived
import Logging
import NIOCore
import NIOPosix
import Packet
import Subprocess
import Synchronization

// The health monitor of a running director: the checks run on one swift-nio event loop thread; their results
// come back through an inbox that the control thread empties on every turn of its loop (`tick`), where the
// state machine takes them, state changes are logged once with their reason, notify scripts start, and the
// table health makes of the rules is applied through the director's reload, as `xdirector ipvsadm` is.

public final class HealthMonitor {
    public private(set) var state: HealthState
    private var generation = 0
    private let inbox = Inbox()
    private let group: MultiThreadedEventLoopGroup
    private let runner: CheckRunner
    private let logger: Logger
    private let clock: @Sendable () -> Double
    /// The table last applied (nil: none yet).
    public private(set) var applied: DirectorConfig?
    /// When the director last refused the table (`clock` seconds): it is offered again a second later.
    private var refusedAt: Double?
    /// The last rendering of each checker for other threads (the metrics endpoint).
    public let exposition = SharedText()

    public init(config: KeepalivedConfig, logger: Logger, threads: Int = 1) {
        let clock: @Sendable () -> Double = { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }
        self.clock = clock
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        runner = CheckRunner(group: group)
        state = HealthState(config: config, now: clock())
    }

    deinit { try? group.syncShutdownGracefully() }

    /// The table to start the director with: every real server up, except alpha ones.
    /// Whether the service holds its quorum (keepalived's, with hysteresis); true for a service health does
    /// not know.
    public func hasQuorum(_ key: ServiceKey) -> Bool {
        guard let index = state.config.services.firstIndex(where: { $0.keys.contains(key) }) else { return true }
        return state.quorumUp[index]
    }

    public func initialTable() -> DirectorConfig {
        let table = state.desired()
        applied = table
        return table
    }

    /// A reread configuration (SIGHUP): unchanged checkers keep their state; running checks of the old one
    /// are ignored when they end.
    public func reload(_ config: KeepalivedConfig) {
        generation += 1
        state = HealthState(config: config, now: clock(), previous: state)
        applied = nil
        refusedAt = nil
    }

    /// One turn of the control loop: results in, events out, the table applied when it changed, due checks
    /// started. `apply` is the director's reload; `expire` ends the connections of a failed real server
    /// (expire_nodest_conn) once it has left the table.
    public func tick(apply: (DirectorConfig) throws -> Void, expire: (ServiceKey, L4Endpoint) -> Void) {
        for item in inbox.take() where item.generation == generation {
            for event in state.record(item.id, item.result, now: item.at) { announce(event) }
        }
        let desired = state.desired()
        let now = clock()
        // A refused table is tried again (once a second), so a down server does not keep getting connections
        // until some other change comes.
        if desired != applied, refusedAt.map({ now - $0 >= 1 }) ?? true {
            do {
                try apply(desired)
                if let previous = applied { expireFailed(previous: previous, next: desired, expire: expire) }
                applied = desired
                refusedAt = nil
            } catch {
                logger.error("health: the director refused the table health asks for (trying again): \(error)")
                refusedAt = now
            }
        }
        for id in state.due(now: now) {
            state.started(id)
            let definition = state.definition(id)
            let endpoint = state.config.services[id.service].reals[id.real].endpoint
            let (inbox, generation, clock) = (self.inbox, self.generation, self.clock)
            runner.run(definition, endpoint: endpoint).whenSuccess { result in
                inbox.put(Inbox.Item(generation: generation, id: id, result: result, at: clock()))
            }
        }
        exposition.value = HealthReport.exposition(state)
    }

    /// Real servers that left a service because they failed: their connections expire.
    private func expireFailed(previous: DirectorConfig, next: DirectorConfig, expire: (ServiceKey, L4Endpoint) -> Void) {
        for (s, health) in state.config.services.enumerated() {
            for (r, real) in health.reals.enumerated() where !state.isAlive(service: s, real: r) {
                for key in health.keys {
                    let before = previous.service(key)?.realIndex(of: real.endpoint) != nil
                    let after = next.service(key)?.realIndex(of: real.endpoint) != nil
                    if before && !after { expire(key, real.endpoint) }
                }
            }
        }
    }

    private func announce(_ event: HealthEvent) {
        let services = state.config.services
        switch event {
        case .realServerUp(let s, let r, let reason):
            logger.info("health: real server \(services[s].reals[r].endpoint) of \(services[s].name) is up: \(reason)")
            services[s].reals[r].notifyUp.map(Self.runScript)
        case .realServerDown(let s, let r, let reason):
            let action = services[s].reals[r].inhibitOnFailure ? "weight 0" : "removed"
            logger.warning("health: real server \(services[s].reals[r].endpoint) of \(services[s].name) is down (\(action)): \(reason)")
            services[s].reals[r].notifyDown.map(Self.runScript)
        case .weightChanged(let s, let r, let weight):
            logger.info("health: real server \(services[s].reals[r].endpoint) of \(services[s].name) weight \(weight) (misc_dynamic)")
        case .quorumGained(let s, let live):
            let sorry = services[s].sorryServer.map { ", sorry server \($0.config.endpoint) leaves" } ?? ""
            logger.info("health: \(services[s].name) gained quorum: live weight \(live) ≥ \(services[s].quorum)+\(services[s].hysteresis)\(sorry)")
            services[s].quorumUp.map(Self.runScript)
        case .quorumLost(let s, let live):
            let sorry = services[s].sorryServer.map { ", sorry server \($0.config.endpoint) takes over" } ?? ""
            logger.warning("health: \(services[s].name) lost quorum: live weight \(live) < \(services[s].quorum)-\(services[s].hysteresis)\(sorry)")
            services[s].quorumDown.map(Self.runScript)
        }
    }

    /// At shutdown, `omega` services run their notify_down and quorum_down scripts, as keepalived does.
    public func shutdown() {
        for (s, service) in state.config.services.enumerated() where service.omega {
            for (r, real) in service.reals.enumerated() where state.isAlive(service: s, real: r) {
                real.notifyDown.map(Self.runScript)
            }
            if state.quorumUp[s] { service.quorumDown.map(Self.runScript) }
        }
    }

    /// A notify script, through /bin/sh as keepalived runs them; its output is discarded.
    static func runScript(_ command: String) {
        Task {
            _ = try? await Subprocess.run(.path("/bin/sh"), arguments: ["-c", command], output: .discarded, error: .discarded)
        }
    }

    /// `xdirector health`.
    public func report() -> String {
        HealthReport.render(state, now: clock())
    }
}

/// Results handed from the event loop to the control thread.
final class Inbox: Sendable {
    struct Item: Sendable {
        var generation: Int
        var id: CheckerID
        var result: CheckResult
        var at: Double
    }

    private let items = Mutex<[Item]>([])

    func put(_ item: Item) { items.withLock { $0.append(item) } }

    func take() -> [Item] { items.withLock { items in defer { items = [] }; return items } }
}

/// Text the control thread writes and another thread reads.
public final class SharedText: Sendable {
    private let text = Mutex<String>("")

    public init() {}

    public var value: String {
        get { text.withLock { $0 } }
        set { text.withLock { $0 = newValue } }
    }
}
