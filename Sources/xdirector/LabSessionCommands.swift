import ArgumentParser
import Foundation
import Packet

/// A real server for labs that keeps connections open: answers every line a client sends on TCP with its
/// own name, until the client closes.
struct BackendSessionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backend-session",
        abstract: "Answer each line of long-lived TCP connections with this server's name (for labs).",
        shouldDisplay: false
    )

    @Option(help: "Name returned for each line.")
    var name: String

    @Option(help: "TCP port to listen on, IPv4 and IPv6.")
    var port: UInt16

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let listener = try LabSocket.tcpListener(port: port)
        print("backend-session \(name): listening on port \(port)")
        fflush(nil)
        let answer = Array((name + "\n").utf8)
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 { continue }
            Thread.detachNewThread {
                defer { close(connection) }
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let count = read(connection, &buffer, buffer.count)
                    if count <= 0 { return }
                    // One answer per line received.
                    for _ in 0..<buffer[0..<count].filter({ $0 == 10 }).count {
                        guard write(connection, answer, answer.count) == answer.count else { return }
                    }
                }
            }
        }
    }
}

/// Keeps traffic flowing through a service while the director is changed: `--connections` TCP connections
/// (to `backend-session`) and `--flows` UDP flows (to `backend-udp`), each asked in turn every `--interval-ms`
/// for `--seconds`, one question at a time with a deadline (`--answer-timeout-ms`). Prints one JSON line:
/// questions, answers, the longest wait for an answer, the server of each connection and flow, and how many
/// changed server, broke or were reset.
struct SessionProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session-probe",
        abstract: "Keep TCP connections and UDP flows busy through a service and report losses (for labs).",
        shouldDisplay: false
    )

    @Option(help: "Service address.")
    var address: String

    @Option(name: .customLong("tcp-port"), help: "TCP service port (backend-session); 0: none.")
    var tcpPort: UInt16 = 0

    @Option(name: .customLong("udp-port"), help: "UDP service port (backend-udp); 0: none.")
    var udpPort: UInt16 = 0

    @Option(help: "TCP connections to hold open.")
    var connections: Int = 4

    @Option(help: "UDP flows (one socket each) to keep busy.")
    var flows: Int = 4

    @Option(help: "How long to run.")
    var seconds: Double = 5

    @Option(name: .customLong("interval-ms"), help: "Pause between rounds over all connections and flows.")
    var intervalMilliseconds: Int = 20

    @Option(name: .customLong("answer-timeout-ms"), help: "How long a question may wait for its answer; a TCP connection that waits longer is broken.")
    var answerTimeoutMilliseconds: Int = 1000

    struct Channel {
        var fd: Int32
        var tcp: Bool
        var server: String?
        var changed = 0
        var broken = false
        /// The connection was reset (ECONNRESET) rather than left unanswered.
        var reset = false
    }

    func run() throws {
        guard let target = IPAddress(address) else { throw failure("--address \(address): not an address") }
        signal(SIGPIPE, SIG_IGN)
        var channels: [Channel] = []
        if tcpPort != 0 {
            for _ in 0..<connections { channels.append(Channel(fd: try connectTCP(target, port: tcpPort), tcp: true)) }
        }
        if udpPort != 0 {
            for _ in 0..<flows {
                let fd = try LabSocket.udp(bound: nil, family: target.family, port: 0)
                try LabSocket.withAddress(target, port: udpPort) { address, length in
                    guard connect(fd, address, length) == 0 else { throw failure("connect: \(String(cString: strerror(errno)))") }
                }
                channels.append(Channel(fd: fd, tcp: false))
            }
        }
        for channel in channels {
            var timeout = timeval(tv_sec: answerTimeoutMilliseconds / 1000, tv_usec: (answerTimeoutMilliseconds % 1000) * 1000)
            setsockopt(channel.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        var questions = 0, answers = 0
        var longestWait = 0.0
        /// Questions answered after more than a second: when they were asked (ms from the start) and how long they waited.
        var slow: [[Int]] = []
        let started = Date()
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 2048)
        while Date() < deadline {
            for index in channels.indices where !channels[index].broken {
                let fd = channels[index].fd
                questions += 1
                let asked = Date()
                guard send(fd, "?\n", 2, 0) == 2 else {
                    channels[index].broken = true
                    channels[index].reset = errno == ECONNRESET || errno == EPIPE
                    continue
                }
                let answer: String?
                if channels[index].tcp {
                    var line = [UInt8]()
                    while !line.contains(10) {
                        let count = recv(fd, &buffer, buffer.count, 0)
                        if count < 0 && errno == ECONNRESET { channels[index].reset = true }
                        if count <= 0 { break }
                        line += buffer[0..<count]
                    }
                    answer = line.contains(10) ? String(decoding: line.prefix { $0 != 10 }, as: UTF8.self) : nil
                } else {
                    let count = recv(fd, &buffer, buffer.count, 0)
                    answer = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self)
                        .trimmingCharacters(in: .whitespacesAndNewlines) : nil
                }
                guard let answer else {
                    // A TCP connection whose answer did not come is broken; a UDP datagram is just lost.
                    if channels[index].tcp { channels[index].broken = true }
                    continue
                }
                answers += 1
                let waited = Date().timeIntervalSince(asked)
                longestWait = max(longestWait, waited)
                if waited > 1 { slow.append([Int(asked.timeIntervalSince(started) * 1000), Int(waited * 1000), index]) }
                if let server = channels[index].server, server != answer { channels[index].changed += 1 }
                channels[index].server = answer
            }
            usleep(useconds_t(max(intervalMilliseconds, 0) * 1000))
        }
        for channel in channels { close(channel.fd) }
        let report: [String: Any] = [
            "questions": questions, "answers": answers,
            "changed": channels.reduce(0) { $0 + $1.changed }, "broken": channels.filter(\.broken).count,
            "reset": channels.filter(\.reset).count, "longest_wait_ms": Int(longestWait * 1000), "slow": slow,
            "tcp_servers": channels.filter(\.tcp).map { $0.server ?? "(none)" },
            "udp_servers": channels.filter { !$0.tcp }.map { $0.server ?? "(none)" },
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        fflush(nil)
    }

    private func connectTCP(_ target: IPAddress, port: UInt16) throws -> Int32 {
        let fd = socket(target.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw failure("socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        try LabSocket.withAddress(target, port: port) { address, length in
            guard connect(fd, address, length) == 0 else {
                throw failure("connect to \(target) port \(port): \(String(cString: strerror(errno)))")
            }
        }
        return fd
    }
}
