import Control
import Packet
import Scheduling
import XCTest

final class RulesFileTests: XCTestCase {
    /// What `ipvsadm-save -n` prints for a director with both families and both protocols.
    private let saved = """
        -A -t 192.0.2.10:80 -s wrr
        -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3
        -a -t 192.0.2.10:80 -r 198.51.100.12:80 -g -w 1
        -A -u 192.0.2.10:53 -s rr
        -a -u 192.0.2.10:53 -r 198.51.100.13:53 -g -w 0
        -A -t [2001:db8::10]:80 -s rr
        -a -t [2001:db8::10]:80 -r [2001:db8::11]:80 -g -w 2
        -A -u [2001:db8::10]:53 -s wrr

        """

    private func assertLoadFails(_ text: String, line: Int, _ lineText: String, _ reason: ConfigError,
                                 _ message: String, file: StaticString = #filePath, line testLine: UInt = #line) {
        do {
            let config = try RulesFile.load(text)
            XCTFail("loaded \(config)", file: file, line: testLine)
        } catch {
            XCTAssertEqual(error, RulesFileError(line: line, text: lineText, reason: reason), file: file, line: testLine)
            XCTAssertEqual(error.description, message, file: file, line: testLine)
        }
    }

    func testLoadsSavedRules() throws {
        let config = try RulesFile.load(saved)
        XCTAssertEqual(config.services.map(\.key),
                       [tcp("192.0.2.10:80"), udp("192.0.2.10:53"), tcp("[2001:db8::10]:80"), udp("[2001:db8::10]:53")])
        XCTAssertEqual(config.services.map(\.scheduler), [.wrr, .rr, .rr, .wrr])
        XCTAssertEqual(config.services[0].reals, [RealServerConfig(endpoint: endpoint("198.51.100.11:80"), weight: 3),
                                                  RealServerConfig(endpoint: endpoint("198.51.100.12:80"), weight: 1)])
        XCTAssertEqual(config.services[1].reals, [RealServerConfig(endpoint: endpoint("198.51.100.13:53"), weight: 0)])
        XCTAssertEqual(config.services[2].reals, [RealServerConfig(endpoint: endpoint("[2001:db8::11]:80"), weight: 2)])
        XCTAssertEqual(config.services[3].reals, [])
    }

    func testSavePrintsIPVSAdmSaveFormat() throws {
        XCTAssertEqual(RulesFile.save(try RulesFile.load(saved)), saved)
        XCTAssertEqual(RulesFile.save(DirectorConfig()), "")
    }

    func testRoundTrips() throws {
        let handWritten = """
            # Web farm.
            --add-service --tcp-service 192.0.2.10:80 --scheduler wrr
              -a -t 192.0.2.10:80 -r 198.51.100.12        # weight 1, port 80
            -a -t 192.0.2.10:80 -r 198.51.100.11 -w 3\t-g

            -A -u [2001:db8::10]:53 -s rr
            -a -u [2001:db8::10]:53 -r 2001:db8::11 -w 7
            -A -t 192.0.2.20:443 -s rr
            -E -t 192.0.2.20:443 -s wrr
            -a -t 192.0.2.20:443 -r 198.51.100.20 -w 5
            -e -t 192.0.2.20:443 -r 198.51.100.20 -w 6
            """
        let config = try RulesFile.load(handWritten)
        let text = RulesFile.save(config)
        XCTAssertEqual(text, """
            -A -t 192.0.2.10:80 -s wrr
            -a -t 192.0.2.10:80 -r 198.51.100.12:80 -g -w 1
            -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3
            -A -u [2001:db8::10]:53 -s rr
            -a -u [2001:db8::10]:53 -r [2001:db8::11]:53 -g -w 7
            -A -t 192.0.2.20:443 -s wrr
            -a -t 192.0.2.20:443 -r 198.51.100.20:443 -g -w 6

            """)
        XCTAssertEqual(try RulesFile.load(text), config)
        XCTAssertEqual(RulesFile.save(try RulesFile.load(text)), text)
    }

    func testRoundTripOfAConfigurationBuiltInCode() throws {
        var config = DirectorConfig()
        for i in 0..<20 {
            let proto: L4Protocol = i % 3 == 0 ? .udp : .tcp
            let address = i % 2 == 0 ? IPAddress.v4(0xC000_0200 | UInt32(i)) : .v6(hi: 0x2001_0db8_0000_0000, lo: UInt64(i))
            let key = ServiceKey(proto: proto, endpoint: L4Endpoint(address: address, port: UInt16(1000 + i)))
            try config.apply(.addService(key, scheduler: i % 2 == 0 ? .rr : .wrr))
            for j in 0..<(i % 4) {
                let realAddress = i % 2 == 0 ? IPAddress.v4(0xC633_6400 | UInt32(j + 1))
                    : .v6(hi: 0x2001_0db8_0001_0000, lo: UInt64(j + 1))
                try config.apply(.addServer(key, RealServerConfig(endpoint: L4Endpoint(address: realAddress, port: key.endpoint.port),
                                                                  weight: Int32(j * 1000))))
            }
        }
        let text = RulesFile.save(config)
        XCTAssertEqual(try RulesFile.load(text), config)
        XCTAssertEqual(RulesFile.save(try RulesFile.load(text)), text)
    }

