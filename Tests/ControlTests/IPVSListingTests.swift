import Control
import Dataplane
import Packet
import Scheduling
import XCTest

/// The listings against texts laid out by ipvsadm's own printf formats (`%-33s`, `%-28s`, `%8s`...), made
/// independently of the renderer; `Golden` is at the end of this file.
final class IPVSListingTests: XCTestCase {
    /// Two TCP services on one address (added 443 first, to show the sort), a persistent one with a mask and
    /// real servers of every method; an IPv6 UDP one with one-packet scheduling.
    static let listing: DirectorListing = {
        let https = ServiceListing(
            key: tcp("192.0.2.10:443"), scheduler: .sh, options: ServiceOptions(schedulerFlags: [.fallback, .port]),
            reals: [RealServerListing(endpoint: endpoint("198.51.100.21:443"), method: .directRouting, weight: 1)])
        let web = ServiceListing(
            key: tcp("192.0.2.10:80"), scheduler: .wlc, options: ServiceOptions(persistence: 300, netmask: 24),
            stats: TrafficStats(connections: 1234, inPackets: 123_456_789, outPackets: 0, inBytes: 98_765_432_100,
                                outBytes: 123_456_789_012_345),
            rates: TrafficRates(connectionsPerSecond: 12, inPacketsPerSecond: 3456, outPacketsPerSecond: 0,
                                inBytesPerSecond: 1_234_567_890, outBytesPerSecond: 99_999_999),
            reals: [
                RealServerListing(endpoint: endpoint("198.51.100.12:80"), method: .tunnel, weight: 2,
                                  activeConnections: 3, inactiveConnections: 4, persistentConnections: 1,
                                  upperThreshold: 100, lowerThreshold: 50,
                                  stats: TrafficStats(connections: 200, inPackets: 3000, inBytes: 400_000),
                                  rates: TrafficRates(connectionsPerSecond: 2, inPacketsPerSecond: 30,
                                                      inBytesPerSecond: 4000)),
                RealServerListing(endpoint: endpoint("198.51.100.11:80"), method: .directRouting, weight: 1,
                                  activeConnections: 12, inactiveConnections: 34, persistentConnections: 5,
                                  stats: TrafficStats(connections: 1034, inPackets: 123_453_789, inBytes: 98_765_032_100,
                                                      outBytes: 123_456_789_012_345),
                                  rates: TrafficRates(connectionsPerSecond: 10, inPacketsPerSecond: 3426,
                                                      inBytesPerSecond: 1_234_563_890, outBytesPerSecond: 99_999_999)),
                RealServerListing(endpoint: endpoint("198.51.100.13:8080"), method: .masquerading, weight: 0),
                RealServerListing(endpoint: endpoint("198.51.100.14:8080"), method: .fullNAT, weight: 5,
                                  activeConnections: 7),
            ],
            localAddresses: [IPAddress("203.0.113.100")!, IPAddress("203.0.113.101")!])
        let dns = ServiceListing(
            key: udp("[2001:db8::53]:53"), scheduler: .rr,
            options: ServiceOptions(persistence: 600, netmask: 64, onePacket: true),
            reals: [
                RealServerListing(endpoint: endpoint("[2001:db8::101]:53"), method: .masquerading, weight: 2,
                                  activeConnections: 1),
                RealServerListing(endpoint: endpoint("[2001:db8::100]:53"), method: .directRouting, weight: 1),
            ])
        let connections = [
            ConnectionListing(proto: .tcp, expiresIn: 895, state: "ESTABLISHED", client: endpoint("203.0.113.5:40000"),
                              virtual: endpoint("192.0.2.10:80"), destination: endpoint("198.51.100.11:80")),
            // The persistence template: client port 0, state NONE.
            ConnectionListing(proto: .tcp, expiresIn: 299, state: "NONE", client: L4Endpoint(address: IPAddress("203.0.113.5")!, port: 0),
                              virtual: endpoint("192.0.2.10:80"), destination: endpoint("198.51.100.11:80"),
                              isTemplate: true),
            ConnectionListing(proto: .udp, expiresIn: 5, state: "UDP", client: endpoint("[2001:db8::7]:5353"),
                              virtual: endpoint("[2001:db8::53]:53"), destination: endpoint("[2001:db8::100]:53")),
            ConnectionListing(proto: .tcp, expiresIn: 6000, state: "SYN_RECV", client: endpoint("203.0.113.6:40001"),
                              virtual: endpoint("192.0.2.10:443"), destination: endpoint("198.51.100.21:443")),
        ]
        return DirectorListing(connectionTableSize: 4096, services: [https, web, dns], connections: connections,
                               timeouts: TimeoutSettings(tcp: 900, tcpFin: 120, udp: 300))
    }()

