import Control
import Packet
import XCTest

final class EndpointTests: XCTestCase {
    func testParsesAndPrintsIPv4() throws {
        let endpoint = try L4Endpoint(parsing: "192.0.2.10:80")
        XCTAssertEqual(endpoint, L4Endpoint(address: .v4(0xC000_020A), port: 80))
        XCTAssertEqual(endpoint.description, "192.0.2.10:80")
        XCTAssertEqual(L4Endpoint("198.51.100.1:65535")?.port, 65535)
        XCTAssertEqual(L4Endpoint("198.51.100.1:1")?.port, 1)
    }

    func testParsesAndPrintsIPv6InBrackets() throws {
        let endpoint = try L4Endpoint(parsing: "[2001:db8::1]:443")
        XCTAssertEqual(endpoint.address, IPAddress("2001:db8::1"))
        XCTAssertEqual(endpoint.port, 443)
        XCTAssertEqual(endpoint.description, "[2001:db8::1]:443")
        // Printed in RFC 5952 form whatever the input's spelling.
        XCTAssertEqual(L4Endpoint("[2001:0DB8:0:0:0:0:0:10]:80")?.description, "[2001:db8::10]:80")
        XCTAssertEqual(L4Endpoint("[::ffff:192.0.2.1]:80")?.description, "[::ffff:192.0.2.1]:80")
    }

    func testLosslessStringRoundTrip() {
        for text in ["10.0.0.1:8080", "[::1]:53", "[2001:db8:1:2:3:4:5:6]:1", "255.255.255.255:65535"] {
            XCTAssertEqual(L4Endpoint(text)?.description, text)
        }
    }

    func testAddressWithOptionalPort() throws {
        XCTAssertTrue(try L4Endpoint.parseAddress("192.0.2.1") == (IPAddress("192.0.2.1")!, nil))
        XCTAssertTrue(try L4Endpoint.parseAddress("192.0.2.1:8080") == (IPAddress("192.0.2.1")!, 8080))
        XCTAssertTrue(try L4Endpoint.parseAddress("[2001:db8::2]") == (IPAddress("2001:db8::2")!, nil))
        XCTAssertTrue(try L4Endpoint.parseAddress("[2001:db8::2]:80") == (IPAddress("2001:db8::2")!, 80))
        // A bare IPv6 address cannot carry a port: the last group is part of the address.
        XCTAssertTrue(try L4Endpoint.parseAddress("2001:db8::1:80") == (IPAddress("2001:db8::1:80")!, nil))
        XCTAssertTrue(try L4Endpoint.parseAddress("192.0.2.1:080") == (IPAddress("192.0.2.1")!, 80))
    }

    private func assertError(_ text: String, _ expected: EndpointError, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        do {
            let endpoint = try L4Endpoint(parsing: text)
            XCTFail("parsed '\(text)' as \(endpoint)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
            XCTAssertEqual(error.description, message, file: file, line: line)
        }
        XCTAssertNil(L4Endpoint(text), file: file, line: line)
    }

    func testErrors() {
        assertError("", .empty, "empty address")
        assertError("1.2.3.4:99999", .portOutOfRange("99999"), "port 99999 is out of range (1-65535)")
        assertError("1.2.3.4:123456789012", .portOutOfRange("123456789012"),
                    "port 123456789012 is out of range (1-65535)")
        assertError("1.2.3.4:65536", .portOutOfRange("65536"), "port 65536 is out of range (1-65535)")
        assertError("1.2.3.4:0", .zeroPort, "port 0 is not allowed")
        assertError("1.2.3.4:00", .zeroPort, "port 0 is not allowed")
        assertError("1.2.3.4:", .missingPort, "no port after ':'")
        assertError(":80", .missingAddress, "no address before ':'")
        assertError("1.2.3.4:http", .portName("http"),
                    "port 'http' is not a number (service names are not supported yet)")
        assertError("1.2.3.4:-1", .invalidPort("-1"), "'-1' is not a port number")
        assertError("1.2.3.4:8 0", .invalidPort("8 0"), "'8 0' is not a port number")
        assertError("1.2.3.4", .noPort(ipv6: false), "no port given")
        assertError("[::1]", .noPort(ipv6: true),
                    "no port given (write an IPv6 address with a port as [ADDRESS]:PORT)")
        assertError("2001:db8::1:80", .noPort(ipv6: true),
                    "no port given (write an IPv6 address with a port as [ADDRESS]:PORT)")
        assertError("[::1", .unclosedBracket, "missing ']' after the IPv6 address")
        assertError("[::1]80", .textAfterBracket("80"), "expected ':PORT' after ']', found '80'")
        assertError("[::1]:", .missingPort, "no port after ':'")
        assertError("[::1]:99999", .portOutOfRange("99999"), "port 99999 is out of range (1-65535)")
        assertError("[1.2.3.4]:80", .notIPv6InBrackets("1.2.3.4"), "'1.2.3.4' in brackets is not an IPv6 address")
        assertError("[zz::1]:80", .notIPv6InBrackets("zz::1"), "'zz::1' in brackets is not an IPv6 address")
        assertError("[]:80", .notIPv6InBrackets(""), "'' in brackets is not an IPv6 address")
        assertError("2001:db8::zz", .invalidIPv6("2001:db8::zz"),
                    "'2001:db8::zz' is not an IPv6 address (write an IPv6 address with a port as [ADDRESS]:PORT)")
        assertError("1.2.3.256:80", .invalidIPv4("1.2.3.256"), "'1.2.3.256' is not an IPv4 address")
        assertError("1.2.3:80", .invalidIPv4("1.2.3"), "'1.2.3' is not an IPv4 address")
        assertError("010.0.0.1:80", .invalidIPv4("010.0.0.1"), "'010.0.0.1' is not an IPv4 address")
        assertError("host:80", .hostName("host"),
                    "'host' is not a numeric address (host names are not supported yet)")
        assertError("www.example.com:80", .hostName("www.example.com"),
                    "'www.example.com' is not a numeric address (host names are not supported yet)")
        assertError("1.2.3.4/24:80", .invalidAddress("1.2.3.4/24"), "'1.2.3.4/24' is not an IP address")
    }
}

