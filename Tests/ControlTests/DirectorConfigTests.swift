import Control
import Packet
import Scheduling
import XCTest

final class DirectorConfigTests: XCTestCase {
    private let web = tcp("192.0.2.10:80")
    private let dns = udp("192.0.2.10:53")
    private let web6 = tcp("[2001:db8::10]:80")

    private func real(_ text: String, weight: Int32 = 1) -> RealServerConfig {
        RealServerConfig(endpoint: endpoint(text), weight: weight)
    }

    private func apply(_ lines: String..., to config: inout DirectorConfig) throws {
        for line in lines { try config.apply(IPVSCommand(arguments: args(line))) }
    }

    private func assertRefused(_ config: DirectorConfig, _ command: IPVSCommand, _ expected: ConfigError,
                               _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        var copy = config
        do {
            try copy.apply(command)
            XCTFail("\(command) was applied", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
            XCTAssertEqual(error.description, message, file: file, line: line)
        }
        XCTAssertEqual(copy, config, "a refused command changed the configuration", file: file, line: line)
    }

    func testAddServicesAndServersInOrder() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr",
                  "-a -t 192.0.2.10:80 -r 198.51.100.12 -w 3",
                  "-A -u 192.0.2.10:53 -s rr",
                  "-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g",
                  "-a -u 192.0.2.10:53 -r 198.51.100.13 -w 0",
                  "-A -t [2001:db8::10]:80 -s rr",
                  "-a -t [2001:db8::10]:80 -r 2001:db8::11",
                  to: &config)
        XCTAssertEqual(config.services, [
            ServiceConfig(proto: .tcp, endpoint: web.endpoint, scheduler: .wrr,
                          reals: [real("198.51.100.12:80", weight: 3), real("198.51.100.11:80")]),
            ServiceConfig(proto: .udp, endpoint: dns.endpoint, scheduler: .rr, reals: [real("198.51.100.13:53", weight: 0)]),
            ServiceConfig(proto: .tcp, endpoint: web6.endpoint, scheduler: .rr, reals: [real("[2001:db8::11]:80")]),
        ])
        XCTAssertEqual(config.service(web)?.reals.count, 2)
        XCTAssertEqual(config.serviceIndex(of: dns), 1)
        XCTAssertNil(config.service(tcp("192.0.2.10:53")))
        XCTAssertEqual(config.services[0].realIndex(of: endpoint("198.51.100.11:80")), 1)
        XCTAssertEqual(config.services[0].key, web)
    }

    func testTCPAndUDPOnTheSameAddressAreDifferentServices() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:53 -s rr", "-A -u 192.0.2.10:53 -s wrr", to: &config)
        XCTAssertEqual(config.services.map(\.proto), [.tcp, .udp])
    }

    func testEditServiceChangesOnlyTheScheduler() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr", "-a -t 192.0.2.10:80 -r 198.51.100.11 -w 3",
                  "-A -u 192.0.2.10:53 -s rr", to: &config)
        var expected = config
        try apply("-E -t 192.0.2.10:80 -s rr", to: &config)
        expected.services[0].scheduler = .rr
        XCTAssertEqual(config, expected)
        try apply("-E -t 192.0.2.10:80", to: &config)
        XCTAssertEqual(config, expected)
    }

    func testEditServerChangesOnlyTheGivenFields() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr", "-a -t 192.0.2.10:80 -r 198.51.100.11 -w 3",
                  "-a -t 192.0.2.10:80 -r 198.51.100.12 -w 4", to: &config)
        try apply("-e -t 192.0.2.10:80 -r 198.51.100.12 -w 9", to: &config)
        XCTAssertEqual(config.services[0].reals, [real("198.51.100.11:80", weight: 3), real("198.51.100.12:80", weight: 9)])
        try apply("-e -t 192.0.2.10:80 -r 198.51.100.11 -g", to: &config)
        XCTAssertEqual(config.services[0].reals, [real("198.51.100.11:80", weight: 3), real("198.51.100.12:80", weight: 9)])
        try apply("--edit-server -t 192.0.2.10:80 -r 198.51.100.11:80 --weight 0", to: &config)
        XCTAssertEqual(config.services[0].reals, [real("198.51.100.11:80", weight: 0), real("198.51.100.12:80", weight: 9)])
    }

    func testDeleteServiceRemovesItsServers() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr", "-a -t 192.0.2.10:80 -r 198.51.100.11",
                  "-A -u 192.0.2.10:53 -s rr", to: &config)
        try apply("-D -t 192.0.2.10:80", to: &config)
        XCTAssertEqual(config.services.map(\.key), [dns])
        // Adding it again starts it empty, at the end.
        try apply("-A -t 192.0.2.10:80 -s rr", to: &config)
        XCTAssertEqual(config.services.map(\.key), [dns, web])
        XCTAssertEqual(config.services[1].reals, [])
    }

    func testDeleteServer() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr", "-a -t 192.0.2.10:80 -r 198.51.100.11",
                  "-a -t 192.0.2.10:80 -r 198.51.100.12", "-a -t 192.0.2.10:80 -r 198.51.100.13", to: &config)
        try apply("-d -t 192.0.2.10:80 -r 198.51.100.12:80", to: &config)
        XCTAssertEqual(config.services[0].reals.map(\.endpoint), [endpoint("198.51.100.11:80"), endpoint("198.51.100.13:80")])
    }

    func testClear() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr", "-a -t 192.0.2.10:80 -r 198.51.100.11", "-A -u 192.0.2.10:53 -s rr",
                  to: &config)
        try apply("-C", to: &config)
        XCTAssertEqual(config, DirectorConfig())
        try apply("--clear", to: &config)
        XCTAssertEqual(config, DirectorConfig())
    }

    func testStateErrorsInIPVSWords() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr", "-a -t 192.0.2.10:80 -r 198.51.100.11", to: &config)
        let other = tcp("192.0.2.99:80")
        let known = endpoint("198.51.100.11:80"), unknown = endpoint("198.51.100.99:80")

        assertRefused(config, .addService(web, scheduler: .rr), .serviceExists(web), "Service already exists")
        assertRefused(config, .editService(other, scheduler: .rr), .noSuchService(other), "No such service")
        assertRefused(config, .editService(udp("192.0.2.10:80"), scheduler: nil), .noSuchService(udp("192.0.2.10:80")),
                      "No such service")
        assertRefused(config, .deleteService(other), .noSuchService(other), "No such service")
        assertRefused(config, .addServer(other, RealServerConfig(endpoint: known)), .noSuchService(other), "No such service")
        assertRefused(config, .editServer(other, server: known, weight: 2, method: nil), .noSuchService(other),
                      "No such service")
        assertRefused(config, .deleteServer(other, server: known), .noSuchService(other), "No such service")
        assertRefused(config, .addServer(web, RealServerConfig(endpoint: known, weight: 5)),
                      .destinationExists(web, known), "Destination already exists")
        assertRefused(config, .editServer(web, server: unknown, weight: 2, method: nil),
                      .noSuchDestination(web, unknown), "No such destination")
        assertRefused(config, .deleteServer(web, server: unknown), .noSuchDestination(web, unknown), "No such destination")
    }

    func testCommandsBuiltInCodeAreCheckedToo() throws {
        var config = DirectorConfig()
        try apply("-A -t 192.0.2.10:80 -s wrr", "-a -t 192.0.2.10:80 -r 198.51.100.11", to: &config)
        let zeroService = ServiceKey(proto: .tcp, endpoint: L4Endpoint(address: IPAddress("192.0.2.10")!, port: 0))
        assertRefused(config, .addService(zeroService, scheduler: .rr),
                      .invalidServiceAddress("192.0.2.10:0", .zeroPort),
                      "invalid service address '192.0.2.10:0': port 0 is not allowed")
        let zeroReal = L4Endpoint(address: IPAddress("198.51.100.12")!, port: 0)
        assertRefused(config, .addServer(web, RealServerConfig(endpoint: zeroReal)),
                      .invalidRealServerAddress("198.51.100.12:0", .zeroPort),
                      "invalid real server address '198.51.100.12:0': port 0 is not allowed")
        assertRefused(config, .addServer(web, RealServerConfig(endpoint: endpoint("198.51.100.12:80"), weight: 65536)),
                      .invalidWeight("65536"), "invalid weight '65536': expected an integer from 0 to 65535")
        assertRefused(config, .editServer(web, server: endpoint("198.51.100.11:80"), weight: -1, method: nil),
                      .invalidWeight("-1"), "invalid weight '-1': expected an integer from 0 to 65535")
        assertRefused(config, .addServer(web, RealServerConfig(endpoint: endpoint("198.51.100.12:8080"))),
                      .portMismatch(real: endpoint("198.51.100.12:8080"), service: web, method: .directRouting),
                      "real server port 8080 differs from the service port 80: direct routing (-g) cannot change the "
                        + "port; omit the port or use 80")
        assertRefused(config, .addServer(web, RealServerConfig(endpoint: endpoint("[2001:db8::12]:80"))),
                      .familyMismatch(real: endpoint("[2001:db8::12]:80"), service: web),
                      "real server 2001:db8::12 is IPv6 but service 192.0.2.10:80 is IPv4; only tunnelling (-i) "
                        + "can mix address families")
    }

    func testConfigurationBuiltInCodeIsEquatable() {
        var a = DirectorConfig()
        a.services.append(ServiceConfig(proto: .tcp, endpoint: web.endpoint, scheduler: .rr))
        let b = DirectorConfig(services: [ServiceConfig(proto: .tcp, endpoint: web.endpoint, scheduler: .rr, reals: [])])
        XCTAssertEqual(a, b)
        XCTAssertEqual(RealServerConfig(endpoint: endpoint("198.51.100.11:80")).weight, 1)
        XCTAssertEqual(RealServerConfig(endpoint: endpoint("198.51.100.11:80")).method, .directRouting)
    }
}
