import Control
import Packet

// The checkers' state machine with keepalived's semantics, on a clock the caller gives (seconds): when each
// checker runs next (delay_loop, retry after delay_before_retry, warmup), whether it is up (alpha), what that
// makes of each real server (all its checkers up; misc_dynamic weights) and of each virtual server (quorum
// with hysteresis, sorry server). No sockets and no time of its own: the monitor runs the checks and
// reports their results; tests drive it with a virtual clock. `desired()` is the table this health makes of
// the configured rules.

/// A checker: its virtual server block, real server and position among the real server's checkers.
public struct CheckerID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var service: Int
    public var real: Int
    public var checker: Int

    public init(service: Int, real: Int, checker: Int) {
        self.service = service
        self.real = real
        self.checker = checker
    }

    public static func < (a: CheckerID, b: CheckerID) -> Bool {
        (a.service, a.real, a.checker) < (b.service, b.real, b.checker)
    }

    public var description: String { "\(service).\(real).\(checker)" }
}

/// What one run of a checker found.
public struct CheckResult: Equatable, Sendable {
    public var success: Bool
    /// Why, in a few words: "connected", "HTTP status 500", "connection refused", "timed out after 3 s".
    public var reason: String
    /// Seconds from start to result.
    public var latency: Double
    /// `misc_dynamic`: the weight an exit status of 2–255 sets (nil: the configured weight).
    public var weight: Int32?

    public init(success: Bool, reason: String, latency: Double = 0, weight: Int32? = nil) {
        self.success = success
        self.reason = reason
        self.latency = latency
        self.weight = weight
    }
}

/// A checker's state as `xdirector health` shows it.
public struct CheckerStatus: Equatable, Sendable {
    public var up: Bool
    /// When `up` last changed (or the checker started).
    public var since: Double
    public var lastResult: CheckResult?
    public var failuresInARow: Int
    /// Retries spent since the last success.
    public var retryIteration: Int
    public var nextRun: Double
    public var running: Bool
    /// The weight the checker's script set (misc_dynamic).
    public var dynamicWeight: Int32?
}

/// What changed, for the log and the notify scripts.
public enum HealthEvent: Equatable, Sendable {
    case realServerUp(service: Int, real: Int, reason: String)
    case realServerDown(service: Int, real: Int, reason: String)
    case weightChanged(service: Int, real: Int, weight: Int32)
    case quorumGained(service: Int, liveWeight: Int)
    case quorumLost(service: Int, liveWeight: Int)
}

public struct HealthState: Sendable {
    public let config: KeepalivedConfig
    public private(set) var checkers: [CheckerID: CheckerStatus] = [:]
    /// Per virtual server block: whether its quorum holds.
    public private(set) var quorumUp: [Bool]

    /// Every checker starts at `now` plus a random part of its warmup (`random(x)` in 0...x); up unless alpha.
    public init(config: KeepalivedConfig, now: Double, random: (Double) -> Double = { Double.random(in: 0...$0) }) {
        self.config = config
        quorumUp = Array(repeating: true, count: config.services.count)
        for id in Self.ids(config) {
            let definition = config.services[id.service].reals[id.real].checkers[id.checker]
            checkers[id] = CheckerStatus(up: !definition.alpha, since: now, lastResult: nil, failuresInARow: 0,
                                         retryIteration: 0, nextRun: now + (definition.warmup > 0 ? random(definition.warmup) : 0),
                                         running: false, dynamicWeight: nil)
        }
        for service in config.services.indices { quorumUp[service] = liveWeight(service) >= config.services[service].quorum }
    }

    /// After a reload: checkers that are the same (same virtual server, real server and definition) keep
    /// their state, so a reread file changes nothing that did not change.
    public init(config: KeepalivedConfig, now: Double, previous: HealthState, random: (Double) -> Double = { Double.random(in: 0...$0) }) {
        self.init(config: config, now: now, random: random)
        var old: [String: CheckerStatus] = [:]
        for (id, status) in previous.checkers { old[previous.identity(id)] = status }
        for id in checkers.keys {
            if let status = old[identity(id)] { checkers[id] = status }
        }
        for (service, health) in config.services.enumerated() {
            if let before = previous.config.services.firstIndex(where: { $0.name == health.name }) {
                quorumUp[service] = previous.quorumUp[before]
            } else {
                quorumUp[service] = liveWeight(service) >= health.quorum
            }
        }
    }

    static func ids(_ config: KeepalivedConfig) -> [CheckerID] {
        var ids: [CheckerID] = []
        for (s, service) in config.services.enumerated() {
            for (r, real) in service.reals.enumerated() {
                for c in real.checkers.indices { ids.append(CheckerID(service: s, real: r, checker: c)) }
            }
        }
        return ids
    }

    private func identity(_ id: CheckerID) -> String {
        let service = config.services[id.service], real = service.reals[id.real]
        var definition = real.checkers[id.checker]
        definition.location = SourceLocation(file: "", line: 0)
        return "\(service.name)|\(real.endpoint)|\(id.checker)|\(definition)"
    }

    public func definition(_ id: CheckerID) -> CheckerDefinition {
        config.services[id.service].reals[id.real].checkers[id.checker]
    }

