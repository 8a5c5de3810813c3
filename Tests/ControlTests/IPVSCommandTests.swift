import Control
import Packet
import Scheduling
import XCTest

/// Splits a command line the way a shell would for these simple cases.
func args(_ line: String) -> [String] { line.split(separator: " ").map(String.init) }

func endpoint(_ text: String) -> L4Endpoint { L4Endpoint(text)! }
func tcp(_ text: String) -> ServiceKey { ServiceKey(proto: .tcp, endpoint: endpoint(text)) }
func udp(_ text: String) -> ServiceKey { ServiceKey(proto: .udp, endpoint: endpoint(text)) }

final class IPVSCommandTests: XCTestCase {
    private func assertParses(_ line: String, _ expected: IPVSCommand,
                              file: StaticString = #filePath, line testLine: UInt = #line) {
        XCTAssertEqual(Result { () throws(ConfigError) in try IPVSCommand(arguments: args(line)) },
                       .success(expected), line, file: file, line: testLine)
    }

    private func assertFails(_ arguments: [String], _ expected: ConfigError, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        do {
            let command = try IPVSCommand(arguments: arguments)
            XCTFail("parsed \(arguments) as \(command)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
            XCTAssertEqual(error.description, message, file: file, line: line)
        }
    }

    private func assertFails(_ line: String, _ expected: ConfigError, _ message: String,
                             file: StaticString = #filePath, line testLine: UInt = #line) {
        assertFails(args(line), expected, message, file: file, line: testLine)
    }

    // MARK: Commands, short and long

    func testAddService() {
        let expected = IPVSCommand.addService(tcp("192.0.2.10:80"), scheduler: .wrr)
        assertParses("-A -t 192.0.2.10:80 -s wrr", expected)
        assertParses("--add-service --tcp-service 192.0.2.10:80 --scheduler wrr", expected)
        assertParses("--add-service --tcp-service=192.0.2.10:80 --scheduler=wrr", expected)
        assertParses("-s wrr -t 192.0.2.10:80 -A", expected)
        assertParses("-At 192.0.2.10:80 -swrr", expected)
        assertParses("-A -t192.0.2.10:80 -s wrr", expected)
        assertParses("-A -u 192.0.2.10:53 -s rr", .addService(udp("192.0.2.10:53"), scheduler: .rr))
        assertParses("-A --udp-service 192.0.2.10:53 -s rr", .addService(udp("192.0.2.10:53"), scheduler: .rr))
        assertParses("-A -t [2001:db8::10]:80 -s rr", .addService(tcp("[2001:db8::10]:80"), scheduler: .rr))
    }

    func testEditService() {
        assertParses("-E -t 192.0.2.10:80 -s rr", .editService(tcp("192.0.2.10:80"), scheduler: .rr))
        assertParses("--edit-service -t 192.0.2.10:80 --scheduler rr", .editService(tcp("192.0.2.10:80"), scheduler: .rr))
        assertParses("-E -u 192.0.2.10:53", .editService(udp("192.0.2.10:53"), scheduler: nil))
    }

    func testDeleteService() {
        assertParses("-D -t 192.0.2.10:80", .deleteService(tcp("192.0.2.10:80")))
        assertParses("--delete-service --udp-service [2001:db8::10]:53", .deleteService(udp("[2001:db8::10]:53")))
    }

    func testClear() {
        assertParses("-C", .clear)
        assertParses("--clear", .clear)
    }

    func testAddServerDefaults() {
        // Port omitted: the service's; method omitted: direct routing; weight omitted: 1.
        let expected = IPVSCommand.addServer(tcp("192.0.2.10:80"),
                                             RealServerConfig(endpoint: endpoint("198.51.100.11:80"), weight: 1,
                                                              method: .directRouting))
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11", expected)
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11:80", expected)
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 1", expected)
    }

    func testAddServerAllForms() {
        let expected = IPVSCommand.addServer(tcp("192.0.2.10:80"),
                                             RealServerConfig(endpoint: endpoint("198.51.100.11:80"), weight: 3))
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3", expected)
        assertParses("--add-server --tcp-service 192.0.2.10:80 --real-server 198.51.100.11:80 --gatewaying --weight 3",
                     expected)
        assertParses("--add-server --tcp-service=192.0.2.10:80 --real-server=198.51.100.11 --weight=3", expected)
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11 -gw 3", expected)
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11 -gw3", expected)
        assertParses("-w 3 -g -r 198.51.100.11 -t 192.0.2.10:80 -a", expected)
        assertParses("-a -u 192.0.2.10:53 -r 198.51.100.11 -w 0",
                     .addServer(udp("192.0.2.10:53"), RealServerConfig(endpoint: endpoint("198.51.100.11:53"), weight: 0)))
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11 -w 65535",
                     .addServer(tcp("192.0.2.10:80"), RealServerConfig(endpoint: endpoint("198.51.100.11:80"), weight: 65535)))
    }

