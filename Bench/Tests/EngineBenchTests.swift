import Dataplane
import XCTest
import XDirectorTestSupport
@testable import xdirector_bench

/// The engine benchmark measures real forwarding: every frame it feeds comes out rewritten for its real
/// server, and the C baseline's DR rewrite is byte for byte the engine's.
final class EngineBenchTests: XCTestCase {
    private func frames(_ side: (turn: (UInt32) -> UInt32, rings: MemoryRings), method: EngineMethod, newConnections: Bool,
                        described: Bool = true) -> (EngineMeasurement, [[UInt8]]) {
        var out: [[UInt8]] = []
        let measured = EngineRun.run(workload: EngineWorkload(method: method, described: described), flows: 100, packets: 640,
                                     newConnections: newConnections, capacity: 65536, turn: side.turn, rings: side.rings) {
            out.append(Array(UnsafeRawBufferPointer(start: $0, count: $1)))
        }
        return (measured, out)
    }

    func testDirectRoutingFramesAreForwardedAndTheCBaselineRewritesThemAlike() {
        for (newConnections, described) in [(false, true), (true, true), (false, false)] {
            let swift = SwiftEngineSide(workload: EngineWorkload(method: .dr, described: described), capacity: 65536)
            let (measured, swiftFrames) = frames((swift.engineTurn, swift.rings), method: .dr, newConnections: newConnections,
                                                 described: described)
            // With the program's description every frame skips the parse; without, none does.
            XCTAssertEqual(swift.counters[.framesDescribed], described ? swift.counters[.rxPackets] : 0)
            let c = BaselineSide(capacity: 65536)
            let (baseline, cFrames) = frames((c.baselineTurn, c.rings), method: .dr, newConnections: newConnections,
                                             described: described)
            XCTAssertEqual(measured.packets, 640)
            XCTAssertEqual(measured.transmitted, 640, "every frame forwarded")
            XCTAssertEqual(baseline.transmitted, 640)
            XCTAssertEqual(swiftFrames, cFrames, "the C baseline's rewrite is the engine's, byte for byte")
            for (index, frame) in swiftFrames.enumerated() {
                // Flows are opened in order and the 8 servers of weight 1 taken in turn: flow i goes to server i % 8.
                let flow = newConnections ? index : index % 100
                XCTAssertEqual(Array(frame[0..<6]), EngineWorkload.serverMAC(flow % 8).bytes, "packet \(index)")
                XCTAssertEqual(Array(frame[6..<12]), EngineWorkload.interfaceMAC.bytes)
                XCTAssertEqual(frame[22], 63, "TTL decremented")
                XCTAssertEqual(ReferenceChecksum.onesComplementSum(Array(frame[14..<34])), 0xFFFF, "IPv4 header checksum")
            }
        }
    }

    func testTranslatedFramesGoToTheRealServers() {
        for method in [EngineMethod.nat, .fullnat, .tun] {
            let swift = SwiftEngineSide(workload: EngineWorkload(method: method), capacity: 65536)
            let (measured, out) = frames((swift.engineTurn, swift.rings), method: method, newConnections: false)
            XCTAssertEqual(measured.transmitted, 640, "\(method)")
            for frame in out {
                // NAT and FULLNAT rewrite the destination to the RIP; a tunnel's outer header names it.
                XCTAssertEqual(frame[30], 10, "\(method)")
                XCTAssertEqual(frame[31], 1, "\(method): a real server, 10.1.0.x")
                XCTAssertEqual(ReferenceChecksum.onesComplementSum(Array(frame[14..<34])), 0xFFFF, "\(method): IPv4 header checksum")
            }
        }
    }
}
