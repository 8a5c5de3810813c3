import Control
import Packet
import XCTest

/// Rules for tunnelling, masquerading and full NAT, as ipvsadm (and DPVS for FULLNAT) write them.
final class ForwardingMethodOptionTests: XCTestCase {
    private let saved = """
        -A -t 192.0.2.10:80 -s rr
        -a -t 192.0.2.10:80 -r 198.51.100.11:80 -i -w 1
        -a -t 192.0.2.10:80 -r 198.51.100.12:80 -i --tun-type gue --tun-port 6080 --tun-csum -w 2
        -a -t 192.0.2.10:80 -r [2001:db8::11]:80 -i --tun-type gre -w 1
        -A -u 192.0.2.10:53 -s rr
        -a -u 192.0.2.10:53 -r 198.51.100.13:5353 -m -w 1
        -A -t [2001:db8::10]:443 -s rr
        -a -t [2001:db8::10]:443 -r [2001:db8::12]:8443 --fullnat -w 1
        -P -t [2001:db8::10]:443 -z 2001:db8::100
        -P -t [2001:db8::10]:443 -z 2001:db8::101

        """

    func testSavedRulesRoundTripByteForByte() throws {
        let config = try RulesFile.load(saved)
        XCTAssertEqual(RulesFile.save(config), saved)
        let service = try XCTUnwrap(config.services.first)
        XCTAssertEqual(service.reals.map(\.method), [.tunnel, .tunnel, .tunnel])
        XCTAssertEqual(service.reals[1].tunnel, TunnelParameters(type: .gue, port: 6080, checksum: true))
        XCTAssertEqual(service.reals[2].tunnel.type, .gre)
        XCTAssertEqual(config.services[1].reals[0].method, .masquerading)
        XCTAssertEqual(config.services[1].reals[0].endpoint.port, 5353, "NAT may change the port")
        XCTAssertEqual(config.services[2].reals[0].method, .fullNAT)
        XCTAssertEqual(config.services[2].localAddresses, [IPAddress("2001:db8::100")!, IPAddress("2001:db8::101")!])
    }

    private func refusal(_ line: String) -> String {
        do {
            _ = try IPVSCommand(arguments: IPVSCommand.words(of: line))
            return "accepted"
        } catch {
            return error.description
        }
    }

    func testTunnelOptionsAreCheckedAsIpvsadmDoes() {
        XCTAssertEqual(refusal("-a -t 192.0.2.10:80 -r 198.51.100.11 -g --tun-type gre"),
                       "--tun-type is only for tunnelled real servers (-i/--ipip)")
        XCTAssertEqual(refusal("-a -t 192.0.2.10:80 -r 198.51.100.11 -i --tun-type gue"), "--tun-type gue needs --tun-port")
        XCTAssertEqual(refusal("-a -t 192.0.2.10:80 -r 198.51.100.11 -i --tun-type gre --tun-port 5"),
                       "--tun-port is only for -i/--ipip with --tun-type gue")
        XCTAssertEqual(refusal("-a -t 192.0.2.10:80 -r 198.51.100.11 -i --tun-type vxlan"),
                       "unknown tunnel type 'vxlan' (ipip, gue or gre)")
        XCTAssertEqual(refusal("-a -t 192.0.2.10:80 -r 198.51.100.11 -i --tun-type gue --tun-port 0"),
                       "invalid tunnel port '0': expected an integer from 1 to 65535")
    }

    func testOnlyTunnellingMixesFamiliesAndOnlyTranslationChangesPorts() {
        XCTAssertEqual(refusal("-a -t 192.0.2.10:80 -r [2001:db8::11]:80 -i"), "accepted")
        XCTAssertTrue(refusal("-a -t 192.0.2.10:80 -r [2001:db8::11]:80 -m").contains("only tunnelling (-i) can mix"))
        XCTAssertTrue(refusal("-a -t 192.0.2.10:80 -r 198.51.100.11:8080 -i").contains("cannot change the port"))
        XCTAssertEqual(refusal("-a -t 192.0.2.10:80 -r 198.51.100.11:8080 --fullnat"), "accepted")
    }

    func testLocalAddressesAreAddedAndRemovedPerService() throws {
        var config = try RulesFile.load("-A -t 192.0.2.10:80 -s rr\n-P -t 192.0.2.10:80 -z 192.0.2.100\n")
        XCTAssertThrowsError(try config.apply(IPVSCommand(arguments: ["-P", "-t", "192.0.2.10:80", "-z", "192.0.2.100"]))) {
            XCTAssertEqual(($0 as? ConfigError)?.description, "Local address already exists")
        }
        XCTAssertEqual(refusal("-P -t 192.0.2.10:80 -z 2001:db8::1"),
                       "invalid local address '2001:db8::1': expected a numeric address of the service's family")
        XCTAssertEqual(refusal("-P -t 192.0.2.10:80"), "-P/--add-laddr needs -z/--laddr")
        XCTAssertEqual(refusal("-G -t 192.0.2.10:80"),
                       "-G/--get-laddr is not supported yet (listings need the control socket of a running director)")
        try config.apply(IPVSCommand(arguments: ["-Q", "-t", "192.0.2.10:80", "-z", "192.0.2.100"]))
        XCTAssertEqual(config.services[0].localAddresses, [])
        XCTAssertThrowsError(try config.apply(IPVSCommand(arguments: ["-Q", "-t", "192.0.2.10:80", "-z", "192.0.2.100"])))
    }
}
