import Packet
import XCTest
import XDirectorTestSupport

/// Parses `frame` from a buffer of exactly its length.
func parse(_ frame: [UInt8]) -> (ParseStatus, ParsedFrame) {
    var parsed = ParsedFrame()
    let (status, _) = withExactBuffer(frame) { pointer, count in
        FrameParser.parse(UnsafeRawPointer(pointer), length: count, into: &parsed)
    }
    return (status, parsed)
}

/// Fails the test with the fixture's report when it does not hold.
func assertFixture<V>(_ fixture: FrameFixture<V>, file: StaticString = #filePath, line: UInt = #line,
                      _ body: (UnsafeMutableRawPointer, Int) -> V) {
    if let report = fixture.check(body) {
        XCTFail(report, file: file, line: line)
    }
}

/// `builder` after `edit`, for fixtures that differ from a base packet in a field or two.
func with(_ builder: PacketBuilder, _ edit: (inout PacketBuilder) -> Void) -> PacketBuilder {
    var builder = builder
    edit(&builder)
    return builder
}
