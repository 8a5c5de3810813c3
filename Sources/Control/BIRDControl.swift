import Foundation
import Glibc

/// BIRD's control socket (what `birdc` talks to), for the one command the director needs: `configure`,
/// after it rewrote the file of routes it announces.
///
/// The protocol is lines of text. BIRD greets with `0001 BIRD 2.0.12 ready.`; each reply line starts with a
/// four-digit code followed by `-` when more lines follow, or by a space on the last line; a line starting
/// with a space continues the previous one. Codes 0xxx mean success, 8xxx run-time and 9xxx parse-time errors.
public struct BIRDControl: Sendable {
    public let socketPath: String
    /// Seconds to wait for BIRD's answer.
    public var timeout = 5

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// One reply line: its code (nil on a continuation line) and its text.
    public struct Line: Equatable, Sendable {
        public var code: Int?
        public var text: String
    }

    /// Asks BIRD to reread its configuration (and so the include file). Succeeds when BIRD reconfigured or
    /// queued the reconfiguration; throws with BIRD's own words otherwise (e.g. a syntax error in a file).
    public func configure() throws {
        let reply = try run("configure")
        guard let last = reply.last(where: { $0.code != nil }), let code = last.code else {
            throw ControlError("BIRD at \(socketPath) gave no answer to configure")
        }
        if code >= 8000 {
            let text = reply.map(\.text).joined(separator: " ")
            throw ControlError("BIRD at \(socketPath) refused to reconfigure: \(text)")
        }
    }

    /// Sends `command` and returns BIRD's reply lines (the greeting excluded).
    public func run(_ command: String) throws -> [Line] {
        let fd = try ControlClient.connect(path: socketPath)
        defer { close(fd) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var reader = LineReader(fd: fd)
        let greeting = try Self.reply(&reader, socketPath)
        guard greeting.last?.code == 1 else {
            throw ControlError("\(socketPath) is not BIRD's control socket (greeting: \(greeting.map(\.text)))")
        }
        guard ControlClient.writeAll(fd, Data((command + "\n").utf8)) else {
            throw ControlError("cannot send to BIRD at \(socketPath): \(String(cString: strerror(errno)))")
        }
        return try Self.reply(&reader, socketPath)
    }

    /// Reads lines up to and including the last one of a reply (a code followed by a space).
    static func reply(_ reader: inout LineReader, _ path: String) throws -> [Line] {
        var lines: [Line] = []
        while true {
            guard let text = reader.next() else {
                throw ControlError("BIRD at \(path) closed the connection or did not answer in time")
            }
            let line = parse(text)
            lines.append(line)
            if line.code != nil, text.count > 4, text[text.index(text.startIndex, offsetBy: 4)] == " " { return lines }
        }
    }

    /// `0003 Reconfigured` → (3, "Reconfigured"); `0002-Reading…` → (2, "Reading…"); ` more` → (nil, "more").
    static func parse(_ text: String) -> Line {
        let digits = text.prefix(4)
        guard digits.count == 4, digits.allSatisfy(\.isASCII), let code = Int(digits) else {
            return Line(code: nil, text: String(text.drop { $0 == " " }))
        }
        return Line(code: code, text: String(text.dropFirst(5)))
    }

    /// Lines from a socket, `\n`-terminated.
    struct LineReader {
        let fd: Int32
        var buffer: [UInt8] = []

        mutating func next() -> String? {
            while true {
                if let end = buffer.firstIndex(of: 10) {
                    let line = String(decoding: buffer[..<end], as: UTF8.self)
                    buffer.removeSubrange(...end)
                    return line
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return nil }
                buffer += chunk[0..<count]
            }
        }
    }
}
