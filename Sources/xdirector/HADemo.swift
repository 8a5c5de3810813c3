import Foundation
import Topology

/// `xdirector demo --ha`: three directors announce one VIP over BGP to a router running BIRD, which spreads
/// flows over them by ECMP; a client holds long-lived connections; one director is killed; every
/// connection carries on, on the same real server, through the others. Everything is removed afterwards.
struct HADemo {
    let executable: String
    let port: UInt16 = 7000
    let connections = 30

    func run() throws {
        for tool in ["bird", "birdc"] where (try? Topology.run(["which", tool])) == nil {
            throw failure("\(tool) is missing: run tools/setup.sh first")
        }
        print("Building the lab: a client, a router running BIRD (ECMP), three directors and three real servers…")
        let lab = try HATopology(realCount: 3)
        let interrupt = DemoCommand.onInterrupt { lab.teardown() }
        defer {
            lab.teardown()
            print("Removed the lab's namespaces (\(lab.prefix)-*).")
            withExtendedLifetime(interrupt) {}
        }
        try lab.startRealServers(executable: executable, port: port)
        let rules = """
            -A -t \(HATopology.vip):\(port) -s mh
            -a -t \(HATopology.vip):\(port) -r \(HATopology.realAddress(0)):\(port) -g
            -a -t \(HATopology.vip):\(port) -r \(HATopology.realAddress(1)):\(port) -g
            -a -t \(HATopology.vip):\(port) -r \(HATopology.realAddress(2)):\(port) -g
            """
        print("Rules on every director (Maglev: any director picks the same real server for a flow):\n"
              + rules.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        var directors: [Process] = []
        for _ in 0..<3 {
            let index = try lab.addDirector()
            let output = CollectedOutput()
            directors.append(try lab.startDirector(index, executable: executable, rules: rules, output: output.pipe))
            guard output.waitFor("ready", seconds: 30) else { throw failure("director \(index + 1) did not start:\n\(output.text)") }
            print("Director \(index + 1) (\(HATopology.directorAddress(index))): serving, announcing \(HATopology.vip) through BIRD")
        }
        guard lab.waitForNextHops(3, seconds: 20) else { throw failure("the router did not learn three routes: \(lab.nextHops())") }
        print("Router: \(HATopology.vip) via " + lab.nextHops().map(\.description).sorted().joined(separator: ", ") + " (ECMP, L4 hash)")

        let probeOutput = CollectedOutput()
        let probe = try lab.spawn(lab.client, [executable, "session-probe", "--address", "\(HATopology.vip)", "--tcp-port", "\(port)",
                                               "--connections", "\(connections)", "--flows", "0", "--seconds", "8",
                                               "--interval-ms", "50", "--answer-timeout-ms", "15000"], output: probeOutput.pipe)
        usleep(2_000_000)
        print("\nThe client holds \(connections) connections, each asking a line every 50 ms. Connections per director:")
        for index in 0..<3 { print("  director \(index + 1): \(try established(lab, index).count)") }

        print("\nkill -9 director 2…")
        kill(directors[1].processIdentifier, SIGKILL)
        let killed = Date()
        _ = lab.waitForNextHops(2, seconds: 5)
        print("Router: director 2's route withdrawn after \(Int(Date().timeIntervalSince(killed) * 1000)) ms (its route guard); "
              + "\(HATopology.vip) via " + lab.nextHops().map(\.description).sorted().joined(separator: ", "))
        usleep(2_000_000)
        print("Connections per surviving director (director 2's picked up mid-flow, on the same real server):")
        for index in [0, 2] { print("  director \(index + 1): \(try established(lab, index).count)") }

        Topology.wait(probe, seconds: 30)
        let line = probeOutput.text.split(separator: "\n").last { $0.hasPrefix("{") } ?? ""
        let summary = (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]) ?? [:]
        print("\nThe client's view: \(summary["questions"] ?? "?") questions, \(summary["answers"] ?? "?") answered, "
              + "\(summary["broken"] ?? "?") connections broken, \(summary["reset"] ?? "?") reset, "
              + "\(summary["changed"] ?? "?") changed real server; the longest wait \(summary["longest_wait_ms"] ?? "?") ms.")
        for director in directors where director.isRunning { director.terminate() }
        for director in directors { Topology.wait(director, seconds: 10) }
    }

    /// Director `index`'s established connections (`ipvsadm -Lcn`).
    private func established(_ lab: HATopology, _ index: Int) throws -> [Substring] {
        try Topology.run([executable, "ipvsadm", "--socket", lab.controlSocket(index), "-Lcn"])
            .split(separator: "\n").filter { $0.contains("ESTABLISHED") }
    }
}
