import Dataplane
import Foundation
import Packet

// expire_nodest_conn for a real server that health checking took out: rather than letting it drain (its
// connections carry on, IPVS's default for a removed server), its connections expire at their next packet.
// A UDP flow's next datagram is scheduled afresh onto a live server; a TCP segment that is not a SYN is
// dropped (the client's connection times out or is reset by the server it reaches next), as IPVS does
// with expire_nodest_conn. Only for servers the health monitor removed; operators' removals still drain.

extension Director {
    /// Ends the draining of `server` (already removed from `service`): its cell is released, so the workers'
    /// next snapshot maps none of its connections and each expires at its next packet (the sweep reclaims
    /// the idle ones). Returns false when the server was not draining (it had no connections left).
    @discardableResult
    public func expireConnections(service: ServiceKey, server: L4Endpoint) throws -> Bool {
        let identity = RealServerIdentity(service: service, endpoint: server)
        guard configuration.service(service)?.realIndex(of: server) == nil,
              let drained = cells.state.draining[identity] else { return false }
        // As a drained release: its traffic stays in the service's totals. The free list hands cells out
        // oldest first, so the cell is not given to another server while its orphans are being reclaimed.
        ledger.release(drained.cell, of: identity, serviceExists: configuration.serviceIndex(of: service) != nil)
        cells.release(identity)
        // The same configuration again: the snapshot without the server's cell, the maps without its entries.
        try reload(configuration)
        return true
    }
}
