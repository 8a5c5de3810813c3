import Control
import Packet
import Scheduling
import XCTest

final class IPVSRequestTests: XCTestCase {
    private func assertParses(_ line: String, _ expected: IPVSRequest,
                              file: StaticString = #filePath, line testLine: UInt = #line) {
        XCTAssertEqual(Result { () throws(ConfigError) in try IPVSRequest(arguments: args(line)) },
                       .success(expected), line, file: file, line: testLine)
    }

    private func assertFails(_ line: String, _ expected: ConfigError, _ message: String? = nil,
                             file: StaticString = #filePath, line testLine: UInt = #line) {
        do {
            let request = try IPVSRequest(arguments: args(line))
            XCTFail("parsed \(line) as \(request)", file: file, line: testLine)
        } catch {
            XCTAssertEqual(error, expected, line, file: file, line: testLine)
            if let message { XCTAssertEqual(error.description, message, file: file, line: testLine) }
        }
    }

    // MARK: Every kind

    func testChangesParseAsIPVSCommandDoes() throws {
        for line in ["-A -t 192.0.2.10:80 -s rr -p 300 -M 255.255.255.0",
                     "-E -u [2001:db8::53]:53 -s sh -b sh-port",
                     "-D -t 192.0.2.10:80", "-C",
                     "-a -t 192.0.2.10:80 -r 198.51.100.11 -g -w 3 -x 100 -y 50",
                     "-e -t 192.0.2.10:80 -r 198.51.100.11:8080 -m",
                     "-d -t 192.0.2.10:80 -r 198.51.100.11",
                     "-P -t 192.0.2.10:80 -z 203.0.113.100", "-Q -t 192.0.2.10:80 -z 203.0.113.100",
                     "--set 900 120 300", "-w 3 -a -t 192.0.2.10:80 -r 198.51.100.11"] {
            assertParses(line, .change(try IPVSCommand(arguments: args(line))))
        }
    }

    func testListing() {
        assertParses("-L", .list(IPVSListOptions()))
        assertParses("-l", .list(IPVSListOptions()))
        assertParses("--list", .list(IPVSListOptions()))
        assertParses("-Ln", .list(IPVSListOptions(numeric: true)))
        assertParses("-L -n", .list(IPVSListOptions(numeric: true)))
        assertParses("--list --numeric", .list(IPVSListOptions(numeric: true)))
        assertParses("-lnc", .list(IPVSListOptions(numeric: true, connections: true)))
        assertParses("-lc", .list(IPVSListOptions(connections: true)))
        assertParses("-L --connection", .list(IPVSListOptions(connections: true)))
        assertParses("-L --timeout", .list(IPVSListOptions(timeouts: true)))
        assertParses("-Ln --stats", .list(IPVSListOptions(numeric: true, stats: true)))
        assertParses("-Ln --rate", .list(IPVSListOptions(numeric: true, rate: true)))
        assertParses("-Ln --stats --rate", .list(IPVSListOptions(numeric: true, stats: true, rate: true)))
        assertParses("-LnX --stats", .list(IPVSListOptions(numeric: true, stats: true, exact: true)))
        assertParses("-L --exact", .list(IPVSListOptions(exact: true)))
        assertParses("-L --thresholds", .list(IPVSListOptions(thresholds: true)))
        assertParses("-L --persistent-conn", .list(IPVSListOptions(persistentConnections: true)))
        assertParses("-L --sort", .list(IPVSListOptions()))
        assertParses("-L --nosort", .list(IPVSListOptions(sort: false)))
        assertParses("-Ln -t 192.0.2.10:80", .list(IPVSListOptions(service: tcp("192.0.2.10:80"), numeric: true)))
        assertParses("-L -u [2001:db8::53]:53 --stats",
                     .list(IPVSListOptions(service: udp("[2001:db8::53]:53"), stats: true)))
        assertParses("-Lnt 192.0.2.10:80", .list(IPVSListOptions(service: tcp("192.0.2.10:80"), numeric: true)))
        assertParses("-Lc --persistent-conn", .list(IPVSListOptions(persistentConnections: true, connections: true)))
        assertParses("-n -L", .list(IPVSListOptions(numeric: true)))
    }

    func testNoArgumentsLists() throws {
        XCTAssertEqual(try IPVSRequest(arguments: []), .list(IPVSListOptions()))
    }

    func testOtherRequests() {
        assertParses("-S", .save(numeric: false))
        assertParses("-Sn", .save(numeric: true))
        assertParses("--save --numeric", .save(numeric: true))
        assertParses("-R", .restore)
        assertParses("--restore", .restore)
        assertParses("-Z", .zero(nil))
        assertParses("--zero -t 192.0.2.10:80", .zero(tcp("192.0.2.10:80")))
        assertParses("-Z -u 192.0.2.10:53", .zero(udp("192.0.2.10:53")))
        assertParses("-G", .listLocalAddresses(nil))
        assertParses("--get-laddr -t 192.0.2.10:80", .listLocalAddresses(tcp("192.0.2.10:80")))
        assertParses("-h", .help)
        assertParses("--help", .help)
        assertParses("-v", .version)
        assertParses("--version", .version)
        // ipvsadm answers -h and -v first thing, whatever follows.
        assertParses("-h -L --frobnicate", .help)
        assertParses("-n -v", .version)
    }