    static let portNames = PortNames { port, proto in
        switch (port, proto) {
        case (80, .tcp): return "http"
        case (443, .tcp): return "https"
        case (8080, .tcp): return "http-alt"
        case (53, .udp): return "domain"
        default: return nil
        }
    }

    private func assertRenders(_ arguments: String, _ expected: String, names: PortNames = portNames,
                               file: StaticString = #filePath, line: UInt = #line) {
        do {
            guard case .list(let options) = try IPVSRequest(arguments: args(arguments)) else {
                return XCTFail("\(arguments) is not a listing", file: file, line: line)
            }
            let text = try IPVSListing.render(Self.listing, options: options, names: names)
            XCTAssertEqual(text, expected, file: file, line: line)
            if text != expected {
                // Line by line, trailing spaces made visible, for the failure's reader.
                for (got, want) in zip(text.split(separator: "\n"), expected.split(separator: "\n")) where got != want {
                    XCTFail("got  '\(got)'\nwant '\(want)'", file: file, line: line)
                }
            }
        } catch {
            XCTFail("\(arguments): \(error)", file: file, line: line)
        }
    }

    func testNumeric() { assertRenders("-Ln", Golden.numeric) }
    func testNumericIsTheDefaultWithoutANameTable() { assertRenders("-L", Golden.numeric, names: .none) }
    func testPortNames() { assertRenders("-L", Golden.names) }
    func testSortIsTheDefault() { assertRenders("-Ln --sort", Golden.numeric) }
    func testNoSortKeepsInsertionOrder() { assertRenders("-Ln --nosort", Golden.nosort) }
    func testStats() { assertRenders("-Ln --stats", Golden.stats) }
    func testStatsExact() { assertRenders("-Ln --stats --exact", Golden.statsExact) }
    func testStatsExactShort() { assertRenders("-LnX --stats", Golden.statsExact) }
    func testRate() { assertRenders("-Ln --rate", Golden.rate) }
    func testStatsWinOverRate() { assertRenders("-Ln --rate --stats", Golden.stats) }
    func testThresholds() { assertRenders("-Ln --thresholds", Golden.thresholds) }
    func testPersistentConnections() { assertRenders("-Ln --persistent-conn", Golden.persistentConnections) }
    func testOneService() { assertRenders("-Ln -t 192.0.2.10:80", Golden.oneService) }
    func testConnections() { assertRenders("-Lnc", Golden.connections) }
    func testConnectionsWithPortNames() { assertRenders("-lc", Golden.connectionsNames) }
    func testConnectionsPersistentColumns() { assertRenders("-Lnc --persistent-conn", Golden.connectionsPersistent) }
    func testTimeouts() { assertRenders("-L --timeout", "Timeout (tcp tcpfin udp): 900 120 300\n") }

    func testNoSuchService() {
        let options = IPVSListOptions(service: tcp("192.0.2.99:80"), numeric: true)
        XCTAssertThrowsError(try IPVSListing.render(Self.listing, options: options)) { error in
            XCTAssertEqual(error as? ConfigError, .noSuchService(tcp("192.0.2.99:80")))
        }
    }

    func testEmptyTable() throws {
        let text = try IPVSListing.render(DirectorListing(connectionTableSize: 0, services: []),
                                          options: IPVSListOptions(numeric: true))
        XCTAssertEqual(text, """
            IP Virtual Server version 1.2.1 (size=0)
            Prot LocalAddress:Port Scheduler Flags
              -> RemoteAddress:Port           Forward Weight ActiveConn InActConn

            """)
    }

