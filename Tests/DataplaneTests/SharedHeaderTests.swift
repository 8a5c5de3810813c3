import CXDirectorShared
import Dataplane
import Packet
import XCTest

/// Every struct and constant the XDP program and Swift share, checked from the Swift side (shared.c asserts
/// the same sizes and offsets at compile time), and the map formats written by `XDPMapFormat`.
final class SharedHeaderTests: XCTestCase {
    func testEveryStructsSizeAndOffsets() {
        XCTAssertEqual(MemoryLayout<xd_service_key>.size, 20)
        XCTAssertEqual(MemoryLayout<xd_service_key>.offset(of: \.port), 16)
        XCTAssertEqual(MemoryLayout<xd_service_key>.offset(of: \.proto), 18)
        XCTAssertEqual(MemoryLayout<xd_service_key>.offset(of: \.family), 19)
        XCTAssertEqual(MemoryLayout<xd_service_value>.size, 8)
        XCTAssertEqual(MemoryLayout<xd_service_value>.offset(of: \.flags), 4)
        XCTAssertEqual(MemoryLayout<xd_local_addr_key>.size, 20)
        XCTAssertEqual(MemoryLayout<xd_local_addr_key>.offset(of: \.family), 16)
        XCTAssertEqual(MemoryLayout<xd_fragment_key>.size, 20)
        XCTAssertEqual(MemoryLayout<xd_fragment_key>.offset(of: \.proto), 16)
        XCTAssertEqual(MemoryLayout<xd_fragment_key>.offset(of: \.role), 18)
        XCTAssertEqual(MemoryLayout<xd_real_key>.size, 40)
        XCTAssertEqual(MemoryLayout<xd_real_key>.offset(of: \.addr), 20)
        XCTAssertEqual(MemoryLayout<xd_real_key>.offset(of: \.port), 36)
        XCTAssertEqual(MemoryLayout<xd_real_key>.offset(of: \.family), 38)
        XCTAssertEqual(MemoryLayout<xd_real_value>.size, 16)
        XCTAssertEqual(MemoryLayout<xd_real_value>.offset(of: \.method), 4)
        XCTAssertEqual(MemoryLayout<xd_real_value>.offset(of: \.tunnel), 5)
        XCTAssertEqual(MemoryLayout<xd_real_value>.offset(of: \.flags), 6)
        XCTAssertEqual(MemoryLayout<xd_real_value>.offset(of: \.upper_threshold), 8)
        XCTAssertEqual(MemoryLayout<xd_real_value>.offset(of: \.lower_threshold), 12)
        XCTAssertEqual(MemoryLayout<xd_director>.size, 24)
        XCTAssertEqual(MemoryLayout<xd_director>.offset(of: \.start_time), 8)
        XCTAssertEqual(MemoryLayout<xd_director>.offset(of: \.grace_ns), 16)
        XCTAssertEqual(MemoryLayout<xd_heartbeat>.size, 64)
    }

    func testForwardingMethodsAndTunnelTypesAreTheHeadersConstants() {
        XCTAssertEqual(ForwardingMethod.allCases.map { Int32($0.rawValue) },
                       [XD_METHOD_DR, XD_METHOD_TUNNEL, XD_METHOD_MASQ, XD_METHOD_FULLNAT])
        XCTAssertEqual(TunnelType.allCases.map { Int32($0.rawValue) }, [XD_TUNNEL_IPIP, XD_TUNNEL_GUE, XD_TUNNEL_GRE])
    }

    func testCounterNamesComeFromTheHeader() {
        XCTAssertEqual(XDPProgram.counterNames.count, Int(XD_XDP_COUNTER_COUNT.rawValue))
        XCTAssertEqual(XDPProgram.counterNames, ["rx", "redirected", "pass_not_ip", "pass_not_service", "pass_other_l4",
                                                 "pass_fragment", "pass_no_socket", "pass_malformed", "redirected_reply",
                                                 "redirected_icmp", "held_no_worker", "drop_reply_no_worker",
                                                 "redirected_fragment"])
        XCTAssertEqual(XDPProgram.counterNames[Int(XD_XDP_PASS_NOT_SERVICE.rawValue)], "pass_not_service")
        XCTAssertNil(xd_xdp_counter_name(UInt32(XD_XDP_COUNTER_COUNT.rawValue)))
    }

    func testMapFormatsEncodeByteOrderAndFamilyOnce() {
        let service = ServiceKey(proto: .udp, address: IPAddress("192.0.2.10")!, port: 0x1234)
        let key = XDPMapFormat.serviceKey(service)
        withUnsafeBytes(of: key) { bytes in
            XCTAssertEqual(Array(bytes), [192, 0, 2, 10] + Array(repeating: 0, count: 12) + [0x12, 0x34, 17, UInt8(XD_FAMILY_IPV4)])
        }
        let real = XDPMapFormat.realKey(service, L4Endpoint(address: IPAddress("2001:db8::1")!, port: 80))
        withUnsafeBytes(of: real) { bytes in
            XCTAssertEqual(Array(bytes[20..<36]), IPAddress("2001:db8::1")!.bytes)
            XCTAssertEqual(Array(bytes[36..<40]), [0, 80, UInt8(XD_FAMILY_IPV6), 0])
        }
        let value = XDPMapFormat.realValue(RealServerEntry(weight: -1, method: .tunnel, tunnel: .gre, draining: true,
                                                           upperThreshold: 10, lowerThreshold: 5))
        XCTAssertEqual(value.weight, 0)
        XCTAssertEqual(Int32(value.method), XD_METHOD_TUNNEL)
        XCTAssertEqual(Int32(value.tunnel), XD_TUNNEL_GRE)
        XCTAssertEqual(Int32(value.flags), XD_REAL_F_DRAINING)
        XCTAssertEqual(XDPMapFormat.realValue(RealServerEntry(weight: 1, method: .directRouting, tunnel: .gue)).tunnel, 0)
        let local = XDPMapFormat.localAddressKey(IPAddress("198.51.100.2")!)
        XCTAssertEqual(local.family, UInt8(XD_FAMILY_IPV4))
    }
}