    // MARK: Refusals

    func testOptionsThatDoNotGoWithTheCommand() {
        assertFails("-A -t 192.0.2.10:80 -n", .optionNotAllowed(option: "-n/--numeric", command: "-A/--add-service"),
                    "-n/--numeric is not allowed with -A/--add-service")
        assertFails("-C -c", .optionNotAllowed(option: "-c/--connection", command: "-C/--clear"))
        assertFails("-S -c", .optionNotAllowed(option: "-c/--connection", command: "-S/--save"))
        assertFails("-S --stats", .optionNotAllowed(option: "--stats", command: "-S/--save"))
        assertFails("-S -t 192.0.2.10:80",
                    .optionNotAllowed(option: "-t/--tcp-service or -u/--udp-service", command: "-S/--save"))
        assertFails("-Z -n", .optionNotAllowed(option: "-n/--numeric", command: "-Z/--zero"))
        assertFails("-Zc", .optionNotAllowed(option: "-c/--connection", command: "-Z/--zero"))
        assertFails("-R -n", .optionNotAllowed(option: "-n/--numeric", command: "-R/--restore"))
        assertFails("-L -s rr", .optionNotAllowed(option: "-s/--scheduler", command: "-L/--list"))
        assertFails("-L -r 198.51.100.11", .optionNotAllowed(option: "-r/--real-server", command: "-L/--list"))
        assertFails("-L -w 1", .optionNotAllowed(option: "-w/--weight", command: "-L/--list"))
        assertFails("-L -o", .optionNotAllowed(option: "-o/--ops", command: "-L/--list"))
        assertFails("-G --stats", .optionNotAllowed(option: "--stats", command: "-G/--get-laddr"))
    }

    func testListingConflicts() {
        assertFails("-Lc -t 192.0.2.10:80",
                    .conflictingOptions(option: "-t/--tcp-service or -u/--udp-service", other: "-c/--connection",
                                        command: "-L/--list"),
                    "The option '-t/--tcp-service or -u/--udp-service' conflicts with the '-c/--connection' option "
                        + "in the '-L/--list' command")
        assertFails("-L --timeout -c",
                    .conflictingOptions(option: "--timeout", other: "-c/--connection", command: "-L/--list"))
        assertFails("-L --timeout -t 192.0.2.10:80",
                    .conflictingOptions(option: "--timeout", other: "-t/--tcp-service or -u/--udp-service",
                                        command: "-L/--list"))
        for line in ["-Lc --stats", "-Lc --rate", "-Lc --thresholds", "-L --timeout --stats", "-L --timeout --rate",
                     "-L --timeout --thresholds", "-L --timeout --persistent-conn"] {
            assertFails(line, .listOptionsConflict, "options conflicts in the list command")
        }
    }

    func testDuplicatesAndMultipleCommands() {
        assertFails("-Ln -n", .duplicateOption("-n/--numeric"), "-n/--numeric given more than once")
        assertFails("-L --stats --stats", .duplicateOption("--stats"))
        assertFails("-L -t 192.0.2.10:80 -u 192.0.2.10:53", .duplicateOption("-t/--tcp-service or -u/--udp-service"))
        assertFails("-L -S", .multipleCommands("-L/--list", "-S/--save"))
        assertFails("-L -l", .multipleCommands("-L/--list", "-L/--list"))
        assertFails("-L -A -t 192.0.2.10:80", .multipleCommands("-L/--list", "-A/--add-service"))
        assertFails("-A -t 192.0.2.10:80 -L", .multipleCommands("-A/--add-service", "-L/--list"))
        assertFails("-L -h", .multipleCommands("-L/--list", "-h/--help"))
        assertFails("-n", .missingCommand)
        assertFails("-L extra", .unexpectedArgument("extra"))
        assertFails("-L -t", .missingValue("-t/--tcp-service"))
        assertFails("-L -t 192.0.2.10", .invalidServiceAddress("192.0.2.10", .noPort(ipv6: false)))
    }

