import ArgumentParser
import Foundation
import Topology

/// The main job on an embedded default: a lab in network namespaces, the director on it, real HTTP
/// through the VIPs, and everything removed afterwards, also on Ctrl-C.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Build a namespace lab, forward HTTP through the VIPs by direct routing, and show who answered."
    )

    @Option(help: "HTTP requests to send to each VIP.")
    var requests: Int = 12

    @Option(help: "Receive queues on the director's interface.")
    var queues: Int = 2

    @Flag(help: "Three directors behind an ECMP router running BIRD: kill one, and watch every connection carry on.")
    var ha = false

    func validate() throws {
        guard (1...1000).contains(requests) else { throw ValidationError("--requests must be 1...1000") }
        guard (1...16).contains(queues) else { throw ValidationError("--queues must be 1...16") }
    }

    func run() throws {
        guard getuid() == 0 else { throw failure("the demo builds network namespaces and attaches XDP: run it as root") }
        for tool in ["ip", "ethtool", "curl", "sysctl"] where (try? Topology.run(["which", tool])) == nil {
            throw failure("\(tool) is missing: run tools/setup.sh first")
        }
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        if ha { return try HADemo(executable: executable).run() }

        print("Building the lab: a client, a director (\(queues) queues) and 2 real servers in network namespaces…")
        let lab = try Topology(realCount: 2, directorQueues: queues)
        let interrupt = Self.onInterrupt { lab.teardown() }
        defer {
            lab.teardown()
            print("Removed the lab's namespaces (\(lab.prefix)-*).")
            withExtendedLifetime(interrupt) {}
        }

        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [executable, "backend-http", "--name", "rs\(index + 1)", "--port", "80"])
        }
        let rules = """
            # Written by xdirector demo, in ipvsadm-save syntax.
            -A -t \(Topology.vip4):80 -s wrr
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g -w 2
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g -w 1
            -A -t [\(Topology.vip6)]:80 -s rr
            -a -t [\(Topology.vip6)]:80 -r [\(Topology.realAddress6(0))]:80 -g -w 1
            -a -t [\(Topology.vip6)]:80 -r [\(Topology.realAddress6(1))]:80 -g -w 1

            """
        let rulesPath = NSTemporaryDirectory() + "\(lab.prefix).rules"
        try rules.write(toFile: rulesPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: rulesPath) }
        print("Rules:\n" + rules.split(separator: "\n").dropFirst().map { "  " + $0 }.joined(separator: "\n"))

        let output = CollectedOutput()
        // The demo's running configuration is saved beside its rules, and removed with them.
        let statePath = NSTemporaryDirectory() + "\(lab.prefix).state.rules"
        defer { try? FileManager.default.removeItem(atPath: statePath) }
        let director = try lab.spawn(lab.director, [executable, "run", "--interface", lab.directorInterface, "--rules", rulesPath,
                                                    "--state-file", statePath],
                                     output: output.pipe)
        guard output.waitFor("ready", seconds: 20) else {
            director.terminate()
            Topology.wait(director, seconds: 3)
            throw failure("the director did not start:\n\(output.text)")
        }
        print("Director: \(output.text.split(separator: "\n").last(where: { $0.contains("ready") }) ?? "")")

        var tally: [String: [String: Int]] = [:]
        for (label, url) in [("IPv4", "http://\(Topology.vip4)/"), ("IPv6", "http://[\(Topology.vip6)]/")] {
            for number in 1...requests {
                let answer = (try? lab.exec(lab.client, ["curl", "-sg", "-m", "5", url], check: false))?
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                let server = answer.flatMap { $0.isEmpty ? nil : $0 } ?? "(no answer)"
                tally[label, default: [:]][server, default: 0] += 1
                print("GET \(url) #\(number) → answered by \(server)")
            }
        }
        director.terminate()
        Topology.wait(director, seconds: 10)
        print("\nAnswers per real server (IPv4 VIP is wrr 2:1, IPv6 VIP is rr):")
        for label in ["IPv4", "IPv6"] {
            print("  \(label): " + (tally[label] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        print("\nDirector's per-queue counters:")
        print(output.text.split(separator: "\n").filter { !$0.contains("ready") && !$0.contains(" info ") && !$0.contains("warning") }
            .map { "  " + $0 }.joined(separator: "\n"))
    }

    /// Runs `cleanup` and exits on SIGINT/SIGTERM. Keep the returned sources alive.
    static func onInterrupt(_ cleanup: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                print("\nInterrupted: removing the lab…")
                cleanup()
                Glibc.exit(130)
            }
            source.resume()
            return source
        }
    }
}
