@testable import Control
import Dataplane
import Foundation
import Logging
import Packet
import XCTest

/// The reload planner on its own: no kernel, no director.
final class ReloadPlanTests: XCTestCase {
    private let now = Date(timeIntervalSince1970: 1000)
    private let web = ServiceKey(proto: .tcp, address: IPAddress("192.0.2.10")!, port: 80)
    private let dns = ServiceKey(proto: .udp, address: IPAddress("192.0.2.10")!, port: 53)
    private let source4 = [IPAddress("198.51.100.2")!]

    private func real(_ address: String, port: UInt16 = 80, weight: Int32 = 1, method: ForwardingMethod = .directRouting) -> RealServerConfig {
        RealServerConfig(endpoint: L4Endpoint(address: IPAddress(address)!, port: port), weight: weight, method: method)
    }

    private func config(_ services: (ServiceKey, [RealServerConfig], [IPAddress])...) -> DirectorConfig {
        DirectorConfig(services: services.map { key, reals, locals in
            ServiceConfig(proto: key.proto, endpoint: key.endpoint, scheduler: .rr, reals: reals, localAddresses: locals)
        })
    }

    private func identity(_ service: ServiceKey, _ real: RealServerConfig) -> RealServerIdentity {
        RealServerIdentity(service: service, endpoint: real.endpoint)
    }

    private func plan(_ next: DirectorConfig, limits: ReloadLimits = ReloadLimits(), cells: Int = 100) throws -> ReloadPlan {
        try plan(DirectorConfig(), CellState(), next, limits: limits, cells: cells)
    }

    private func plan(_ current: DirectorConfig, _ state: CellState, mapped: MapState = MapState(),
                      _ next: DirectorConfig, limits: ReloadLimits = ReloadLimits(), cells: Int = 100) throws -> ReloadPlan {
        try ReloadPlanner.plan(current: current, state: state, mapped: mapped, next: next, sources: source4, limits: limits,
                               availableCells: cells, now: now)
    }