    func testAddServerIPv6() {
        let expected = IPVSCommand.addServer(tcp("[2001:db8::10]:80"),
                                             RealServerConfig(endpoint: endpoint("[2001:db8::11]:80"), weight: 2))
        assertParses("-a -t [2001:db8::10]:80 -r [2001:db8::11]:80 -g -w 2", expected)
        assertParses("-a -t [2001:db8::10]:80 -r [2001:db8::11] -w 2", expected)
        assertParses("-a -t [2001:db8::10]:80 -r 2001:db8::11 -w 2", expected)
    }

    func testEditServer() {
        assertParses("-e -t 192.0.2.10:80 -r 198.51.100.11 -w 5",
                     .editServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80"), weight: 5, method: nil))
        assertParses("--edit-server -t 192.0.2.10:80 --real-server 198.51.100.11:80 --gatewaying",
                     .editServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80"), weight: nil,
                                 method: .directRouting))
        assertParses("-e -t 192.0.2.10:80 -r 198.51.100.11",
                     .editServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80"), weight: nil, method: nil))
    }

    func testDeleteServer() {
        let expected = IPVSCommand.deleteServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80"))
        assertParses("-d -t 192.0.2.10:80 -r 198.51.100.11", expected)
        assertParses("--delete-server --tcp-service 192.0.2.10:80 --real-server 198.51.100.11:80", expected)
        assertParses("-d -u [2001:db8::10]:53 -r [2001:db8::12]",
                     .deleteServer(udp("[2001:db8::10]:53"), server: endpoint("[2001:db8::12]:53")))
    }

    func testDoubleDashEndsOptions() {
        assertParses("-C --", .clear)
        assertFails("-C -- -A", .unexpectedArgument("-A"), "unexpected argument '-A'")
    }

    // MARK: Printing

    func testArgumentsRoundTrip() throws {
        let commands: [IPVSCommand] = [
            .addService(tcp("192.0.2.10:80"), scheduler: .wrr),
            .addService(udp("[2001:db8::10]:53"), scheduler: .rr),
            .editService(tcp("192.0.2.10:80"), scheduler: .rr),
            .editService(tcp("192.0.2.10:80"), scheduler: nil),
            .deleteService(udp("192.0.2.10:53")),
            .addServer(tcp("192.0.2.10:80"), RealServerConfig(endpoint: endpoint("198.51.100.11:80"), weight: 3)),
            .addServer(tcp("[2001:db8::10]:80"), RealServerConfig(endpoint: endpoint("[2001:db8::11]:80"), weight: 0)),
            .editServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80"), weight: 7, method: .directRouting),
            .editServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80"), weight: nil, method: nil),
            .deleteServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80")),
            .clear,
        ]
        for command in commands {
            XCTAssertEqual(try IPVSCommand(arguments: command.arguments), command, command.description)
        }
    }

    func testDescription() {
        XCTAssertEqual(IPVSCommand.addService(tcp("192.0.2.10:80"), scheduler: .wrr).description,
                       "-A -t 192.0.2.10:80 -s wrr")
        XCTAssertEqual(IPVSCommand.addServer(tcp("192.0.2.10:80"),
                                             RealServerConfig(endpoint: endpoint("198.51.100.11:80"), weight: 3)).description,
                       "-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3")
        XCTAssertEqual(IPVSCommand.addServer(udp("[2001:db8::10]:53"),
                                             RealServerConfig(endpoint: endpoint("[2001:db8::11]:53"))).description,
                       "-a -u [2001:db8::10]:53 -r [2001:db8::11]:53 -g -w 1")
        XCTAssertEqual(IPVSCommand.editService(tcp("192.0.2.10:80"), scheduler: nil).description, "-E -t 192.0.2.10:80")
        XCTAssertEqual(IPVSCommand.editServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80"), weight: 4,
                                              method: nil).description,
                       "-e -t 192.0.2.10:80 -r 198.51.100.11:80 -w 4")
        XCTAssertEqual(IPVSCommand.deleteServer(tcp("192.0.2.10:80"), server: endpoint("198.51.100.11:80")).description,
                       "-d -t 192.0.2.10:80 -r 198.51.100.11:80")
        XCTAssertEqual(IPVSCommand.deleteService(tcp("192.0.2.10:80")).description, "-D -t 192.0.2.10:80")
        XCTAssertEqual(IPVSCommand.clear.description, "-C")
        XCTAssertEqual(tcp("192.0.2.10:80").description, "-t 192.0.2.10:80")
        XCTAssertEqual(L4Protocol.tcp.number, 6)
        XCTAssertEqual(L4Protocol.udp.number, 17)
    }