    func testLargeNumbersScaleAsIpvsadm() {
        let text = try? IPVSListing.render(
            DirectorListing(connectionTableSize: 1, services: [
                ServiceListing(key: tcp("192.0.2.1:80"), scheduler: .rr,
                               stats: TrafficStats(connections: 99_999_999, inPackets: 100_000_000,
                                                   outPackets: 999_999_999_999, inBytes: 1_000_000_000,
                                                   outBytes: UInt64.max)),
            ]), options: IPVSListOptions(numeric: true, stats: true))
        XCTAssertEqual(text?.split(separator: "\n").last,
                       "TCP  192.0.2.1:80                 99999999  100000K     999G    1000M18446744T")
    }

    func testLongIPv4NamesAreCutToTheColumnsIPv6OnesAreNot() throws {
        let long = PortNames { _, _ in "abcdefghijklmnopqrstuvwxyz0123" }
        let listing = DirectorListing(connectionTableSize: 1, services: [
            ServiceListing(key: tcp("192.0.2.10:80"), scheduler: .rr, reals: [
                RealServerListing(endpoint: endpoint("198.51.100.11:80"), method: .directRouting, weight: 1),
                // A tunnelled real server of the other family.
                RealServerListing(endpoint: endpoint("[2001:db8::11]:80"), method: .tunnel, weight: 1),
            ]),
        ])
        let text = try IPVSListing.render(listing, options: IPVSListOptions(sort: false), names: long)
        XCTAssertEqual(Array(text.split(separator: "\n").dropFirst(3)), [
            "TCP  192.0.2.10:abcdefghijklmnopq rr",
            "  -> 198.51.100.11:abcdefghijklmn Route   1      0          0         ",
            "  -> [2001:db8::11]:abcdefghijklmnopqrstuvwxyz0123 Tunnel  1      0          0         ",
        ])
    }

    func testLocalAddresses() throws {
        XCTAssertEqual(try IPVSListing.renderLocalAddresses(Self.listing, service: tcp("192.0.2.10:80")), """
            Prot LocalAddress:Port
              -> LocalAddress
            TCP  192.0.2.10:80
              -> 203.0.113.100
              -> 203.0.113.101

            """)
        XCTAssertEqual(try IPVSListing.renderLocalAddresses(Self.listing, service: nil), """
            Prot LocalAddress:Port
              -> LocalAddress
            TCP  192.0.2.10:80
              -> 203.0.113.100
              -> 203.0.113.101
            TCP  192.0.2.10:443
            UDP  [2001:db8::53]:53

            """)
        XCTAssertThrowsError(try IPVSListing.renderLocalAddresses(Self.listing, service: udp("192.0.2.10:80")))
    }

    func testUsageNamesEveryCommand() {
        for option in ["-A", "-E", "-D", "-C", "-R", "-S", "-a", "-e", "-d", "-P", "-Q", "-G", "-L", "-Z", "--set",
                       "--stats", "--rate", "--thresholds", "--persistent-conn", "--exact", "--timeout", "--fullnat"] {
            XCTAssertTrue(IPVSListing.usage.contains(option), option)
        }
    }
}

/// A golden text written with `|` at the end of every line, so that trailing spaces show.
func golden(_ marked: String) -> String {
    marked.split(separator: "\n", omittingEmptySubsequences: false)
        .map { line in (line.hasSuffix("|") ? String(line.dropLast()) : String(line)) + "\n" }.joined()
}

