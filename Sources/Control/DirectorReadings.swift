import Dataplane
import Foundation
import Packet
import Scheduling

// What the director shows of itself: listings for `ipvsadm -L`, traffic with `-Z` applied, connections.

extension Director {
    /// Everything `ipvsadm -L` can show; the connections only when asked (`-c`: each worker lists its own
    /// between batches, so it takes up to a poll timeout).
    public func listing(connections: Bool) -> DirectorListing {
        let rates = ledger.estimator.rates
        let services = configuration.services.map { service -> ServiceListing in
            let reals = service.reals.map { real -> RealServerListing in
                let identity = RealServerIdentity(service: service.key, endpoint: real.endpoint)
                let counts = cells.cell(of: identity).map { counters.counts($0) } ?? DestinationCounts()
                return RealServerListing(
                    endpoint: real.endpoint, method: real.method, weight: real.weight,
                    activeConnections: counts.active, inactiveConnections: counts.inactive,
                    persistentConnections: counts.persistent, upperThreshold: real.upperThreshold,
                    lowerThreshold: real.lowerThreshold,
                    stats: ledger.shown(.real(identity), realTraffic(identity)),
                    rates: rates[.real(identity)] ?? .zero)
            }
            return ServiceListing(key: service.key, scheduler: service.scheduler, options: service.options,
                                  stats: ledger.shown(.service(service.key), serviceTraffic(service.key)),
                                  rates: rates[.service(service.key)] ?? .zero, reals: reals,
                                  localAddresses: service.localAddresses)
        }
        return DirectorListing(connectionTableSize: options.connectionsPerWorker * max(workers.count, 1),
                               services: services, connections: connections ? connectionListing() : [],
                               timeouts: configuration.timeouts ?? TimeoutSettings())
    }

    /// `ipvsadm -Z [service]`: listings count from now on (the workers' counters are never written by anyone
    /// but their worker, so zeroing is a baseline).
    public func zeroCounters(service: ServiceKey?) throws {
        if let service, configuration.serviceIndex(of: service) == nil { throw ConfigError.noSuchService(service) }
        for each in configuration.services where service == nil || each.key == service {
            ledger.zero(.service(each.key), at: serviceTraffic(each.key))
            for real in each.reals {
                let identity = RealServerIdentity(service: each.key, endpoint: real.endpoint)
                ledger.zero(.real(identity), at: realTraffic(identity))
            }
        }
    }

    /// A real server's traffic since it was added (configured or draining).
    func realTraffic(_ identity: RealServerIdentity) -> TrafficStats {
        guard let cell = cells.anyCell(of: identity) else { return .zero }
        return ledger.cellTraffic(cell)
    }

    /// A service's traffic: its real servers', those draining, and those that left it.
    func serviceTraffic(_ key: ServiceKey) -> TrafficStats {
        var total = ledger.history(of: key)
        for (identity, cell) in cells.state.cells where identity.service == key { total += ledger.cellTraffic(cell) }
        for (identity, server) in cells.state.draining where identity.service == key { total += ledger.cellTraffic(server.cell) }
        return total
    }

    /// Every service's and real server's traffic, not zeroed: what the rates are estimated from.
    func rawTraffic() -> [StatisticsKey: TrafficStats] {
        var readings: [StatisticsKey: TrafficStats] = [:]
        for service in configuration.services {
            readings[.service(service.key)] = serviceTraffic(service.key)
            for real in service.reals {
                let identity = RealServerIdentity(service: service.key, endpoint: real.endpoint)
                readings[.real(identity)] = realTraffic(identity)
            }
        }
        return readings
    }

    /// Every worker's connections and templates, sorted by client, for `ipvsadm -Lc`.
    private func connectionListing() -> [ConnectionListing] {
        for worker in workers { worker.requestConnections() }
        var answers: [[ConnectionRecord]?] = Array(repeating: nil, count: workers.count)
        let deadline = Date().addingTimeInterval(1)
        while answers.contains(where: { $0 == nil }) && Date() < deadline {
            for (index, worker) in workers.enumerated() where answers[index] == nil {
                answers[index] = worker.takeConnections()
            }
            if answers.contains(where: { $0 == nil }) { usleep(5000) }
        }
        return answers.compactMap { $0 }.joined().compactMap { record -> ConnectionListing? in
            guard let proto = L4Protocol(number: record.proto) else { return nil }
            return ConnectionListing(proto: proto, expiresIn: record.expiresIn,
                                     state: record.isTemplate ? "NONE" : record.state.ipvsName, client: record.client,
                                     virtual: record.virtual, destination: record.destination, isTemplate: record.isTemplate)
        }
    }
}

/// IPVS's rate estimator: every two seconds, the per-second rates over the last interval, smoothed as IPVS
/// smooths them (each new sample moves the estimate a quarter of the way), kept unrounded between samples.
struct RateEstimator {
    static let interval: TimeInterval = 2

    private var last: [StatisticsKey: TrafficStats] = [:]
    private var smoothed: [StatisticsKey: SIMD8<Double>] = [:]

    var rates: [StatisticsKey: TrafficRates] {
        smoothed.mapValues { value in
            func rounded(_ index: Int) -> UInt64 { UInt64(max(0, value[index].rounded())) }
            return TrafficRates(connectionsPerSecond: rounded(0), inPacketsPerSecond: rounded(1),
                                outPacketsPerSecond: rounded(2), inBytesPerSecond: rounded(3),
                                outBytesPerSecond: rounded(4))
        }
    }

    mutating func update(_ readings: [StatisticsKey: TrafficStats], seconds: TimeInterval) {
        guard seconds > 0 else { return }
        var next: [StatisticsKey: SIMD8<Double>] = [:]
        for (key, reading) in readings {
            guard let previous = last[key] else {
                next[key] = .zero
                continue
            }
            let delta = reading.since(previous)
            var sample = SIMD8<Double>.zero
            sample[0] = Double(delta.connections)
            sample[1] = Double(delta.inPackets)
            sample[2] = Double(delta.outPackets)
            sample[3] = Double(delta.inBytes)
            sample[4] = Double(delta.outBytes)
            sample /= seconds
            let old = smoothed[key] ?? .zero
            next[key] = old + (sample - old) / 4
        }
        last = readings
        smoothed = next
    }
}
