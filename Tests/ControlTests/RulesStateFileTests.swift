import Control
import Foundation
import Packet
import Scheduling
import XCTest

final class RulesStateFileTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "xdirector-state-\(getpid())-\(UUID().uuidString)"
        XCTAssertEqual(mkdir(directory, 0o755), 0)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Everything a configuration can hold: timeouts, every method and tunnel kind, both families, both
    /// protocols, weights, thresholds, persistence with a netmask, scheduler flags, one-packet scheduling and
    /// FULLNAT local addresses.
    private let rich = """
        --set 600 60 120
        -A -t 192.0.2.10:80 -s sh -b sh-fallback,sh-port -p 300 -M 255.255.255.0
        -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3 -x 100 -y 50
        -a -t 192.0.2.10:80 -r 198.51.100.12:80 -i -w 1
        -a -t 192.0.2.10:80 -r 198.51.100.13:80 -i --tun-type gue --tun-port 6080 --tun-csum -w 2
        -a -t 192.0.2.10:80 -r [2001:db8::11]:80 -i --tun-type gre -w 0
        -a -t 192.0.2.10:80 -r 198.51.100.14:8080 -m -w 65535 -x 2147483647
        -A -u 192.0.2.10:53 -s wlc -o
        -a -u 192.0.2.10:53 -r 198.51.100.11:53 -g -w 2
        -A -t [2001:db8::10]:443 -s mh -b mh-port -p 60 -M 64
        -a -t [2001:db8::10]:443 -r [2001:db8::12]:8443 --fullnat -w 1 -y 10
        -a -t [2001:db8::10]:443 -r [2001:db8::13]:443 -m -w 4
        -P -t [2001:db8::10]:443 -z 2001:db8::100
        -P -t [2001:db8::10]:443 -z 2001:db8::101
        -A -u [2001:db8::10]:53 -s rr -p 2678400
        -A -t 192.0.2.20:80 -s wrr
        -a -t 192.0.2.20:80 -r 198.51.100.21:9000 --fullnat -w 7
        -P -t 192.0.2.20:80 -z 203.0.113.1

        """

    private func path(_ name: String = "eth0.rules") -> String { "\(directory)/\(name)" }

    private func contents(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }

    func testRoundTripOfEverythingAConfigurationHolds() throws {
        let config = try RulesFile.load(rich)
        let file = RulesStateFile(path: path())
        try file.save(config)
        XCTAssertEqual(contents(path()), RulesStateFile.header + "\n" + rich)
        let loaded = try XCTUnwrap(try file.load())
        XCTAssertEqual(loaded, config)
        XCTAssertEqual(loaded.timeouts, TimeoutSettings(tcp: 600, tcpFin: 60, udp: 120))
        XCTAssertEqual(loaded.services[0].options.netmask, 24)
        XCTAssertEqual(loaded.services[2].localAddresses.count, 2)
        XCTAssertEqual(Set(loaded.services.flatMap(\.reals).map(\.method)), Set(ForwardingMethod.allCases))
    }

    func testTheTextIsWhatIPVSAdmSaveNumericPrints() throws {
        let config = try RulesFile.load(rich)
        XCTAssertEqual(RulesStateFile.render(config), RulesStateFile.header + "\n" + RulesFile.save(config))
        XCTAssertTrue(RulesStateFile.header.hasPrefix("#"))
        XCTAssertFalse(RulesStateFile.header.contains("\n"))
    }

    func testDefaultTimeoutsAndAnEmptyConfigurationRoundTrip() throws {
        let file = RulesStateFile(path: path())
        try file.save(DirectorConfig())
        XCTAssertEqual(contents(path()), RulesStateFile.header + "\n")
        XCTAssertEqual(try file.load(), DirectorConfig())

        // Timeouts set to IPVS's defaults stay set (the configuration compares equal after the round trip).
        let defaults = DirectorConfig(services: [], timeouts: TimeoutSettings())
        try file.save(defaults)
        XCTAssertEqual(try file.load(), defaults)
    }

    func testAConfigurationBuiltInCodeRoundTrips() throws {
        var config = DirectorConfig()
        let web = tcp("192.0.2.30:80")
        try config.apply(.addService(web, scheduler: .lblcr,
                                     options: ServiceOptions(persistence: 120, netmask: 16)))
        try config.apply(.addServer(web, RealServerConfig(endpoint: endpoint("198.51.100.31:80"), weight: 5,
                                                          method: .tunnel,
                                                          tunnel: TunnelParameters(type: .gue, port: 5555, checksum: true),
                                                          upperThreshold: 9, lowerThreshold: 3)))
        try config.apply(.setTimeouts(TimeoutSettings(tcp: 0, tcpFin: 30, udp: 0)))
        let file = RulesStateFile(path: path())
        try file.save(config)
        XCTAssertEqual(try file.load(), config)
        XCTAssertEqual(config.timeouts, TimeoutSettings(tcp: 900, tcpFin: 30, udp: 300))
    }

    func testTheFileIsPrivateAndNoTemporaryFileStays() throws {
        let file = RulesStateFile(path: path())
        try file.save(try RulesFile.load(rich))
        try file.save(DirectorConfig())
        var status = stat()
        XCTAssertEqual(stat(path(), &status), 0)
        XCTAssertEqual(status.st_mode & 0o7777, 0o600)
        XCTAssertEqual(status.st_mode & S_IFMT, S_IFREG)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["eth0.rules"])
    }

    func testAMissingDirectoryIsCreatedPrivate() throws {
        let nested = "\(directory)/var/lib/xdirector"
        let file = RulesStateFile(path: "\(nested)/eth1.rules")
        try file.save(try RulesFile.load(rich))
        var status = stat()
        XCTAssertEqual(stat(nested, &status), 0)
        XCTAssertEqual(status.st_mode & 0o7777, 0o700)
        XCTAssertEqual(try file.load(), try RulesFile.load(rich))
    }

    func testAFailedSaveThrowsAndLeavesTheOldFile() throws {
        // The path's directory is a regular file: the temporary file cannot be created.
        let notADirectory = path("plain")
        XCTAssertTrue(FileManager.default.createFile(atPath: notADirectory, contents: Data("old\n".utf8)))
        XCTAssertThrowsError(try RulesStateFile(path: "\(notADirectory)/eth0.rules").save(DirectorConfig())) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("\(notADirectory)/eth0.rules"), message)
            XCTAssertTrue(message.contains("Not a directory"), message)
        }
        XCTAssertEqual(contents(notADirectory), "old\n")

        // The rename fails (a directory stands at the path): the old contents stay, the temporary file goes.
        let occupied = path("occupied.rules")
        XCTAssertEqual(mkdir(occupied, 0o755), 0)
        XCTAssertEqual(mkdir(occupied + "/keep", 0o755), 0)
        XCTAssertThrowsError(try RulesStateFile(path: occupied).save(DirectorConfig())) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains(occupied), message)
            XCTAssertTrue(message.contains("cannot rename"), message)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(),
                       ["occupied.rules", "plain"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: occupied), ["keep"])
    }

    func testAFailedSaveKeepsTheSavedConfiguration() throws {
        let file = RulesStateFile(path: path())
        let config = try RulesFile.load(rich)
        try file.save(config)
        // A read-only directory refuses the temporary file (root ignores the mode: then the save succeeds).
        XCTAssertEqual(chmod(directory, 0o500), 0)
        defer { chmod(directory, 0o755) }
        do {
            try file.save(DirectorConfig())
            XCTAssertEqual(geteuid(), 0, "a save into a read-only directory succeeded")
        } catch {
            XCTAssertTrue("\(error)".contains("Permission denied"), "\(error)")
            XCTAssertEqual(try file.load(), config)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["eth0.rules"])
        }
    }

    func testLoadOfAMissingFileIsNil() throws {
        XCTAssertNil(try RulesStateFile(path: path("absent.rules")).load())
        XCTAssertNil(try RulesStateFile(path: path("absent/eth0.rules")).load())
    }

    func testLoadOfABadFileNamesTheLine() throws {
        let bad = path("bad.rules")
        let text = RulesStateFile.header + "\n-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 198.51.100.11 -w lots\n"
        XCTAssertTrue(FileManager.default.createFile(atPath: bad, contents: Data(text.utf8)))
        XCTAssertThrowsError(try RulesStateFile(path: bad).load()) { error in
            guard let error = error as? RulesFileError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.source, bad)
            XCTAssertEqual(error.line, 3)
            XCTAssertEqual(error.reason, .invalidWeight("lots"))
            XCTAssertTrue(error.description.hasPrefix("\(bad):3: "), error.description)
        }
        XCTAssertTrue(FileManager.default.createFile(atPath: bad, contents: Data([0x2D, 0x41, 0xFF, 0x0A])))
        XCTAssertThrowsError(try RulesStateFile(path: bad).load()) { error in
            XCTAssertTrue("\(error)".contains(bad), "\(error)")
        }
    }

    func testDefaultPath() {
        XCTAssertEqual(RulesStateFile.defaultPath(instance: "eth0"), "/var/lib/xdirector/eth0.rules")
        XCTAssertEqual(RulesStateFile(path: "/tmp/x.rules").path, "/tmp/x.rules")
    }
}
