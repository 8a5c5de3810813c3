import Dataplane
import Foundation
import Packet

/// Whose traffic a reading or a rate is about.
enum StatisticsKey: Hashable {
    case service(ServiceKey)
    case real(RealServerIdentity)
}

/// The traffic listings show: each cell's reading since it was handed out, the traffic of servers that left
/// a service (so its totals never go down), `ipvsadm -Z` baselines and the IPVS-smoothed rates.
final class TrafficLedger {
    /// Per-worker traffic of each cell, written by the workers.
    let traffic: DestinationTrafficStore
    /// A cell's reading when it was last handed out.
    private var cellBase: [UInt32: TrafficStats] = [:]
    /// Traffic of a service's real servers that have left it.
    private var serviceHistory: [ServiceKey: TrafficStats] = [:]
    /// `ipvsadm -Z`: readings subtracted from what listings show.
    private var zeroed: [StatisticsKey: TrafficStats] = [:]
    private(set) var estimator = RateEstimator()

    init(workers: Int, capacity: Int) {
        traffic = DestinationTrafficStore(workers: workers, capacity: capacity)
    }

    /// A cell handed to a real server (new, or restored after a restart): its traffic counts from now on.
    func handOut(_ cell: UInt32) { cellBase[cell] = traffic.totals(cell) }

    /// A drained server's cell released: its traffic joins its service's when the service is still there.
    func release(_ cell: UInt32, of identity: RealServerIdentity, serviceExists: Bool) {
        if serviceExists { serviceHistory[identity.service, default: .zero] += cellTraffic(cell) }
        zeroed[.real(identity)] = nil
        cellBase[cell] = nil
    }

    /// A cell's traffic since it was handed to its real server.
    func cellTraffic(_ cell: UInt32) -> TrafficStats {
        traffic.totals(cell).since(cellBase[cell] ?? .zero)
    }

    /// Traffic that left `service` with its released servers.
    func history(of service: ServiceKey) -> TrafficStats { serviceHistory[service] ?? .zero }

    /// `reading` less its `-Z` baseline.
    func shown(_ key: StatisticsKey, _ reading: TrafficStats) -> TrafficStats { reading.since(zeroed[key] ?? .zero) }

    /// `ipvsadm -Z`: `reading` is the new baseline of `key`.
    func zero(_ key: StatisticsKey, at reading: TrafficStats) { zeroed[key] = reading }

    func updateRates(_ readings: [StatisticsKey: TrafficStats], seconds: Double) {
        estimator.update(readings, seconds: seconds)
    }
}