    // MARK: Lines

    func testLines() throws {
        XCTAssertNil(try IPVSCommand.parse(line: ""))
        XCTAssertNil(try IPVSCommand.parse(line: "   \t "))
        XCTAssertNil(try IPVSCommand.parse(line: "# -A -t 192.0.2.10:80 -s rr"))
        XCTAssertNil(try IPVSCommand.parse(line: "   #comment"))
        XCTAssertEqual(try IPVSCommand.parse(line: "\t-A  -t\t192.0.2.10:80   -s rr  # web  "),
                       .addService(tcp("192.0.2.10:80"), scheduler: .rr))
        XCTAssertEqual(IPVSCommand.words(of: " -a -t 1.2.3.4:80\t-r 5.6.7.8 #x -w 2"),
                       ["-a", "-t", "1.2.3.4:80", "-r", "5.6.7.8"])
    }

    // MARK: Errors

    func testCommandErrors() {
        assertFails([], .missingCommand, "no command given (one of -A, -E, -D, -a, -e, -d, -C)")
        assertFails("-t 192.0.2.10:80 -s rr", .missingCommand, "no command given (one of -A, -E, -D, -a, -e, -d, -C)")
        assertFails("-A -a -t 192.0.2.10:80", .multipleCommands("-A/--add-service", "-a/--add-server"),
                    "more than one command given: -A/--add-service and -a/--add-server")
        assertFails("-C --clear", .multipleCommands("-C/--clear", "-C/--clear"),
                    "more than one command given: -C/--clear and -C/--clear")
        assertFails("-AE -t 192.0.2.10:80", .multipleCommands("-A/--add-service", "-E/--edit-service"),
                    "more than one command given: -A/--add-service and -E/--edit-service")
    }

    func testUnknownOptions() {
        assertFails("-A -t 192.0.2.10:80 -s rr -q", .unknownOption("-q"), "unknown option -q")
        assertFails("-A -t 192.0.2.10:80 --frobnicate", .unknownOption("--frobnicate"), "unknown option --frobnicate")
        assertFails("-A -t 192.0.2.10:80 --frob=1", .unknownOption("--frob"), "unknown option --frob")
        assertFails("-Aq", .unknownOption("-q"), "unknown option -q")
        assertFails("--tcp 192.0.2.10:80", .unknownOption("--tcp"), "unknown option --tcp")
    }