    func testLineEndingsAndBlankInput() throws {
        XCTAssertEqual(try RulesFile.load(""), DirectorConfig())
        XCTAssertEqual(try RulesFile.load("\n\n  \n# nothing\n"), DirectorConfig())
        let crlf = "-A -t 192.0.2.10:80 -s rr\r\n-a -t 192.0.2.10:80 -r 198.51.100.11\r\n"
        XCTAssertEqual(RulesFile.save(try RulesFile.load(crlf)),
                       "-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 1\n")
        // Line numbers count CRLF and CR line ends once each.
        assertLoadFails("# a\r\n\r\n-A -t 192.0.2.10:80 -s xx\r\n", line: 3, "-A -t 192.0.2.10:80 -s xx",
                        .unknownScheduler("xx"),
                        "rules:3: -A -t 192.0.2.10:80 -s xx: unknown scheduler 'xx' (supported: rr, wrr, lc, wlc, sed, nq, "
                            + "lblc, lblcr, dh, sh, mh, fo, ovf, twos)")
        assertLoadFails("# a\r# b\r-K\r", line: 3, "-K", .unknownOption("-K"), "rules:3: -K: unknown option -K")
    }

    func testBytesThatAreNotUTF8AreRefusedWithTheirLine() throws {
        let good = Array("-A -t 192.0.2.10:80 -s rr\r\n".utf8)
        XCTAssertEqual(try RulesFile.load(bytes: good), try RulesFile.load("-A -t 192.0.2.10:80 -s rr\n"))
        for ending in ["\n", "\r\n", "\r"] {
            let bytes = Array("# a\(ending)-A -t 192.0.2.10:80 -s rr\(ending)-a -t 192.0.2.10:80 -r ".utf8) + [0xFF, 0xFE]
                + Array("\(ending)# after\(ending)".utf8)
            XCTAssertThrowsError(try RulesFile.load(bytes: bytes, source: "f.rules")) { error in
                let error = error as? RulesFileError
                XCTAssertEqual(error?.line, 3, "line ends \(Array(ending.utf8))")
                XCTAssertEqual(error?.reason, .notText)
                XCTAssertEqual(error?.description.hasPrefix("f.rules:3: -a -t 192.0.2.10:80 -r "), true)
                XCTAssertEqual(error?.description.hasSuffix(": not UTF-8 text"), true)
            }
        }
    }

    func testLaterCommandsSeeEarlierOnes() throws {
        let config = try RulesFile.load("""
            -A -t 192.0.2.10:80 -s rr
            -a -t 192.0.2.10:80 -r 198.51.100.11
            -C
            -A -t 192.0.2.11:80 -s wrr
            -a -t 192.0.2.11:80 -r 198.51.100.12
            -a -t 192.0.2.11:80 -r 198.51.100.13
            -d -t 192.0.2.11:80 -r 198.51.100.12
            """)
        XCTAssertEqual(RulesFile.save(config), "-A -t 192.0.2.11:80 -s wrr\n-a -t 192.0.2.11:80 -r 198.51.100.13:80 -g -w 1\n")
    }

    func testStateErrorsCarryTheLine() {
        let web = tcp("192.0.2.10:80")
        assertLoadFails("""
            -A -t 192.0.2.10:80 -s wrr
            -a -t 192.0.2.10:80 -r 198.51.100.11
              -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3\t
            """, line: 3, "-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3",
                        .destinationExists(web, endpoint("198.51.100.11:80")),
                        "rules:3: -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3: Destination already exists")
        assertLoadFails("-A -t 192.0.2.10:80 -s wrr\n\n-A -t 192.0.2.10:80 -s rr # again\n", line: 3,
                        "-A -t 192.0.2.10:80 -s rr # again", .serviceExists(web),
                        "rules:3: -A -t 192.0.2.10:80 -s rr # again: Service already exists")
        assertLoadFails("-a -t 192.0.2.10:80 -r 198.51.100.11", line: 1, "-a -t 192.0.2.10:80 -r 198.51.100.11",
                        .noSuchService(web), "rules:1: -a -t 192.0.2.10:80 -r 198.51.100.11: No such service")
        assertLoadFails("-A -t 192.0.2.10:80 -s wrr\n-e -t 192.0.2.10:80 -r 198.51.100.11 -w 2", line: 2,
                        "-e -t 192.0.2.10:80 -r 198.51.100.11 -w 2", .noSuchDestination(web, endpoint("198.51.100.11:80")),
                        "rules:2: -e -t 192.0.2.10:80 -r 198.51.100.11 -w 2: No such destination")
        assertLoadFails("-D -u 192.0.2.10:53", line: 1, "-D -u 192.0.2.10:53", .noSuchService(udp("192.0.2.10:53")),
                        "rules:1: -D -u 192.0.2.10:53: No such service")
    }

