import Dataplane
import Foundation
import Logging
import Packet

/// Keeps the real servers' MAC addresses in step with the kernel's neighbour table: asks the kernel to
/// resolve what it does not know, re-confirms entries that went stale, and reports servers that do not
/// answer (they get no new connections until they do). A real server behind a router (typical for
/// tunnelling) gets its gateway's MAC: the kernel's route to it says which neighbour that is.
final class RealServerResolver {
    /// How often a stale entry is re-confirmed, and an unanswered one asked again.
    static let reconfirmInterval: TimeInterval = 15
    static let retryInterval: TimeInterval = 1

    private let table: NeighbourTable
    private let interfaceName: String
    private let logger: Logger
    private(set) var macs: [IPAddress: MACAddress] = [:]
    private var failed: Set<IPAddress> = []
    private var lastRequest: [IPAddress: Date] = [:]
    /// The neighbour each real server is reached through (itself when on-link), from the kernel's routes.
    private var nextHops: [IPAddress: IPAddress] = [:]
    private var nextHopsRead = Date.distantPast
    private var offInterface: Set<IPAddress> = []

    init(table: NeighbourTable, interfaceName: String, logger: Logger) {
        self.table = table
        self.interfaceName = interfaceName
        self.logger = logger
    }

    /// Reads the table and acts on it for `addresses`; returns true when a MAC changed, appeared or
    /// became unusable, i.e. when the workers need a new snapshot.
    func refresh(_ addresses: Set<IPAddress>, now: Date = Date()) -> Bool {
        let entries: [IPAddress: NeighbourEntry]
        do {
            entries = Dictionary(try table.dump().map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        } catch {
            logger.warning("reading the neighbour table failed: \(error)")
            return false
        }
        if now.timeIntervalSince(nextHopsRead) >= Self.reconfirmInterval || !addresses.isSubset(of: nextHops.keys) {
            readRoutes(addresses, now: now)
        }
        var changed = false
        for real in addresses {
            let address = nextHops[real] ?? real
            let entry = entries[address]
            if let entry, entry.isValid, let mac = entry.mac {
                if macs[real] != mac {
                    logger.info("real server \(real) is at \(mac)\(address == real ? "" : " (gateway \(address))") on \(interfaceName)")
                    macs[real] = mac
                    changed = true
                }
                failed.remove(address)
                if entry.state & 0x04 /* NUD_STALE */ != 0 { request(address, every: Self.reconfirmInterval, now: now) }
            } else if let entry, entry.isFailed {
                if macs.removeValue(forKey: real) != nil { changed = true }
                if failed.insert(address).inserted {
                    let who = address == real ? "real server \(real)" : "gateway \(address) of real server \(real)"
                    logger.warning("\(who) does not answer ARP/ND on \(interfaceName): it gets no traffic until it resolves")
                }
                request(address, every: Self.retryInterval, now: now)
            } else {
                // Absent or being resolved: keep what we had, and make sure the kernel is asking.
                request(address, every: Self.retryInterval, now: now)
            }
        }
        for gone in macs.keys where !addresses.contains(gone) {
            macs.removeValue(forKey: gone)
            changed = true
        }
        return changed
    }

    /// Asks the kernel's routes which neighbour reaches each real server.
    private func readRoutes(_ addresses: Set<IPAddress>, now: Date) {
        nextHopsRead = now
        for real in addresses {
            do {
                guard let hop = try table.nextHop(for: real) else {
                    // Try it as a neighbour; its ARP/ND failure is reported below.
                    nextHops[real] = real
                    continue
                }
                nextHops[real] = hop.address
                if !hop.sameInterface, offInterface.insert(real).inserted {
                    logger.warning("the route to real server \(real) leaves through another interface than \(interfaceName); the director still sends to it from \(interfaceName) through \(hop.address)")
                }
            } catch {
                logger.warning("route lookup for \(real) failed: \(error)")
            }
        }
    }

    /// Waits for the kernel to report a neighbour change, at most `milliseconds`.
    func waitForChange(milliseconds: Int32) -> Bool { table.waitForChange(milliseconds: milliseconds) }

    private func request(_ address: IPAddress, every interval: TimeInterval, now: Date) {
        if let last = lastRequest[address], now.timeIntervalSince(last) < interval { return }
        lastRequest[address] = now
        do { try table.resolve(address) } catch { logger.warning("\(error)") }
    }
}
