import ArgumentParser
import Foundation

/// A tiny HTTP/1.0 server for real servers in labs (the demo and the tests): answers every request with
/// its own name, `GET /bytes/N` with N bytes, and `GET /slow/N` with N bytes paced at about 1.5 MB/s (a
/// transfer that stays open for a known time whatever the client does), closing the connection after each.
struct BackendHTTPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backend-http",
        abstract: "Serve HTTP that names the real server that answered (for labs).",
        shouldDisplay: false
    )

    @Option(help: "Name returned in each response.")
    var name: String

    @Option(help: "TCP port to listen on, IPv4 and IPv6.")
    var port: UInt16 = 80

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let listener = try LabSocket.tcpListener(port: port)
        print("backend-http \(name): listening on port \(port)")
        fflush(nil)
        let name = self.name
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 { continue }
            Thread.detachNewThread { Self.serve(connection, name: name) }
        }
    }

    private static func serve(_ connection: Int32, name: String) {
        defer { close(connection) }
        var request = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !request.containsHeaderEnd, request.count < 65536 {
            let count = read(connection, &buffer, buffer.count)
            if count <= 0 { return }
            request += buffer[0..<count]
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let path = line.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
        var size = name.utf8.count + 1
        var body: [UInt8] = Array((name + "\n").utf8)
        let slow = path.hasPrefix("/slow/")
        if path.hasPrefix("/bytes/") || slow, let count = Int(path.split(separator: "/").last ?? ""), count >= 0 {
            size = count
            body = Array(repeating: UInt8(ascii: "x"), count: 65536)
        }
        let header = "HTTP/1.0 200 OK\r\nContent-Length: \(size)\r\nX-Real-Server: \(name)\r\nConnection: close\r\n\r\n"
        guard writeAll(connection, Array(header.utf8)) else { return }
        var remaining = size
        while remaining > 0 {
            let chunk = min(remaining, body.count)
            guard writeAll(connection, Array(body[0..<chunk])) else { return }
            remaining -= chunk
            if slow { usleep(40_000) }
        }
        shutdown(connection, Int32(SHUT_WR))
        // Let the client close first, so TIME_WAIT stays on its side.
        while read(connection, &buffer, buffer.count) > 0 {}
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }
}

private extension [UInt8] {
    var containsHeaderEnd: Bool {
        count >= 4 && (0...(count - 4)).contains { self[$0] == 13 && self[$0 + 1] == 10 && self[$0 + 2] == 13 && self[$0 + 3] == 10 }
    }
}