    private func assertRefused(_ body: @autoclosure () throws -> ReloadPlan, _ expected: String,
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertEqual((error as? ControlError)?.description, expected, file: file, line: line)
        }
    }

    func testFirstPlanGivesEveryServerAFreshCellAndWritesEveryMap() throws {
        let a = real("198.51.100.11"), b = real("198.51.100.12", port: 8080, method: .masquerading)
        let next = config((web, [a, b], []))
        let plan = try plan(next)
        XCTAssertEqual(plan.cells, [identity(web, a): .fresh, identity(web, b): .fresh])
        XCTAssertEqual(plan.writes, plan.maps)
        XCTAssertEqual(plan.maps.services, [web: 0])
        XCTAssertEqual(plan.maps.natReals, [ServiceKey(proto: .tcp, endpoint: b.endpoint)])
        XCTAssertEqual(plan.maps.reals[identity(web, b)], RealServerEntry(weight: 1, method: .masquerading))
        XCTAssertTrue(plan.deletes.isEmpty)
        XCTAssertTrue(plan.draining.isEmpty)
    }

    func testRemovedServerDrainsWithItsSettingsAndReturningOneTakesItsCellBack() throws {
        let a = real("198.51.100.11", weight: 3), b = real("198.51.100.12")
        let current = config((web, [a, b], []))
        let state = CellState(cells: [identity(web, a): 7, identity(web, b): 8])
        let mapped = MapState(current, draining: [:])
        let removed = try plan(current, state, mapped: mapped, config((web, [b], [])))
        XCTAssertEqual(removed.cells, [identity(web, b): .kept(8)])
        XCTAssertEqual(removed.draining, [identity(web, a): DrainingServer(real: a, cell: 7, since: now)])
        XCTAssertEqual(removed.writes.reals, [identity(web, a): RealServerEntry(weight: 3, method: .directRouting, draining: true)],
                       "the draining server stays listed, flagged")
        XCTAssertTrue(removed.deletes.isEmpty)

        let drainingState = CellState(cells: [identity(web, b): 8], draining: removed.draining)
        let back = try plan(removed.configuration, drainingState, mapped: removed.maps, current)
        XCTAssertEqual(back.cells, [identity(web, a): .returning(7), identity(web, b): .kept(8)])
        XCTAssertTrue(back.draining.isEmpty)
        XCTAssertEqual(back.writes.reals, [identity(web, a): RealServerEntry(weight: 3, method: .directRouting)])
    }

    func testDeletingAServiceDeletesItsEntriesAfterwardsAndKeepsDrainingNATRealsSteered() throws {
        let a = real("198.51.100.11", port: 8080, method: .masquerading), d = real("198.51.100.53", port: 53)
        let current = config((web, [a], []), (dns, [d], []))
        let state = CellState(cells: [identity(web, a): 1, identity(dns, d): 2])
        let plan = try plan(current, state, mapped: MapState(current, draining: [:]), config((dns, [d], [])))
        XCTAssertEqual(plan.deletes.services, [web])
        XCTAssertEqual(plan.deletes.reals, [identity(web, a)], "a draining server of a deleted service is not listed")
        XCTAssertTrue(plan.deletes.natReals.isEmpty, "its replies still come back through the director")
        XCTAssertEqual(plan.writes.services, [dns: 0], "the remaining service's index moved")
        XCTAssertEqual(plan.draining.keys.first, identity(web, a))
    }

    func testUnchangedConfigurationWritesAndDeletesNothing() throws {
        let a = real("198.51.100.11")
        let current = config((web, [a], [IPAddress("198.51.100.2")!]))
        let plan = try plan(current, CellState(cells: [identity(web, a): 4]), mapped: MapState(current, draining: [:]), current)
        XCTAssertTrue(plan.writes.isEmpty)
        XCTAssertTrue(plan.deletes.isEmpty)
        XCTAssertEqual(plan.cells, [identity(web, a): .kept(4)])
    }

    func testRefusals() {
        var limits = ReloadLimits()
        limits.services = 1
        assertRefused(try plan(config((web, [], []), (dns, [], [])), limits: limits), "too many virtual services: at most 1")

        limits = ReloadLimits()
        limits.realServers = 2
        let draining = CellState(draining: [identity(dns, real("198.51.100.99")): DrainingServer(real: real("198.51.100.99"), cell: 9, since: now)])
        assertRefused(try plan(DirectorConfig(), draining, config((web, [real("198.51.100.11"), real("198.51.100.12")], [])), limits: limits),
                      "too many real servers: at most 2, draining ones included")

        assertRefused(try plan(config((web, [real("198.51.100.11"), real("198.51.100.12"), real("198.51.100.13")], [])), cells: 1),
                      "too many real servers: no counter cell left for 2 of them")

        limits = ReloadLimits()
        limits.localAddresses = 1
        assertRefused(try plan(config((web, [], [IPAddress("198.51.100.2")!, IPAddress("198.51.100.3")!])), limits: limits),
                      "too many local addresses: at most 1")

        assertRefused(try plan(config((web, [real("198.51.100.11", method: .fullNAT)], []))),
                      "real server 198.51.100.11:80 of -t 192.0.2.10:80 uses --fullnat, but the service has no local address "
                        + "of its family: add one with -P -t 192.0.2.10:80 -z ADDRESS")

        assertRefused(try plan(config((web, [real("2001:db8::11", method: .tunnel)], []))),
                      "real server [2001:db8::11]:80 of -t 192.0.2.10:80 is tunnelled, but the director has no IPv6 address "
                        + "to send from: give one with --source-address")
    }

    func testReturningAndKeptServersNeedNoFreeCell() throws {
        let a = real("198.51.100.11"), b = real("198.51.100.12")
        let state = CellState(cells: [identity(web, a): 1], draining: [identity(web, b): DrainingServer(real: b, cell: 2, since: now)])
        let plan = try plan(config((web, [a], [])), state, config((web, [a, b], [])), cells: 0)
        XCTAssertEqual(plan.cells, [identity(web, a): .kept(1), identity(web, b): .returning(2)])
    }
}

/// The map syncer commits writes all or nothing and reports failed deletes.
final class MapSyncerTests: XCTestCase {
    private final class FakeMaps: XDPMaps {
        var services: [ServiceKey: Int] = [:]
        var reals: [RealServerIdentity: RealServerEntry] = [:]
        var natReals: Set<ServiceKey> = []
        var localAddresses: Set<IPAddress> = []
        var fragmentAddresses: Set<FragmentAddress> = []
        /// Refuse the write after this many more (nil: never); only that one, as a full map refuses an insert.
        var writesLeft: Int?
        var refuseDeletes = false

        private func allowWrite() throws(DataplaneError) {
            if let left = writesLeft {
                writesLeft = left - 1
                if left == 0 { writesLeft = nil; throw DataplaneError("map full") }
            }
        }
        private func allowDelete() throws(DataplaneError) { if refuseDeletes { throw DataplaneError("busy") } }

