import Keepalived

// How health is shown: `xdirector health` (a table per virtual server) and the Prometheus exposition.

public enum HealthReport {
    public static func render(_ state: HealthState, now: Double) -> String {
        var lines: [String] = []
        for (s, service) in state.config.services.enumerated() {
            let sorry = service.sorryServer.map { state.quorumUp[s] ? ", sorry server \($0.config.endpoint) standing by" : ", sorry server \($0.config.endpoint) serving" } ?? ""
            lines.append("\(service.name): quorum \(state.quorumUp[s] ? "up" : "down"), live weight \(state.liveWeight(s)) (quorum \(service.quorum), hysteresis \(service.hysteresis))\(sorry)")
            for (r, real) in service.reals.enumerated() {
                let alive = state.isAlive(service: s, real: r)
                let action = alive ? "weight \(state.effectiveWeight(service: s, real: r))" : (real.inhibitOnFailure ? "weight 0 (inhibited)" : "removed")
                lines.append("  \(real.endpoint)  \(alive ? "up" : "DOWN"), \(action)")
                if real.checkers.isEmpty { lines.append("    no checker") }
                for c in real.checkers.indices {
                    let id = CheckerID(service: s, real: r, checker: c)
                    guard let status = state.checkers[id] else { continue }
                    let definition = state.definition(id)
                    let last = status.lastResult.map { "\($0.success ? "ok" : "failed"): \($0.reason)" } ?? "not run yet"
                    let latency = status.lastResult.map { String(format: "%.1f ms", $0.latency * 1000) } ?? "-"
                    let name = definition.kind.name.padding(toLength: 10, withPad: " ", startingAt: 0)
                    lines.append("    \(name) \(status.up ? "up  " : "down") for \(duration(now - status.since))"
                        + ", failures in a row \(status.failuresInARow), latency \(latency), last \(last)"
                        + " (\(definition.target(for: real.endpoint)))")
                }
            }
        }
        return lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")
    }

    static func duration(_ seconds: Double) -> String {
        let whole = Int(max(seconds, 0))
        if whole < 120 { return "\(whole) s" }
        if whole < 7200 { return "\(whole / 60) min" }
        return "\(whole / 3600) h"
    }

    /// Gauges per real server and checker, Prometheus text format.
    public static func exposition(_ state: HealthState) -> String {
        var up: [String] = [], latency: [String] = [], failures: [String] = [], real: [String] = []
        for (s, service) in state.config.services.enumerated() {
            for key in service.keys {
                let base = "protocol=\"\(key.proto.rawValue)\",vip=\"\(key.endpoint.address)\",port=\"\(key.endpoint.port)\""
                for (r, server) in service.reals.enumerated() {
                    let labels = base + ",real=\"\(server.endpoint.address)\",real_port=\"\(server.endpoint.port)\""
                    real.append("xdirector_health_real_up{\(labels)} \(state.isAlive(service: s, real: r) ? 1 : 0)")
                    for c in server.checkers.indices {
                        let id = CheckerID(service: s, real: r, checker: c)
                        guard let status = state.checkers[id] else { continue }
                        let checker = labels + ",checker=\"\(state.definition(id).kind.name)\",index=\"\(c)\""
                        up.append("xdirector_health_check_up{\(checker)} \(status.up ? 1 : 0)")
                        latency.append("xdirector_health_check_latency_seconds{\(checker)} \(status.lastResult?.latency ?? 0)")
                        failures.append("xdirector_health_check_failures_in_a_row{\(checker)} \(status.failuresInARow)")
                    }
                }
            }
        }
        func family(_ name: String, _ help: String, _ rows: [String]) -> String {
            rows.isEmpty ? "" : "# HELP \(name) \(help)\n# TYPE \(name) gauge\n" + rows.joined(separator: "\n") + "\n"
        }
        return family("xdirector_health_real_up", "Whether every checker of the real server passes (1) or not (0).", real)
            + family("xdirector_health_check_up", "Whether the checker counts as up.", up)
            + family("xdirector_health_check_latency_seconds", "Duration of the checker's last run.", latency)
            + family("xdirector_health_check_failures_in_a_row", "Failed runs since the last success.", failures)
    }
}

import Foundation
