import Packet
import Control
import Dataplane
import Prometheus

/// The director's counters in the Prometheus text exposition format (version 0.0.4).
///
/// Every scrape builds a fresh `PrometheusCollectorRegistry` from one reading, for two reasons:
/// - swift-prometheus counters cannot be set, only incremented from zero; our readings are cumulative
///   already, so a fresh counter incremented once by the reading holds exactly that value and keeps the
///   counter type (rather than falling back to gauges, which would lose `rate()`'s reset handling);
/// - a service or real server removed since the last scrape is simply not registered again, so its series
///   disappears with no bookkeeping of the handles to unregister.
/// A scrape builds a few hundred small objects every few seconds, on the metrics thread, far from the packet path.
public final class MetricsExporter: Sendable {
    public typealias Provider = @Sendable () -> (statistics: DirectorStatistics, services: [ServiceListing])

    private let provider: Provider
    /// More families in exposition text, appended as they are (health checking's gauges).
    private let additional: (@Sendable () -> String)?

    public init(provider: @escaping Provider, additional: (@Sendable () -> String)? = nil) {
        self.provider = provider
        self.additional = additional
    }

    /// The exposition of a reading taken now.
    public func render() -> String {
        let reading = provider()
        return Self.render(statistics: reading.statistics, services: reading.services) + (additional?() ?? "")
    }

    /// The exposition of one reading.
    public static func render(statistics: DirectorStatistics, services: [ServiceListing]) -> String {
        let registry = PrometheusCollectorRegistry()
        addWorkers(statistics.workers, to: registry)
        for (name, value) in zip(DirectorStatistics.xdpCounterNames, statistics.xdp) {
            registry.makeCounter(name: "xdirector_xdp_\(name)_total", help: "Frames the XDP program counted as \(name).")
                .increment(by: Int64(clamping: value))
        }
        for service in services {
            addService(service, to: registry)
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    private static func addWorkers(_ workers: [DirectorStatistics.WorkerRow], to registry: PrometheusCollectorRegistry) {
        for row in workers {
            let labels = [("queue", String(row.queue)), ("core", String(row.core))]
            for counter in WorkerCounter.allCases {
                let value = row.counters.indices.contains(counter.rawValue) ? row.counters[counter.rawValue] : 0
                if counter == .activeConnections {
                    registry.makeGauge(name: "xdirector_worker_\(counter.name)", labels: labels,
                                       help: "Connections in the worker's table.")
                        .set(Int64(clamping: value))
                } else {
                    registry.makeCounter(name: "xdirector_worker_\(counter.name)_total", labels: labels,
                                         help: "Worker counter \(counter.name).")
                        .increment(by: Int64(clamping: value))
                }
            }
        }
    }

    private static let trafficHelp = [
        "connections": "Connections scheduled.", "in_packets": "Packets from clients.",
        "out_packets": "Packets to clients.", "in_bytes": "Bytes from clients.", "out_bytes": "Bytes to clients.",
    ]

    private static func addTraffic(_ stats: TrafficStats, prefix: String, labels: [(String, String)],
                                   to registry: PrometheusCollectorRegistry) {
        let values: [(String, UInt64)] = [("connections", stats.connections), ("in_packets", stats.inPackets),
                                          ("out_packets", stats.outPackets), ("in_bytes", stats.inBytes),
                                          ("out_bytes", stats.outBytes)]
        for (name, value) in values {
            registry.makeCounter(name: "\(prefix)_\(name)_total", labels: labels, help: trafficHelp[name] ?? "")
                .increment(by: Int64(clamping: value))
        }
    }

    private static func addService(_ service: ServiceListing, to registry: PrometheusCollectorRegistry) {
        let labels = [("protocol", service.key.proto.rawValue), ("vip", service.key.endpoint.address.description),
                      ("port", String(service.key.endpoint.port))]
        addTraffic(service.stats, prefix: "xdirector_service", labels: labels, to: registry)
        for real in service.reals {
            // A name of their own: summing a service with its real servers must not count traffic twice.
            let realLabels = labels + [("real", real.endpoint.address.description), ("real_port", String(real.endpoint.port))]
            addTraffic(real.stats, prefix: "xdirector_real", labels: realLabels, to: registry)
            let gauges: [(String, Int32, String)] = [
                ("active_connections", real.activeConnections, "Established connections (IPVS ActiveConn)."),
                ("inactive_connections", real.inactiveConnections, "Other connections (IPVS InActConn)."),
                ("persistent_connections", real.persistentConnections, "Persistence templates (IPVS PersistConn)."),
                ("weight", real.weight, "Scheduling weight."),
            ]
            for (name, value, help) in gauges {
                registry.makeGauge(name: "xdirector_real_\(name)", labels: realLabels, help: help).set(Int64(value))
            }
        }
    }
}
