import Foundation
import Logging
import Packet

/// Which VIPs a director offers to the routers: the decision, apart from files and sockets.
public enum VIPAnnouncement {
    /// The VIPs to announce, as host prefixes (`203.0.113.10/32`, `2001:db8::10/128`), sorted: a VIP is
    /// announced while at least one of its services has a real server that can take new connections
    /// (`isAvailable`: weight above 0, resolved) and, with health checks, its quorum (`hasQuorum`: keepalived's
    /// quorum with hysteresis; a service that lost it is served by its sorry server at most). Every port of a
    /// VIP follows the route, so one healthy service is enough to draw its traffic.
    public static func prefixes(_ configuration: DirectorConfig, hasQuorum: (ServiceConfig) -> Bool = { _ in true },
                                isAvailable: (ServiceConfig, RealServerConfig) -> Bool) -> [String] {
        var addresses = Set<IPAddress>()
        for service in configuration.services where hasQuorum(service) {
            if service.reals.contains(where: { isAvailable(service, $0) }) { addresses.insert(service.endpoint.address) }
        }
        return addresses.map { "\($0)/\($0.family == .ipv4 ? 32 : 128)" }.sorted()
    }

    /// The file for bird.conf to include (at the top level): two static protocols, `<name>_4` and `<name>_6`
    /// (a static protocol has one channel, so one per family), holding one blackhole route per announced VIP.
    /// The operator's BGP protocols export them (`export where proto = "<name>_4";`); the director forwards the
    /// traffic, the route only draws it.
    public static func render(_ prefixes: [String], name: String) -> String {
        var text = "# Written by xdirector: the VIPs this director serves now. Do not edit.\n"
        for (family, suffix) in [("ipv4", "4"), ("ipv6", "6")] {
            text += "protocol static \(name)_\(suffix) {\n    \(family);\n"
            for prefix in prefixes where prefix.contains(":") == (family == "ipv6") {
                text += "    route \(prefix) blackhole;\n"
            }
            text += "}\n"
        }
        return text
    }

    /// A BIRD protocol name for a director instance: `xdirector_` and the instance with every character other
    /// than a letter or a digit made `_` (`eth0@blue` → `xdirector_eth0_blue`).
    public static func protocolName(instance: String) -> String {
        "xdirector_" + String(instance.map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
    }
}

/// Keeps BIRD's include file in step with the VIPs the director serves, and asks BIRD to reread it when
/// they change. Only the control thread calls it (and the route guard, in its own process).
public final class RouteAnnouncer {
    public let includePath: String
    public let bird: BIRDControl
    /// The protocols' name in the include file (`VIPAnnouncement.protocolName`).
    public let name: String
    private let logger: Logger
    /// What the file holds now; nil until the first write.
    public private(set) var announced: [String]?

    public init(includePath: String, bird: BIRDControl, name: String, logger: Logger) {
        self.includePath = includePath
        self.name = name
        self.bird = bird
        self.logger = logger
    }

    /// Announces exactly `prefixes` (an empty list withdraws everything). Writes and reconfigures only when
    /// the set changed; a failure is logged and retried at the next call.
    public func announce(_ prefixes: [String]) {
        guard prefixes != announced else { return }
        do {
            try AtomicFile.replace(includePath, with: Array(VIPAnnouncement.render(prefixes, name: name).utf8), mode: 0o644)
            try bird.configure()
            let previous = Set(announced ?? [])
            announced = prefixes
            for prefix in prefixes where !previous.contains(prefix) { logger.notice("announcing \(prefix) through BIRD") }
            for prefix in previous.subtracting(prefixes).sorted() { logger.notice("withdrew \(prefix) through BIRD") }
        } catch {
            logger.error("cannot update the announced VIPs (\(prefixes.joined(separator: ", "))): \(error)")
        }
    }
}
