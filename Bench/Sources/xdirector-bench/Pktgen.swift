import Foundation

/// The kernel's packet generator, driven through /proc/net/pktgen: UDP only, one device on the first
/// kpktgend thread, flows spread over source addresses and ports. Used when the kernel has it.
struct PktgenGenerator {
    static let root = "/proc/net/pktgen"
    static var available: Bool { FileManager.default.fileExists(atPath: "\(root)/pgctrl") }

    let interface: String
    let spec: TrafficSpec
    let statsPath: String

    private func write(_ file: String, _ command: String) throws {
        guard let handle = FileHandle(forWritingAtPath: "\(Self.root)/\(file)") else { throw BenchError("pktgen: cannot open \(file)") }
        defer { try? handle.close() }
        try handle.write(contentsOf: Data((command + "\n").utf8))
    }

    private func sent() -> UInt64 {
        guard let text = try? String(contentsOfFile: "\(Self.root)/\(interface)", encoding: .utf8),
              let range = text.range(of: "pkts-sofar: ") else { return 0 }
        return UInt64(text[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }

    func run() throws {
        let mac = { (bytes: [UInt8]) in bytes.map { String(format: "%02x", $0) }.joined(separator: ":") }
        let d = spec.destination
        let flows = max(spec.flows, 1)
        try write("kpktgend_0", "rem_device_all")
        try write("kpktgend_0", "add_device \(interface)")
        for command in [
            "count 0", "clone_skb 0", "burst 32", "pkt_size \(max(spec.wireSize - 4, 60))",
            spec.rate > 0 ? "ratep \(spec.rate)" : "delay 0",
            "dst_mac \(mac(spec.destinationMAC))", "src_mac \(mac(spec.sourceMAC))",
            "dst_min \(d >> 24).\((d >> 16) & 255).\((d >> 8) & 255).\(d & 255)",
            "dst_max \(d >> 24).\((d >> 16) & 255).\((d >> 8) & 255).\(d & 255)",
            "src_min 10.0.0.0", "src_max 10.0.\(min((flows - 1) / 16384, 255)).255",
            "udp_src_min 1024", "udp_src_max \(1024 + min(flows, 16384) - 1)",
            "udp_dst_min \(spec.destinationPort)", "udp_dst_max \(spec.destinationPort)",
            "flows \(flows)", "flowlen 1", "flag UDPCSUM",
        ] { try write(interface, command) }
        // "start" blocks until "stop": run it on its own thread, and stop it when the time is up.
        let started = Thread { try? self.write("pgctrl", "start") }
        started.start()
        let end = Date().addingTimeInterval(spec.seconds)
        while Date() < end {
            StatsFile.write(statsPath, [sent(), sent()])
            usleep(20_000)
        }
        try write("pgctrl", "stop")
        StatsFile.write(statsPath, [sent(), sent()])
        try? write("kpktgend_0", "rem_device_all")
    }
}