    func testUnknownAndUnsupportedOptions() {
        assertFails("-L --frobnicate", .unknownOption("--frobnicate"))
        assertFails("-Lq", .unknownOption("-q"))
        assertFails("-q -L", .unknownOption("-q"))
        let fwmark = "firewall-mark services are not supported; use -t or -u"
        let sync = "connection synchronisation between directors is not supported"
        assertFails("-A -f 1 -s rr", .unsupportedOption("-f/--fwmark-service", note: fwmark),
                    "-f/--fwmark-service is not supported yet (\(fwmark))")
        assertFails("-L -f 1", .unsupportedOption("-f/--fwmark-service", note: fwmark))
        assertFails("-A -t 192.0.2.10:80 --pe sip",
                    .unsupportedOption("--pe", note: "persistence engines are not supported"))
        assertFails("-A -6", .unsupportedOption("-6/--ipv6", note: fwmark))
        assertFails("--start-daemon master", .unsupportedOption("--start-daemon", note: sync))
        assertFails("--stop-daemon backup", .unsupportedOption("--stop-daemon", note: sync))
        assertFails("-L --daemon", .unsupportedOption("--daemon", note: sync))
        assertFails("-L --syncid 3", .unsupportedOption("--syncid", note: sync))
        assertFails("-Ln --tun-info", .unsupportedOption("--tun-info", note: "listings do not show tunnel settings; -S does"))
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -i --tun-remcsum",
                    .unsupportedOption("--tun-remcsum",
                                       note: "remote checksum offload is not supported; use --tun-csum or --tun-nocsum"))
    }

    func testRulesFilesStillRefuseRequests() {
        for line in ["-L", "-Ln", "-S -n", "-Z", "-R", "-lc", "-G", "-h", "-v", "-C -n"] {
            XCTAssertThrowsError(try IPVSCommand.parse(line: line), line)
            XCTAssertThrowsError(try RulesFile.load("-A -t 192.0.2.10:80 -s rr\n\(line)\n"), line)
        }
        // The command-line parser still takes them.
        XCTAssertNoThrow(try IPVSRequest(arguments: ["-S", "-n"]))
    }

    // MARK: Messages and exit statuses

    func testMessagesInIpvsadmsWords() throws {
        let key = tcp("192.0.2.10:80")
        let addServer = try IPVSRequest(arguments: args("-a -t 192.0.2.10:80 -r 198.51.100.11"))
        let deleteService = try IPVSRequest(arguments: args("-D -t 192.0.2.10:80"))
        XCTAssertEqual(IPVSRequest.message(for: .noSuchService(key), request: addServer), "Service not defined")
        XCTAssertEqual(IPVSRequest.message(for: .noSuchService(key), request: deleteService), "No such service")
        XCTAssertEqual(IPVSRequest.message(for: .noSuchService(key)), "No such service")
        XCTAssertEqual(IPVSRequest.message(for: .serviceExists(key)), "Service already exists")
        XCTAssertEqual(IPVSRequest.message(for: .unknownOption("--frob")), "--frob: unknown option")
        XCTAssertEqual(IPVSRequest.message(for: .missingCommand), ConfigError.missingCommand.description)
    }

    func testExitStatuses() {
        let key = tcp("192.0.2.10:80")
        XCTAssertEqual(IPVSRequest.exitStatus(for: .missingOption(option: "-r", command: "-a")), 2)
        XCTAssertEqual(IPVSRequest.exitStatus(for: .invalidWeight("x")), 2)
        XCTAssertEqual(IPVSRequest.exitStatus(for: .listOptionsConflict), 2)
        XCTAssertEqual(IPVSRequest.exitStatus(for: .unknownOption("-q")), 255)
        XCTAssertEqual(IPVSRequest.exitStatus(for: .missingCommand), 255)
        XCTAssertEqual(IPVSRequest.exitStatus(for: .serviceExists(key)), 255)
        XCTAssertEqual(IPVSRequest.exitStatus(for: .noSuchService(key), request: .change(.deleteService(key))), 255)
        XCTAssertEqual(IPVSRequest.exitStatus(for: .noSuchService(key), request: .list(IPVSListOptions(service: key))), 1)
    }

    // MARK: Save and restore

    func testRichRulesRoundTrip() throws {
        let text = """
            --set 600 60 120
            -A -t 192.0.2.10:80 -s wlc -p 300 -M 255.255.255.0
            -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 1
            -a -t 192.0.2.10:80 -r 198.51.100.12:80 -i --tun-type gue --tun-port 6080 --tun-csum -w 2 -x 100 -y 50
            -a -t 192.0.2.10:80 -r 198.51.100.13:80 -i --tun-type gre -w 3
            -A -t 192.0.2.10:443 -s sh -b sh-fallback,sh-port
            -a -t 192.0.2.10:443 -r 198.51.100.21:8443 -m -w 1
            -a -t 192.0.2.10:443 -r 198.51.100.22:8443 --fullnat -w 4 -x 1000
            -P -t 192.0.2.10:443 -z 203.0.113.100
            -P -t 192.0.2.10:443 -z 203.0.113.101
            -A -u [2001:db8::53]:53 -s rr -p 600 -M 64 -o
            -a -u [2001:db8::53]:53 -r [2001:db8::100]:53 -g -w 1
            -a -u [2001:db8::53]:53 -r [2001:db8::101]:5353 -m -w 0

            """
        XCTAssertEqual(RulesFile.save(try RulesFile.load(text)), text)
    }
}
