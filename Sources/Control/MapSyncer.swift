import Dataplane
import Logging
import Packet

/// The XDP maps as the control plane writes them (`XDPProgram`'s typed API; a fake in tests).
protocol XDPMaps: AnyObject {
    func setService(_ service: ServiceKey, index: Int) throws(DataplaneError)
    func removeService(_ service: ServiceKey) throws(DataplaneError)
    func setRealServer(_ server: L4Endpoint, of service: ServiceKey, _ entry: RealServerEntry) throws(DataplaneError)
    func removeRealServer(_ server: L4Endpoint, of service: ServiceKey) throws(DataplaneError)
    func setNATReal(_ real: ServiceKey) throws(DataplaneError)
    func removeNATReal(_ real: ServiceKey) throws(DataplaneError)
    func setLocalAddress(_ address: IPAddress) throws(DataplaneError)
    func removeLocalAddress(_ address: IPAddress) throws(DataplaneError)
    func setFragmentAddress(_ entry: FragmentAddress) throws(DataplaneError)
    func removeFragmentAddress(_ entry: FragmentAddress) throws(DataplaneError)
}

extension XDPProgram: XDPMaps {}

/// Keeps the XDP maps in step with what it is told they should hold, and knows what they hold. Its one job:
/// writes all or nothing (a refused write undoes the writes before it), deletes reported when they fail
/// (and retried at the next sync).
final class MapSyncer {
    private let maps: XDPMaps
    private let logger: Logger
    /// What the maps hold.
    private(set) var mapped = MapState()

    init(maps: XDPMaps, logger: Logger) {
        self.maps = maps
        self.logger = logger
    }

    /// Writes `writes` (new entries and changed values). When the kernel refuses one, the entries written
    /// before it get their previous values back (the inverse plan), the undo is reported, and the refusal is
    /// thrown: the maps hold what they held.
    func write(_ writes: MapState) throws(DataplaneError) {
        var done = MapState()
        do {
            for (service, index) in writes.services.sorted(by: { $0.value < $1.value }) {
                try maps.setService(service, index: index)
                done.services[service] = index
            }
            for (identity, entry) in writes.reals {
                try maps.setRealServer(identity.endpoint, of: identity.service, entry)
                done.reals[identity] = entry
            }
            for real in writes.natReals {
                try maps.setNATReal(real)
                done.natReals.insert(real)
            }
            for address in writes.localAddresses {
                try maps.setLocalAddress(address)
                done.localAddresses.insert(address)
            }
            for entry in writes.fragmentAddresses {
                try maps.setFragmentAddress(entry)
                done.fragmentAddresses.insert(entry)
            }
        } catch {
            undo(done)
            throw error
        }
        mapped.services.merge(done.services) { $1 }
        mapped.reals.merge(done.reals) { $1 }
        mapped.natReals.formUnion(done.natReals)
        mapped.localAddresses.formUnion(done.localAddresses)
        mapped.fragmentAddresses.formUnion(done.fragmentAddresses)
    }

    /// Puts back what `done` overwrote: previous values rewritten, new entries deleted.
    private func undo(_ done: MapState) {
        var failures: [String] = []
        func attempt(_ body: () throws(DataplaneError) -> Void) {
            do { try body() } catch { failures.append(error.description) }
        }
        for (service, _) in done.services {
            if let index = mapped.services[service] { attempt { () throws(DataplaneError) in try maps.setService(service, index: index) } }
            else { attempt { () throws(DataplaneError) in try maps.removeService(service) } }
        }
        for (identity, _) in done.reals {
            if let entry = mapped.reals[identity] {
                attempt { () throws(DataplaneError) in try maps.setRealServer(identity.endpoint, of: identity.service, entry) }
            } else {
                attempt { () throws(DataplaneError) in try maps.removeRealServer(identity.endpoint, of: identity.service) }
            }
        }
        for real in done.natReals where !mapped.natReals.contains(real) {
            attempt { () throws(DataplaneError) in try maps.removeNATReal(real) }
        }
        for address in done.localAddresses where !mapped.localAddresses.contains(address) {
            attempt { () throws(DataplaneError) in try maps.removeLocalAddress(address) }
        }
        for entry in done.fragmentAddresses where !mapped.fragmentAddresses.contains(entry) {
            attempt { () throws(DataplaneError) in try maps.removeFragmentAddress(entry) }
        }
        if failures.isEmpty {
            logger.warning("a map refused the change; the entries written before it were put back")
        } else {
            logger.error("a map refused the change, and putting back the entries written before it failed: \(failures.joined(separator: "; "))")
        }
    }

    /// Deletes `keys`; a failure is reported and the entry stays known, so the next sync tries again.
    func delete(_ keys: MapKeys) {
        func attempt(_ body: () throws(DataplaneError) -> Void) -> Bool {
            do { try body(); return true } catch { logger.error("\(error)"); return false }
        }
        for service in keys.services where attempt({ () throws(DataplaneError) in try maps.removeService(service) }) {
            mapped.services[service] = nil
        }
        for identity in keys.reals
        where attempt({ () throws(DataplaneError) in try maps.removeRealServer(identity.endpoint, of: identity.service) }) {
            mapped.reals[identity] = nil
        }
        for real in keys.natReals where attempt({ () throws(DataplaneError) in try maps.removeNATReal(real) }) {
            mapped.natReals.remove(real)
        }
        for address in keys.localAddresses where attempt({ () throws(DataplaneError) in try maps.removeLocalAddress(address) }) {
            mapped.localAddresses.remove(address)
        }
        for entry in keys.fragmentAddresses
        where attempt({ () throws(DataplaneError) in try maps.removeFragmentAddress(entry) }) {
            mapped.fragmentAddresses.remove(entry)
        }
    }

    /// Brings the maps to `target`: writes first, then deletes (for changes that need no snapshot between).
    func sync(to target: MapState) throws(DataplaneError) {
        try write(target.writes(from: mapped))
        delete(target.deletes(from: mapped))
    }
}