    /// The checkers whose turn has come and that are not running, in order.
    public func due(now: Double) -> [CheckerID] {
        checkers.filter { !$0.value.running && $0.value.nextRun <= now }.map(\.key).sorted()
    }

    /// The earliest time a checker is due (nil: none is waiting).
    public var nextDue: Double? {
        checkers.values.filter { !$0.running }.map(\.nextRun).min()
    }

    public mutating func started(_ id: CheckerID) {
        checkers[id]?.running = true
    }

    /// Takes a checker's result at `now`: keepalived's retry logic, then what it changes.
    public mutating func record(_ id: CheckerID, _ result: CheckResult, now: Double) -> [HealthEvent] {
        guard var status = checkers[id] else { return [] }
        let definition = definition(id)
        let wasAlive = isAlive(service: id.service, real: id.real)
        let oldWeight = effectiveWeight(service: id.service, real: id.real)
        status.running = false
        status.lastResult = result
        if result.success {
            status.failuresInARow = 0
            status.retryIteration = 0
            if case .misc(let misc) = definition.kind, misc.dynamic { status.dynamicWeight = result.weight }
            if !status.up { status.up = true; status.since = now }
            status.nextRun = now + definition.delayLoop
        } else {
            status.failuresInARow += 1
            if status.retryIteration < definition.retry {
                status.retryIteration += 1
                status.nextRun = now + definition.delayBeforeRetry
            } else {
                status.retryIteration = 0
                if status.up { status.up = false; status.since = now }
                status.nextRun = now + definition.delayLoop
            }
        }
        checkers[id] = status

        var events: [HealthEvent] = []
        let alive = isAlive(service: id.service, real: id.real)
        let reason = "\(definition.kind.name) \(result.reason)"
        if alive != wasAlive {
            events.append(alive ? .realServerUp(service: id.service, real: id.real, reason: reason)
                                : .realServerDown(service: id.service, real: id.real, reason: reason))
        } else if alive, effectiveWeight(service: id.service, real: id.real) != oldWeight {
            events.append(.weightChanged(service: id.service, real: id.real, weight: effectiveWeight(service: id.service, real: id.real)))
        }
        if !events.isEmpty { events += updateQuorum(id.service) }
        return events
    }

    /// keepalived's `update_quorum_state`: gained at quorum + hysteresis, lost below quorum − hysteresis.
    private mutating func updateQuorum(_ service: Int) -> [HealthEvent] {
        let live = liveWeight(service)
        let health = config.services[service]
        let threshold = health.quorum + (quorumUp[service] ? -1 : 1) * health.hysteresis
        if !quorumUp[service] && live >= threshold {
            quorumUp[service] = true
            return [.quorumGained(service: service, liveWeight: live)]
        }
        if quorumUp[service] && (live == 0 || live < threshold) {
            quorumUp[service] = false
            return [.quorumLost(service: service, liveWeight: live)]
        }
        return []
    }

    /// A real server is alive while every checker of it is up (one without checkers always is).
    public func isAlive(service: Int, real: Int) -> Bool {
        config.services[service].reals[real].checkers.indices.allSatisfy {
            checkers[CheckerID(service: service, real: real, checker: $0)]?.up ?? true
        }
    }

    /// The configured weight, or the last weight a misc_dynamic script set.
    public func effectiveWeight(service: Int, real: Int) -> Int32 {
        let configured = config.services[service].reals[real].config.weight
        let dynamic = config.services[service].reals[real].checkers.indices.compactMap {
            checkers[CheckerID(service: service, real: real, checker: $0)]?.dynamicWeight
        }
        return dynamic.last ?? configured
    }

    /// The sum of the live real servers' weights.
    public func liveWeight(_ service: Int) -> Int {
        config.services[service].reals.indices.filter { isAlive(service: service, real: $0) }
            .reduce(0) { $0 + Int(effectiveWeight(service: service, real: $1)) }
    }

    /// The table this health makes of the configured rules: live real servers at their effective weights;
    /// failed ones removed, or at weight 0 with `inhibit_on_failure`; while a virtual server's quorum is lost
    /// and it has a sorry server, the sorry server alone (real servers removed or at weight 0).
    public func desired() -> DirectorConfig {
        var table = config.director
        for (s, health) in config.services.enumerated() {
            let sorryActive = !quorumUp[s] && health.sorryServer != nil
            var reals: [RealServerConfig] = []
            for (r, real) in health.reals.enumerated() {
                var entry = real.config
                if isAlive(service: s, real: r) && !sorryActive {
                    entry.weight = effectiveWeight(service: s, real: r)
                } else if real.inhibitOnFailure {
                    entry.weight = 0
                } else {
                    continue
                }
                reals.append(entry)
            }
            if let sorry = health.sorryServer, !reals.contains(where: { $0.endpoint == sorry.config.endpoint }) {
                if sorryActive {
                    reals.append(sorry.config)
                } else if sorry.inhibit {
                    var idle = sorry.config
                    idle.weight = 0
                    reals.append(idle)
                }
            }
            for key in health.keys {
                guard let index = table.serviceIndex(of: key) else { continue }
                table.services[index].reals = reals
            }
        }
        return table
    }
}