    func testSyntaxErrorsCarryTheLine() {
        assertLoadFails("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 198.51.100.11:8080\n", line: 2,
                        "-a -t 192.0.2.10:80 -r 198.51.100.11:8080",
                        .portMismatch(real: endpoint("198.51.100.11:8080"), service: tcp("192.0.2.10:80"),
                                      method: .directRouting),
                        "rules:2: -a -t 192.0.2.10:80 -r 198.51.100.11:8080: real server port 8080 differs from the "
                            + "service port 80: direct routing (-g) cannot change the port; omit the port or use 80")
        assertLoadFails("-A -t 192.0.2.10:80 -s rr -p 300 -x 1", line: 1, "-A -t 192.0.2.10:80 -s rr -p 300 -x 1",
                        .optionNotAllowed(option: "-x/--u-threshold", command: "-A/--add-service"),
                        "rules:1: -A -t 192.0.2.10:80 -s rr -p 300 -x 1: -x/--u-threshold is not allowed with -A/--add-service")
        assertLoadFails("# header\n-A -t 1.2.3.4:99999 -s rr", line: 2, "-A -t 1.2.3.4:99999 -s rr",
                        .invalidServiceAddress("1.2.3.4:99999", .portOutOfRange("99999")),
                        "rules:2: -A -t 1.2.3.4:99999 -s rr: invalid service address '1.2.3.4:99999': port 99999 is "
                            + "out of range (1-65535)")
        assertLoadFails("ipvsadm -C", line: 1, "ipvsadm -C", .unexpectedArgument("ipvsadm"),
                        "rules:1: ipvsadm -C: unexpected argument 'ipvsadm'")
        assertLoadFails("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 198.51.100.11 -g --tun-type gre", line: 2,
                        "-a -t 192.0.2.10:80 -r 198.51.100.11 -g --tun-type gre",
                        .tunnelOptionWithoutTunnel("--tun-type"),
                        "rules:2: -a -t 192.0.2.10:80 -r 198.51.100.11 -g --tun-type gre: --tun-type is only for "
                            + "tunnelled real servers (-i/--ipip)")
    }

    func testTheFirstBadLineStopsTheLoad() {
        assertLoadFails("-A -t 192.0.2.10:80 -s rr\n-Z\n-A -t 192.0.2.10:80 -s rr\n", line: 2, "-Z",
                        .unsupportedOption("-Z/--zero", note: nil), "rules:2: -Z: -Z/--zero is not supported yet")
    }

    func testSourceNameInMessages() {
        do {
            _ = try RulesFile.load("\n-X", source: "/etc/xdirector/rules")
            XCTFail("loaded")
        } catch {
            XCTAssertEqual(error.source, "/etc/xdirector/rules")
            XCTAssertEqual(error.description, "/etc/xdirector/rules:2: -X: -X/--exact is not supported yet")
        }
    }

    func testSchedulingOptionsRoundTripByteForByte() throws {
        let text = """
            --set 600 60 120
            -A -t 192.0.2.10:80 -s sh -b sh-fallback,sh-port -p 300 -M 255.255.255.0
            -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 1 -x 100 -y 50
            -a -t 192.0.2.10:80 -r 198.51.100.12:80 -g -w 0
            -A -u 192.0.2.10:53 -s wlc -o
            -a -u 192.0.2.10:53 -r 198.51.100.11:53 -g -w 2
            -A -t [2001:db8::10]:443 -s mh -b mh-port -p 60 -M 64
            -A -t 192.0.2.20:80 -s twos

            """
        let config = try RulesFile.load(text)
        XCTAssertEqual(RulesFile.save(config), text)
        XCTAssertEqual(config.connectionTimeouts.tcpEstablished, 600)
        XCTAssertEqual(config.services[0].policy.persistenceTimeout, 300)
        XCTAssertEqual(config.services[0].policy.netmaskLo, 0xFFFF_FF00)
        XCTAssertEqual(config.services[0].reals[0].upperThreshold, 100)
    }

    func testEditServiceReplacesOptionsAndKeepsThemOtherwise() throws {
        let config = try RulesFile.load("""
            -A -t 192.0.2.10:80 -s rr -p 300
            -E -t 192.0.2.10:80 -s wlc
            -A -t 192.0.2.11:80 -s rr -p 300
            -E -t 192.0.2.11:80 -s sh -b flag-1
            """)
        XCTAssertEqual(config.services[0].options.persistence, 300)
        XCTAssertEqual(config.services[0].scheduler, .wlc)
        XCTAssertEqual(config.services[1].options, ServiceOptions(schedulerFlags: [.fallback]))
        XCTAssertThrowsError(try RulesFile.load("-A -t 192.0.2.10:80 -s sh -b sh-port\n-E -t 192.0.2.10:80 -s rr"))
    }
}
