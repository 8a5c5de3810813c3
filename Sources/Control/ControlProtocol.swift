import Packet
import Dataplane
import Foundation

// The control socket's protocol: one JSON request per connection, written whole and the write side shut;
// one JSON response, then the daemon closes. Small and synchronous: the CLI is its only client.

/// What the CLI asks the running director.
public struct ControlRequest: Codable, Sendable, Equatable {
    /// "ipvsadm", "statistics" or "pin".
    public var command: String
    public var arguments: [String]
    /// Standard input the command reads (`ipvsadm -R`).
    public var input: String?

    public init(command: String, arguments: [String] = [], input: String? = nil) {
        self.command = command
        self.arguments = arguments
        self.input = input
    }
}

/// The director's answer: what to print on standard output and standard error, and the exit status.
public struct ControlResponse: Codable, Sendable, Equatable {
    public var status: Int32
    public var output: String
    public var error: String

    public init(status: Int32 = 0, output: String = "", error: String = "") {
        self.status = status
        self.output = output
        self.error = error
    }

    public static func failure(_ message: String, status: Int32 = 1) -> ControlResponse {
        ControlResponse(status: status, error: message.hasSuffix("\n") ? message : message + "\n")
    }
}

extension DirectorStatistics {
    /// The reading as the control socket carries it: JSON of the statistics types themselves.
    public func encoded() throws -> String {
        String(decoding: try JSONEncoder().encode(self), as: UTF8.self)
    }

    public init(encoded text: String) throws {
        self = try JSONDecoder().decode(DirectorStatistics.self, from: Data(text.utf8))
        // Counters a newer daemon has and this CLI does not know are left out; missing ones read 0.
        let known = WorkerCounter.allCases.count
        for index in workers.indices {
            let counters = workers[index].counters.prefix(known)
            workers[index].counters = Array(counters) + Array(repeating: 0, count: known - counters.count)
        }
    }
}