        func setService(_ service: ServiceKey, index: Int) throws(DataplaneError) { try allowWrite(); services[service] = index }
        func removeService(_ service: ServiceKey) throws(DataplaneError) { try allowDelete(); services[service] = nil }
        func setRealServer(_ server: L4Endpoint, of service: ServiceKey, _ entry: RealServerEntry) throws(DataplaneError) {
            try allowWrite(); reals[RealServerIdentity(service: service, endpoint: server)] = entry
        }
        func removeRealServer(_ server: L4Endpoint, of service: ServiceKey) throws(DataplaneError) {
            try allowDelete(); reals[RealServerIdentity(service: service, endpoint: server)] = nil
        }
        func setNATReal(_ real: ServiceKey) throws(DataplaneError) { try allowWrite(); natReals.insert(real) }
        func removeNATReal(_ real: ServiceKey) throws(DataplaneError) { try allowDelete(); natReals.remove(real) }
        func setLocalAddress(_ address: IPAddress) throws(DataplaneError) { try allowWrite(); localAddresses.insert(address) }
        func removeLocalAddress(_ address: IPAddress) throws(DataplaneError) { try allowDelete(); localAddresses.remove(address) }
        func setFragmentAddress(_ entry: FragmentAddress) throws(DataplaneError) { try allowWrite(); fragmentAddresses.insert(entry) }
        func removeFragmentAddress(_ entry: FragmentAddress) throws(DataplaneError) { try allowDelete(); fragmentAddresses.remove(entry) }

        var state: MapState {
            var state = MapState()
            state.services = services; state.reals = reals; state.natReals = natReals; state.localAddresses = localAddresses
            state.fragmentAddresses = fragmentAddresses
            return state
        }
    }

    private let web = ServiceKey(proto: .tcp, address: IPAddress("192.0.2.10")!, port: 80)

    private func target(weight: Int32, servers: Int) -> MapState {
        let reals = (0..<servers).map {
            RealServerConfig(endpoint: L4Endpoint(address: .v4(0xC633_640B + UInt32($0)), port: 8080), weight: weight, method: .masquerading)
        }
        return MapState(DirectorConfig(services: [ServiceConfig(proto: .tcp, endpoint: web.endpoint, scheduler: .rr, reals: reals,
                                                                localAddresses: [IPAddress("198.51.100.2")!])]), draining: [:])
    }

    func testARefusedWriteIsUndoneAndTheMapsHoldWhatTheyHeld() throws {
        let maps = FakeMaps()
        let syncer = MapSyncer(maps: maps, logger: Logger(label: "test"))
        let before = target(weight: 1, servers: 2)
        try syncer.sync(to: before)
        XCTAssertEqual(maps.state, before)
        XCTAssertEqual(syncer.mapped, before)

        let next = target(weight: 5, servers: 4)
        maps.writesLeft = 3
        XCTAssertThrowsError(try syncer.write(next.writes(from: syncer.mapped)))
        XCTAssertEqual(maps.state, before, "changed values put back, new entries removed")
        XCTAssertEqual(syncer.mapped, before)

        try syncer.write(next.writes(from: syncer.mapped))
        XCTAssertEqual(maps.state, next)
    }

    /// Fragments are steered by address and protocol: every VIP, every NAT real server's address, once each.
    func testFragmentAddressesAreTheServicesAndNATRealServersAddresses() {
        let state = target(weight: 1, servers: 2)
        XCTAssertEqual(state.fragmentAddresses, [
            FragmentAddress(address: web.endpoint.address, proto: .tcp, role: .toService),
            FragmentAddress(address: .v4(0xC633_640B), proto: .tcp, role: .fromNATReal),
            FragmentAddress(address: .v4(0xC633_640C), proto: .tcp, role: .fromNATReal),
        ])
        XCTAssertEqual(target(weight: 1, servers: 1).deletes(from: state).fragmentAddresses,
                       [FragmentAddress(address: .v4(0xC633_640C), proto: .tcp, role: .fromNATReal)])
    }

    func testAFailedDeleteIsReportedAndRetried() throws {
        let maps = FakeMaps()
        let syncer = MapSyncer(maps: maps, logger: Logger(label: "test"))
        try syncer.sync(to: target(weight: 1, servers: 3))
        maps.refuseDeletes = true
        let smaller = target(weight: 1, servers: 1)
        syncer.delete(smaller.deletes(from: syncer.mapped))
        XCTAssertEqual(syncer.mapped, target(weight: 1, servers: 3), "entries that could not be deleted stay known")
        maps.refuseDeletes = false
        try syncer.sync(to: smaller)
        XCTAssertEqual(maps.state, smaller)
        XCTAssertEqual(syncer.mapped, smaller)
    }
}