    func testUnsupportedOptions() {
        let cases: [(String, String)] = [
            ("-A -f 1 -s rr", "-f/--fwmark-service"),
            ("-A --fwmark-service 1", "-f/--fwmark-service"),
            ("-A -t 192.0.2.10:80 -s rr --pe sip", "--pe"),
            ("-A -f 1 -6 -s rr", "-f/--fwmark-service"),
            ("-A -6", "-6/--ipv6"),
            ("-a -t 192.0.2.10:80 -r 198.51.100.11 --tun-remcsum", "--tun-remcsum"),
            ("-L", "-L/--list"),
            ("-l", "-l/--list"),
            ("--list -n", "-L/--list"),
            ("-Ln", "-L/--list"),
            ("-Z", "-Z/--zero"),
            ("--zero", "-Z/--zero"),
            ("-S", "-S/--save"),
            ("--save", "-S/--save"),
            ("-R", "-R/--restore"),
            ("--restore", "-R/--restore"),
            ("--start-daemon master", "--start-daemon"),
            ("--stop-daemon backup", "--stop-daemon"),
            ("-h", "-h/--help"),
            ("--help", "-h/--help"),
            ("-v", "-v/--version"),
            ("--version", "-v/--version"),
            ("-C -n", "-n/--numeric"),
            ("-C --numeric", "-n/--numeric"),
            ("-C -c", "-c/--connection"),
            ("-C -X", "-X/--exact"),
            ("-C --exact", "-X/--exact"),
            ("-C --timeout", "--timeout"),
            ("-C --daemon", "--daemon"),
            ("-C --stats", "--stats"),
            ("-C --rate", "--rate"),
            ("-C --thresholds", "--thresholds"),
            ("-C --persistent-conn", "--persistent-conn"),
            ("-C --sort", "--sort"),
            ("-C --nosort", "--nosort"),
            ("-C --mcast-interface eth0", "--mcast-interface"),
            ("-C --mcast-group 224.0.0.81", "--mcast-group"),
            ("-C --mcast-port 8848", "--mcast-port"),
            ("-C --mcast-ttl 1", "--mcast-ttl"),
            ("-C --syncid 1", "--syncid"),
            ("-C --sync-maxlen 1400", "--sync-maxlen"),
        ]
        for (line, option) in cases {
            assertFails(line, .unsupportedOption(option, note: nil), "\(option) is not supported yet")
        }
    }

