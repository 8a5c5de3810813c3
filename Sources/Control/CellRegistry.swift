import Dataplane
import Foundation
import Packet
import Scheduling

/// Who holds which counter cell (a real server's identity for the workers): hands cells out as plans say,
/// takes them back once a drained server counts nothing, writes the thresholds, and records every holder in
/// the connection state file so a restarted director gives each its cell back.
final class CellRegistry {
    /// Connection counts per real server, shared by the workers; from `attach` on, the connection state
    /// file's cells, so they survive a restart with the connections they count.
    private(set) var counters: DestinationCounterStore
    private(set) var state = CellState()
    private var connectionState: ConnectionStateFile?
    /// The cells whose holder is recorded in the connection state file.
    private var recordedCells: Set<UInt32> = []

    init(capacity: Int) {
        counters = DestinationCounterStore(capacity: capacity)
    }

    /// A configured real server's cell.
    func cell(of identity: RealServerIdentity) -> UInt32? { state.cells[identity] }

    /// A configured or draining real server's cell.
    func anyCell(of identity: RealServerIdentity) -> UInt32? { state.cells[identity] ?? state.draining[identity]?.cell }

    /// Takes the connection state file's counter store. When the file holds a dead director's connections,
    /// every real server it names takes its cell back: those in `configured` keep their connections, the
    /// others drain with their recorded settings, as if they had just been removed. Returns the restored cells.
    func attach(_ file: ConnectionStateFile, configured: Set<RealServerIdentity>, now: Date) -> [UInt32] {
        connectionState = file
        counters = file.counters
        state = CellState()  // cells handed out before (from another store) mean nothing in this one
        recordedCells = []
        guard file.restored else { return [] }
        var restored: [UInt32] = []
        for (cell, server) in file.recordedRealServers() {
            let identity = RealServerIdentity(service: server.service,
                                              endpoint: L4Endpoint(address: server.route.address, port: server.route.port))
            recordedCells.insert(cell)
            restored.append(cell)
            if configured.contains(identity) {
                state.cells[identity] = cell
            } else {
                state.draining[identity] = DrainingServer(real: Self.realServer(identity.endpoint, server), cell: cell, since: now)
            }
        }
        return restored
    }

    /// Lets go of the connection state file (a stop or a hand-over: the file's fate is the caller's).
    func detach() { connectionState = nil }

    /// Commits a plan's cells: keeps, takes back and hands out (fresh cells for new servers, which the plan's
    /// capacity check has made sure exist), writes every configured server's thresholds, and records the
    /// holders. Returns the fresh cells (their traffic counts from now on).
    func commit(_ plan: ReloadPlan) -> [UInt32] {
        var cells: [RealServerIdentity: UInt32] = [:]
        var fresh: [UInt32] = []
        for service in plan.configuration.services {
            for real in service.reals {
                let identity = RealServerIdentity(service: service.key, endpoint: real.endpoint)
                let cell: UInt32
                switch plan.cells[identity] {
                case .kept(let known)?, .returning(let known)?:
                    cell = known
                case .fresh?, nil:
                    guard let taken = counters.allocate() else { continue }
                    cell = taken
                    fresh.append(taken)
                }
                cells[identity] = cell
                counters.setThresholds(cell, upper: real.upperThreshold, lower: real.lowerThreshold)
            }
        }
        state = CellState(cells: cells, draining: plan.draining)
        record(plan.configuration)
        return fresh
    }

    /// The draining servers whose connections and templates have all ended, at least a second after they
    /// left (so every worker has adopted the snapshot without them).
    func drained(now: Date) -> [(RealServerIdentity, DrainingServer)] {
        state.draining.filter { identity, server in
            guard now.timeIntervalSince(server.since) >= 1 else { return false }
            let counts = counters.counts(server.cell)
            return counts.active <= 0 && counts.inactive <= 0 && counts.persistent <= 0
        }.map { ($0.key, $0.value) }
    }

    /// Releases a drained server's cell and forgets its holder.
    func release(_ identity: RealServerIdentity) {
        guard let server = state.draining.removeValue(forKey: identity) else { return }
        counters.release(server.cell)
        connectionState?.record(cell: server.cell, nil)
        recordedCells.remove(server.cell)
    }

    /// Records in the connection state file which real server holds each cell (configured and draining), and
    /// forgets released cells, so a restarted director knows whose connections it resumes.
    private func record(_ configuration: DirectorConfig) {
        guard let file = connectionState else { return }
        var current: Set<UInt32> = []
        func record(_ service: ServiceKey, _ real: RealServerConfig, _ cell: UInt32) {
            file.record(cell: cell, PersistedRealServer(service: service, route: Self.route(of: real), weight: real.weight,
                                                        upperThreshold: real.upperThreshold, lowerThreshold: real.lowerThreshold))
            current.insert(cell)
        }
        for service in configuration.services {
            for real in service.reals {
                if let cell = state.cells[RealServerIdentity(service: service.key, endpoint: real.endpoint)] {
                    record(service.key, real, cell)
                }
            }
        }
        for (identity, server) in state.draining { record(identity.service, server.real, server.cell) }
        for cell in recordedCells.subtracting(current) { file.record(cell: cell, nil) }
        recordedCells = current
    }

    static func route(of real: RealServerConfig) -> DestinationRoute {
        DestinationRoute(method: real.method, address: real.endpoint.address, port: real.endpoint.port, tunnel: real.tunnel)
    }

    /// A real server as the connection state recorded it.
    private static func realServer(_ endpoint: L4Endpoint, _ server: PersistedRealServer) -> RealServerConfig {
        RealServerConfig(endpoint: endpoint, weight: server.weight, method: server.route.method, tunnel: server.route.tunnel,
                         upperThreshold: server.upperThreshold, lowerThreshold: server.lowerThreshold)
    }
}
