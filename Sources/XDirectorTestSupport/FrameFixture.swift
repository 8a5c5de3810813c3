import Foundation

/// One fixture case: a description, an input frame, the verdict the code under test must return and the
/// bytes the frame must hold afterwards (the input itself when the code must not change it).
public struct FrameFixture<Verdict: Equatable & Sendable>: Sendable {
    public var description: String
    public var input: [UInt8]
    public var expected: Verdict
    public var expectedOutput: [UInt8]

    public init(_ description: String, input: [UInt8], expected: Verdict, expectedOutput: [UInt8]? = nil) {
        self.description = description
        self.input = input
        self.expected = expected
        self.expectedOutput = expectedOutput ?? input
    }

    /// Copies the input into a buffer of exactly its length, runs `body` on it, and returns nil when the
    /// verdict and the resulting bytes are as expected, otherwise a report with all three frames in hex.
    /// When the environment variable `XDIRECTOR_FIXTURE_PCAP_DIR` names a directory, a failing case also
    /// writes input, expected and actual there as `<description>.pcap`.
    public func check(_ body: (UnsafeMutableRawPointer, Int) -> Verdict) -> String? {
        let (verdict, actual) = run(body)
        guard verdict != expected || actual != expectedOutput else { return nil }
        var report = "\(description): "
        if verdict != expected { report += "verdict \(verdict), expected \(expected)\n" }
        report += frameMismatch(input: input, expected: expectedOutput, actual: actual) ?? "output as expected\n"
        if let directory = ProcessInfo.processInfo.environment["XDIRECTOR_FIXTURE_PCAP_DIR"] {
            let name = description.map { $0.isLetter || $0.isNumber ? $0 : "_" }
            let path = directory + "/" + String(name) + ".pcap"
            if (try? Pcap.write(frames: [input, expectedOutput, actual], to: path)) != nil {
                report += "\nwritten to \(path) (input, expected, actual)"
            }
        }
        return report
    }

    /// Runs `body` on a copy of the input in a buffer of exactly its length; returns the verdict and the
    /// bytes afterwards.
    public func run(_ body: (UnsafeMutableRawPointer, Int) -> Verdict) -> (Verdict, [UInt8]) {
        withExactBuffer(input) { pointer, count in body(pointer, count) }
    }
}

/// Copies `bytes` into a freshly allocated buffer of exactly their length (so that a sanitizer catches any
/// read past the end), runs `body`, and returns its result with the buffer's bytes afterwards.
public func withExactBuffer<R>(_ bytes: [UInt8], _ body: (UnsafeMutableRawPointer, Int) -> R) -> (R, [UInt8]) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
    defer { buffer.deallocate() }
    buffer.copyBytes(from: bytes)
    let result = body(buffer.baseAddress!, bytes.count)
    return (result, Array(buffer.prefix(bytes.count)))
}