    func testMissingValues() {
        assertFails("-A -s rr -t", .missingValue("-t/--tcp-service"), "-t/--tcp-service needs a value")
        assertFails("-A -t -s rr", .missingValue("-t/--tcp-service"), "-t/--tcp-service needs a value")
        assertFails("-A -u", .missingValue("-u/--udp-service"), "-u/--udp-service needs a value")
        assertFails("-A -t 192.0.2.10:80 -s", .missingValue("-s/--scheduler"), "-s/--scheduler needs a value")
        assertFails("-A -t 192.0.2.10:80 --scheduler", .missingValue("-s/--scheduler"), "-s/--scheduler needs a value")
        assertFails("-a -t 192.0.2.10:80 -r -g", .missingValue("-r/--real-server"), "-r/--real-server needs a value")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -w", .missingValue("-w/--weight"), "-w/--weight needs a value")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 --weight", .missingValue("-w/--weight"),
                    "-w/--weight needs a value")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -gw", .missingValue("-w/--weight"), "-w/--weight needs a value")
    }

    func testValuesWhereNoneIsTaken() {
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 --gatewaying=yes", .unexpectedValue("-g/--gatewaying"),
                    "-g/--gatewaying takes no value")
        assertFails("--clear=all", .unexpectedValue("-C/--clear"), "-C/--clear takes no value")
        assertFails("-C all", .unexpectedArgument("all"), "unexpected argument 'all'")
        assertFails("-A -t 192.0.2.10:80 -s rr extra", .unexpectedArgument("extra"), "unexpected argument 'extra'")
        assertFails("-A - -t 192.0.2.10:80", .unexpectedArgument("-"), "unexpected argument '-'")
        assertFails(["-C", ""], .unexpectedArgument(""), "unexpected argument ''")
    }

    func testDuplicateOptions() {
        let service = "-t/--tcp-service or -u/--udp-service"
        assertFails("-A -t 192.0.2.10:80 -t 192.0.2.11:80 -s rr", .duplicateOption(service), "\(service) given more than once")
        assertFails("-A -t 192.0.2.10:80 -u 192.0.2.10:80 -s rr", .duplicateOption(service), "\(service) given more than once")
        assertFails("-A -t 192.0.2.10:80 -s rr -s wrr", .duplicateOption("-s/--scheduler"), "-s/--scheduler given more than once")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -r 198.51.100.12", .duplicateOption("-r/--real-server"),
                    "-r/--real-server given more than once")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -w 1 --weight 2", .duplicateOption("-w/--weight"),
                    "-w/--weight given more than once")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -g -g", .duplicateOption("-g/--gatewaying"),
                    "-g/--gatewaying given more than once")
    }

    func testOptionsNotAllowedWithCommand() {
        let cases: [(String, String, String)] = [
            ("-A -t 192.0.2.10:80 -s rr -r 198.51.100.11", "-r/--real-server", "-A/--add-service"),
            ("-A -t 192.0.2.10:80 -s rr -w 1", "-w/--weight", "-A/--add-service"),
            ("-A -t 192.0.2.10:80 -s rr -g", "-g/--gatewaying", "-A/--add-service"),
            ("-E -t 192.0.2.10:80 -r 198.51.100.11", "-r/--real-server", "-E/--edit-service"),
            ("-E -t 192.0.2.10:80 -w 2", "-w/--weight", "-E/--edit-service"),
            ("-D -t 192.0.2.10:80 -s rr", "-s/--scheduler", "-D/--delete-service"),
            ("-D -t 192.0.2.10:80 -r 198.51.100.11", "-r/--real-server", "-D/--delete-service"),
            ("-C -t 192.0.2.10:80", "-t/--tcp-service or -u/--udp-service", "-C/--clear"),
            ("-C -s rr", "-s/--scheduler", "-C/--clear"),
            ("-a -t 192.0.2.10:80 -r 198.51.100.11 -s rr", "-s/--scheduler", "-a/--add-server"),
            ("-e -t 192.0.2.10:80 -r 198.51.100.11 -s rr", "-s/--scheduler", "-e/--edit-server"),
            ("-d -t 192.0.2.10:80 -r 198.51.100.11 -w 1", "-w/--weight", "-d/--delete-server"),
            ("-d -t 192.0.2.10:80 -r 198.51.100.11 -g", "-g/--gatewaying", "-d/--delete-server"),
        ]
        for (line, option, command) in cases {
            assertFails(line, .optionNotAllowed(option: option, command: command), "\(option) is not allowed with \(command)")
        }
    }

    func testMissingOptions() {
        let service = "-t/--tcp-service or -u/--udp-service"
        let cases: [(String, String, String)] = [
            ("-A -s rr", service, "-A/--add-service"),
            ("-E -s rr", service, "-E/--edit-service"),
            ("-D", service, "-D/--delete-service"),
            ("-a -r 198.51.100.11", service, "-a/--add-server"),
            ("-e -r 198.51.100.11", service, "-e/--edit-server"),
            ("-d -r 198.51.100.11", service, "-d/--delete-server"),
            ("-a -t 192.0.2.10:80", "-r/--real-server", "-a/--add-server"),
            ("-e -t 192.0.2.10:80 -w 2", "-r/--real-server", "-e/--edit-server"),
            ("-d -t 192.0.2.10:80", "-r/--real-server", "-d/--delete-server"),
        ]
        for (line, option, command) in cases {
            assertFails(line, .missingOption(option: option, command: command), "\(command) needs \(option)")
        }
    }

    func testSchedulerErrors() {
        let all = "rr, wrr, lc, wlc, sed, nq, lblc, lblcr, dh, sh, mh, fo, ovf, twos"
        assertFails("-A -t 192.0.2.10:80 -s foo", .unknownScheduler("foo"), "unknown scheduler 'foo' (supported: \(all))")
        assertFails("-A -t 192.0.2.10:80 -s RR", .unknownScheduler("RR"), "unknown scheduler 'RR' (supported: \(all))")
        assertFails(["-A", "-t", "192.0.2.10:80", "-s", ""], .missingValue("-s/--scheduler"), "-s/--scheduler needs a value")
    }

    func testEverySchedulerAndWLCByDefault() {
        assertParses("-A -t 192.0.2.10:80", .addService(tcp("192.0.2.10:80"), scheduler: .wlc))
        for kind in SchedulerKind.allCases {
            assertParses("-A -t 192.0.2.10:80 -s \(kind.name)", .addService(tcp("192.0.2.10:80"), scheduler: kind))
            assertParses("-E -t 192.0.2.10:80 -s \(kind.name)", .editService(tcp("192.0.2.10:80"), scheduler: kind))
        }
    }

    func testServiceOptions() {
        let web = tcp("192.0.2.10:80")
        assertParses("-A -t 192.0.2.10:80 -s sh -b sh-fallback,sh-port",
                     .addService(web, scheduler: .sh, options: ServiceOptions(schedulerFlags: [.fallback, .port])))
        assertParses("-A -t 192.0.2.10:80 -s mh --sched-flags mh-port",
                     .addService(web, scheduler: .mh, options: ServiceOptions(schedulerFlags: [.port])))
        assertParses("-A -t 192.0.2.10:80 -s rr -p",
                     .addService(web, scheduler: .rr, options: ServiceOptions(persistence: 300)))
        assertParses("-A -t 192.0.2.10:80 -s rr -p 60 -M 255.255.255.0",
                     .addService(web, scheduler: .rr, options: ServiceOptions(persistence: 60, netmask: 24)))
        assertParses("-A -t 192.0.2.10:80 -s rr --persistent=60",
                     .addService(web, scheduler: .rr, options: ServiceOptions(persistence: 60)))
        assertParses("-A -t [2001:db8::10]:80 -p 10 -M 64",
                     .addService(tcp("[2001:db8::10]:80"), scheduler: .wlc, options: ServiceOptions(persistence: 10, netmask: 64)))
        assertParses("-A -u 192.0.2.10:53 -s rr -o",
                     .addService(udp("192.0.2.10:53"), scheduler: .rr, options: ServiceOptions(onePacket: true)))
        assertParses("-E -t 192.0.2.10:80 -p 30",
                     .editService(web, scheduler: nil, options: ServiceOptions(persistence: 30)))
        // Without -s the flag's scheduler is checked against the service's when the edit is applied.
        assertParses("-E -t 192.0.2.10:80 -b mh-port",
                     .editService(web, scheduler: nil, options: ServiceOptions(schedulerFlags: [.port])))
        assertParses("-a -t 192.0.2.10:80 -r 198.51.100.11 -x 100 -y 10",
                     .addServer(web, RealServerConfig(endpoint: endpoint("198.51.100.11:80"), upperThreshold: 100,
                                                      lowerThreshold: 10)))
        assertParses("-e -t 192.0.2.10:80 -r 198.51.100.11 --u-threshold 5",
                     .editServer(web, server: endpoint("198.51.100.11:80"), weight: nil, method: nil, upperThreshold: 5))
        assertParses("--set 900 0 60", .setTimeouts(TimeoutSettings(tcp: 900, tcpFin: 0, udp: 60)))

        assertFails("-A -t 192.0.2.10:80 -s rr -b sh-port", .schedulerFlagNotAllowed(flag: "sh-port", scheduler: .rr),
                    "scheduler flag 'sh-port' does not apply to scheduler rr")
        assertFails("-A -t 192.0.2.10:80 -s sh -b mh-port", .schedulerFlagNotAllowed(flag: "mh-port", scheduler: .sh),
                    "scheduler flag 'mh-port' does not apply to scheduler sh")
        assertFails("-E -t 192.0.2.10:80 -s sh -b mh-port", .schedulerFlagNotAllowed(flag: "mh-port", scheduler: .sh),
                    "scheduler flag 'mh-port' does not apply to scheduler sh")
        assertFails("-A -t 192.0.2.10:80 -b sh-port", .schedulerFlagNotAllowed(flag: "sh-port", scheduler: .wlc),
                    "scheduler flag 'sh-port' does not apply to scheduler wlc")
        assertFails("-A -t 192.0.2.10:80 -s sh -b sh-bogus", .unknownSchedulerFlag("sh-bogus"),
                    "unknown scheduler flag 'sh-bogus' (sh-fallback, sh-port, mh-fallback, mh-port)")
        assertFails("-A -t 192.0.2.10:80 -p 0", .invalidPersistence("0"),
                    "invalid persistence timeout '0': expected seconds from 1 to 2678400")
        assertFails("-A -t 192.0.2.10:80 -M 255.255.255.0", .netmaskWithoutPersistence, "-M/--netmask needs -p/--persistent")
        assertFails("-A -t 192.0.2.10:80 -p -M 255.0.255.0", .invalidNetmask("255.0.255.0"),
                    "invalid netmask '255.0.255.0': expected a dotted IPv4 netmask or an IPv6 prefix length")
        assertFails("-A -t 192.0.2.10:80 -o", .onePacketNeedsUDP, "-o/--ops (one-packet scheduling) applies to UDP services only")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -x -1", .invalidThreshold("-1"),
                    "invalid threshold '-1': expected an integer from 0 to 2147483647")
        assertFails("-A -t 192.0.2.10:80 -x 1", .optionNotAllowed(option: "-x/--u-threshold", command: "-A/--add-service"),
                    "-x/--u-threshold is not allowed with -A/--add-service")
        assertFails("--set 900 120", .missingValue("--set"), "--set needs a value")
        assertFails("--set 900 x 300", .invalidTimeout("x"), "invalid timeout 'x': expected seconds from 0 (unchanged) to 2678400")
    }

    func testServiceOptionsSaveInIPVSADMOrder() {
        let web = tcp("192.0.2.10:80")
        XCTAssertEqual(IPVSCommand.addService(web, scheduler: .sh, options: ServiceOptions(
            schedulerFlags: [.port, .fallback], persistence: 300, netmask: 24)).description,
                       "-A -t 192.0.2.10:80 -s sh -b sh-fallback,sh-port -p 300 -M 255.255.255.0")
        XCTAssertEqual(IPVSCommand.addService(udp("192.0.2.10:53"), scheduler: .wlc,
                                              options: ServiceOptions(persistence: 300, netmask: 32, onePacket: true)).description,
                       "-A -u 192.0.2.10:53 -s wlc -p 300 -o")
        XCTAssertEqual(IPVSCommand.addService(tcp("[2001:db8::10]:80"), scheduler: .rr,
                                              options: ServiceOptions(persistence: 5, netmask: 64)).description,
                       "-A -t [2001:db8::10]:80 -s rr -p 5 -M 64")
        // An edit that keeps the scheduler names its flags generically.
        XCTAssertEqual(IPVSCommand.editService(web, scheduler: nil, options: ServiceOptions(schedulerFlags: [.port])).description,
                       "-E -t 192.0.2.10:80 -b flag-2")
        XCTAssertEqual(IPVSCommand.addServer(web, RealServerConfig(endpoint: endpoint("198.51.100.11:80"), weight: 2,
                                                                   upperThreshold: 50, lowerThreshold: 20)).description,
                       "-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 2 -x 50 -y 20")
    }

    func testWeightErrors() {
        for text in ["65536", "-1", "abc", "1.5", "99999999999", "3x"] {
            assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11 -w \(text)", .invalidWeight(text),
                        "invalid weight '\(text)': expected an integer from 0 to 65535")
        }
        assertFails("-e -t 192.0.2.10:80 -r 198.51.100.11 --weight=", .invalidWeight(""),
                    "invalid weight '': expected an integer from 0 to 65535")
    }

    func testAddressErrors() {
        assertFails("-A -t 1.2.3.4:99999 -s rr", .invalidServiceAddress("1.2.3.4:99999", .portOutOfRange("99999")),
                    "invalid service address '1.2.3.4:99999': port 99999 is out of range (1-65535)")
        assertFails("-A -t [::1 -s rr", .invalidServiceAddress("[::1", .unclosedBracket),
                    "invalid service address '[::1': missing ']' after the IPv6 address")
        assertFails("-A -t host:80 -s rr", .invalidServiceAddress("host:80", .hostName("host")),
                    "invalid service address 'host:80': 'host' is not a numeric address (host names are not supported yet)")
        assertFails("-A -t 192.0.2.10 -s rr", .invalidServiceAddress("192.0.2.10", .noPort(ipv6: false)),
                    "invalid service address '192.0.2.10': no port given")
        assertFails("-A -u 192.0.2.10:0 -s rr", .invalidServiceAddress("192.0.2.10:0", .zeroPort),
                    "invalid service address '192.0.2.10:0': port 0 is not allowed")
        assertFails("-D -t 2001:db8::10:80", .invalidServiceAddress("2001:db8::10:80", .noPort(ipv6: true)),
                    "invalid service address '2001:db8::10:80': no port given "
                        + "(write an IPv6 address with a port as [ADDRESS]:PORT)")
        assertFails("-A -t 192.0.2.10:http -s rr", .invalidServiceAddress("192.0.2.10:http", .portName("http")),
                    "invalid service address '192.0.2.10:http': port 'http' is not a number "
                        + "(service names are not supported yet)")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11:99999",
                    .invalidRealServerAddress("198.51.100.11:99999", .portOutOfRange("99999")),
                    "invalid real server address '198.51.100.11:99999': port 99999 is out of range (1-65535)")
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11:0",
                    .invalidRealServerAddress("198.51.100.11:0", .zeroPort),
                    "invalid real server address '198.51.100.11:0': port 0 is not allowed")
        assertFails("-a -t 192.0.2.10:80 -r web1",
                    .invalidRealServerAddress("web1", .hostName("web1")),
                    "invalid real server address 'web1': 'web1' is not a numeric address (host names are not supported yet)")
        assertFails("-a -t [2001:db8::10]:80 -r [2001:db8::11",
                    .invalidRealServerAddress("[2001:db8::11", .unclosedBracket),
                    "invalid real server address '[2001:db8::11': missing ']' after the IPv6 address")
        assertFails(["-a", "-t", "192.0.2.10:80", "-r", ""], .invalidRealServerAddress("", .empty),
                    "invalid real server address '': empty address")
    }

    func testDirectRoutingKeepsThePort() {
        assertFails("-a -t 192.0.2.10:80 -r 198.51.100.11:8080",
                    .portMismatch(real: endpoint("198.51.100.11:8080"), service: tcp("192.0.2.10:80"), method: .directRouting),
                    "real server port 8080 differs from the service port 80: direct routing (-g) cannot change the "
                        + "port; omit the port or use 80")
        assertFails("-a -t [2001:db8::10]:443 -r [2001:db8::11]:80 -g",
                    .portMismatch(real: endpoint("[2001:db8::11]:80"), service: tcp("[2001:db8::10]:443"),
                                  method: .directRouting),
                    "real server port 80 differs from the service port 443: direct routing (-g) cannot change the "
                        + "port; omit the port or use 443")
        assertFails("-e -t 192.0.2.10:80 -r 198.51.100.11:81 -g",
                    .portMismatch(real: endpoint("198.51.100.11:81"), service: tcp("192.0.2.10:80"), method: .directRouting),
                    "real server port 81 differs from the service port 80: direct routing (-g) cannot change the "
                        + "port; omit the port or use 80")
    }

    func testFamiliesMustMatch() {
        assertFails("-a -t 192.0.2.10:80 -r [2001:db8::11]:80",
                    .familyMismatch(real: endpoint("[2001:db8::11]:80"), service: tcp("192.0.2.10:80")),
                    "real server 2001:db8::11 is IPv6 but service 192.0.2.10:80 is IPv4; only tunnelling (-i) "
                        + "can mix address families")
        assertFails("-a -t [2001:db8::10]:80 -r 198.51.100.11",
                    .familyMismatch(real: endpoint("198.51.100.11:80"), service: tcp("[2001:db8::10]:80")),
                    "real server 198.51.100.11 is IPv4 but service [2001:db8::10]:80 is IPv6; only tunnelling (-i) "
                        + "can mix address families")
        // A tunnelled real server may be of the other family: -e and -d name it as it is.
        XCTAssertNoThrow(try IPVSCommand(arguments: ["-e", "-t", "192.0.2.10:80", "-r", "2001:db8::11", "-w", "2"]))
        XCTAssertNoThrow(try IPVSCommand(arguments: ["-d", "-u", "192.0.2.10:53", "-r", "[2001:db8::11]"]))
    }

    func testFirstProblemInArgumentOrderWins() {
        // Unknown options and bad values are reported as they come, before checks on the whole command.
        assertFails("-A -t host:80 -q", .invalidServiceAddress("host:80", .hostName("host")),
                    "invalid service address 'host:80': 'host' is not a numeric address (host names are not supported yet)")
        assertFails("-A -q -t host:80", .unknownOption("-q"), "unknown option -q")
        assertFails("-w 3 -A -t 192.0.2.10:80 --pe sip", .unsupportedOption("--pe", note: nil),
                    "--pe is not supported yet")
    }
}