// Generated from ipvsadm's printf formats (see IPVSListingTests); '|' marks each line's end.
enum Golden {
    static let numeric = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port Scheduler Flags|
          -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
        TCP  192.0.2.10:80 wlc persistent 300 mask 255.255.255.0|
          -> 198.51.100.11:80             Route   1      12         34        |
          -> 198.51.100.12:80             Tunnel  2      3          4         |
          -> 198.51.100.13:8080           Masq    0      0          0         |
          -> 198.51.100.14:8080           FullNat 5      7          0         |
        TCP  192.0.2.10:443 sh (sh-fallback,sh-port)|
          -> 198.51.100.21:443            Route   1      0          0         |
        UDP  [2001:db8::53]:53 rr persistent 600 mask 64 ops|
          -> [2001:db8::100]:53           Route   1      0          0         |
          -> [2001:db8::101]:53           Masq    2      1          0         |
        """)
    static let names = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port Scheduler Flags|
          -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
        TCP  192.0.2.10:http wlc persistent 300 mask 255.255.255.0|
          -> 198.51.100.11:http           Route   1      12         34        |
          -> 198.51.100.12:http           Tunnel  2      3          4         |
          -> 198.51.100.13:http-alt       Masq    0      0          0         |
          -> 198.51.100.14:http-alt       FullNat 5      7          0         |
        TCP  192.0.2.10:https sh (sh-fallback,sh-port)|
          -> 198.51.100.21:https          Route   1      0          0         |
        UDP  [2001:db8::53]:domain rr persistent 600 mask 64 ops|
          -> [2001:db8::100]:domain       Route   1      0          0         |
          -> [2001:db8::101]:domain       Masq    2      1          0         |
        """)
    static let nosort = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port Scheduler Flags|
          -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
        TCP  192.0.2.10:443 sh (sh-fallback,sh-port)|
          -> 198.51.100.21:443            Route   1      0          0         |
        TCP  192.0.2.10:80 wlc persistent 300 mask 255.255.255.0|
          -> 198.51.100.12:80             Tunnel  2      3          4         |
          -> 198.51.100.11:80             Route   1      12         34        |
          -> 198.51.100.13:8080           Masq    0      0          0         |
          -> 198.51.100.14:8080           FullNat 5      7          0         |
        UDP  [2001:db8::53]:53 rr persistent 600 mask 64 ops|
          -> [2001:db8::101]:53           Masq    2      1          0         |
          -> [2001:db8::100]:53           Route   1      0          0         |
        """)
    static let stats = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
          -> RemoteAddress:Port|
        TCP  192.0.2.10:80                    1234  123456K        0   98765M     123T|
          -> 198.51.100.11:80                 1034  123453K        0   98765M     123T|
          -> 198.51.100.12:80                  200     3000        0   400000        0|
          -> 198.51.100.13:8080                  0        0        0        0        0|
          -> 198.51.100.14:8080                  0        0        0        0        0|
        TCP  192.0.2.10:443                      0        0        0        0        0|
          -> 198.51.100.21:443                   0        0        0        0        0|
        UDP  [2001:db8::53]:53                   0        0        0        0        0|
          -> [2001:db8::100]:53                  0        0        0        0        0|
          -> [2001:db8::101]:53                  0        0        0        0        0|
        """)
    static let statsExact = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
          -> RemoteAddress:Port|
        TCP  192.0.2.10:80                    1234 123456789        0 98765432100 123456789012345|
          -> 198.51.100.11:80                 1034 123453789        0 98765032100 123456789012345|
          -> 198.51.100.12:80                  200     3000        0   400000        0|
          -> 198.51.100.13:8080                  0        0        0        0        0|
          -> 198.51.100.14:8080                  0        0        0        0        0|
        TCP  192.0.2.10:443                      0        0        0        0        0|
          -> 198.51.100.21:443                   0        0        0        0        0|
        UDP  [2001:db8::53]:53                   0        0        0        0        0|
          -> [2001:db8::100]:53                  0        0        0        0        0|
          -> [2001:db8::101]:53                  0        0        0        0        0|
        """)
    static let rate = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS|
          -> RemoteAddress:Port|
        TCP  192.0.2.10:80                      12     3456        0    1234M 99999999|
          -> 198.51.100.11:80                   10     3426        0    1234M 99999999|
          -> 198.51.100.12:80                    2       30        0     4000        0|
          -> 198.51.100.13:8080                  0        0        0        0        0|
          -> 198.51.100.14:8080                  0        0        0        0        0|
        TCP  192.0.2.10:443                      0        0        0        0        0|
          -> 198.51.100.21:443                   0        0        0        0        0|
        UDP  [2001:db8::53]:53                   0        0        0        0        0|
          -> [2001:db8::100]:53                  0        0        0        0        0|
          -> [2001:db8::101]:53                  0        0        0        0        0|
        """)
    static let thresholds = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn |
          -> RemoteAddress:Port|
        TCP  192.0.2.10:80 wlc persistent 300 mask 255.255.255.0|
          -> 198.51.100.11:80             0          0          12         34        |
          -> 198.51.100.12:80             100        50         3          4         |
          -> 198.51.100.13:8080           0          0          0          0         |
          -> 198.51.100.14:8080           0          0          7          0         |
        TCP  192.0.2.10:443 sh (sh-fallback,sh-port)|
          -> 198.51.100.21:443            0          0          0          0         |
        UDP  [2001:db8::53]:53 rr persistent 600 mask 64 ops|
          -> [2001:db8::100]:53           0          0          0          0         |
          -> [2001:db8::101]:53           0          0          1          0         |
        """)
    static let persistentConnections = golden("""
        IP Virtual Server version 1.2.1 (size=4096)|
        Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn |
          -> RemoteAddress:Port|
        TCP  192.0.2.10:80 wlc persistent 300 mask 255.255.255.0|
          -> 198.51.100.11:80             1         5           12         34        |
          -> 198.51.100.12:80             2         1           3          4         |
          -> 198.51.100.13:8080           0         0           0          0         |
          -> 198.51.100.14:8080           5         0           7          0         |
        TCP  192.0.2.10:443 sh (sh-fallback,sh-port)|
          -> 198.51.100.21:443            1         0           0          0         |
        UDP  [2001:db8::53]:53 rr persistent 600 mask 64 ops|
          -> [2001:db8::100]:53           1         0           0          0         |
          -> [2001:db8::101]:53           2         0           1          0         |
        """)
    static let oneService = golden("""
        Prot LocalAddress:Port Scheduler Flags|
          -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
        TCP  192.0.2.10:80 wlc persistent 300 mask 255.255.255.0|
          -> 198.51.100.11:80             Route   1      12         34        |
          -> 198.51.100.12:80             Tunnel  2      3          4         |
          -> 198.51.100.13:8080           Masq    0      0          0         |
          -> 198.51.100.14:8080           FullNat 5      7          0         |
        """)
    static let connections = golden("""
        IPVS connection entries|
        pro expire state       source             virtual            destination|
        TCP 14:55  ESTABLISHED 203.0.113.5:40000  192.0.2.10:80      198.51.100.11:80|
        TCP 04:59  NONE        203.0.113.5:0      192.0.2.10:80      198.51.100.11:80|
        UDP 00:05  UDP         [2001:db8::7]:5353 [2001:db8::53]:53  [2001:db8::100]:53|
        TCP 100:00 SYN_RECV    203.0.113.6:40001  192.0.2.10:443     198.51.100.21:443|
        """)
    static let connectionsNames = golden("""
        IPVS connection entries|
        pro expire state       source             virtual            destination|
        TCP 14:55  ESTABLISHED 203.0.113.5:40000  192.0.2.10:http    198.51.100.11:http|
        TCP 04:59  NONE        203.0.113.5:0      192.0.2.10:http    198.51.100.11:http|
        UDP 00:05  UDP         [2001:db8::7]:5353 [2001:db8::53]:domain [2001:db8::100]:domain|
        TCP 100:00 SYN_RECV    203.0.113.6:40001  192.0.2.10:https   198.51.100.21:https|
        """)
    static let connectionsPersistent = golden("""
        IPVS connection entries|
        pro expire state       source             virtual            destination        pe name          pe_data|
        TCP 14:55  ESTABLISHED 203.0.113.5:40000  192.0.2.10:80      198.51.100.11:80|
        TCP 04:59  NONE        203.0.113.5:0      192.0.2.10:80      198.51.100.11:80|
        UDP 00:05  UDP         [2001:db8::7]:5353 [2001:db8::53]:53  [2001:db8::100]:53|
        TCP 100:00 SYN_RECV    203.0.113.6:40001  192.0.2.10:443     198.51.100.21:443|
        """)
}

