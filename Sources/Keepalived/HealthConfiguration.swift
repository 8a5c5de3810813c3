import Control
import Packet

// What keepalived.conf says about health: per virtual server (a group counts once), its real servers with
// their checkers, quorum and sorry server. The services themselves become a `DirectorConfig`.

/// One checker of a real server, with keepalived's options resolved (checker, then real server, then
/// virtual server, then keepalived's default).
public struct CheckerDefinition: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// `TCP_CHECK`: a connection is accepted.
        case tcp
        /// `HTTP_GET` (`tls` false) or `SSL_GET`: every url answers as its `status_code`/`digest` say.
        case http(HTTPCheck)
        /// `MISC_CHECK`: a script's exit status.
        case misc(MiscCheck)
        /// `UDP_CHECK`: a datagram sent; with `require_reply`, a reply (of the given bytes and length).
        case udp(UDPCheck)
        /// `DNS_CHECK`: a query answered with NOERROR and at least one answer.
        case dns(DNSCheck)

        /// keepalived's name for it.
        public var name: String {
            switch self {
            case .tcp: return "TCP_CHECK"
            case .http(let check): return check.tls ? "SSL_GET" : "HTTP_GET"
            case .misc: return "MISC_CHECK"
            case .udp: return "UDP_CHECK"
            case .dns: return "DNS_CHECK"
            }
        }
    }

    public var kind: Kind
    /// `connect_ip`, `connect_port` (nil: the real server's).
    public var connectIP: IPAddress?
    public var connectPort: UInt16?
    /// `bindto`, `bind_port`: the checker's source.
    public var bindTo: IPAddress?
    public var bindPort: UInt16?
    /// Seconds: `connect_timeout` (default 5), `delay_before_retry`, `delay_loop` (default 60), `warmup`.
    public var connectTimeout: Double
    public var retry: Int
    public var delayBeforeRetry: Double
    public var delayLoop: Double
    public var warmup: Double
    /// `alpha`: the server counts as down until this checker first succeeds.
    public var alpha: Bool
    public var location: SourceLocation

    public init(kind: Kind, connectIP: IPAddress? = nil, connectPort: UInt16? = nil, bindTo: IPAddress? = nil,
                bindPort: UInt16? = nil, connectTimeout: Double = 5, retry: Int = 1, delayBeforeRetry: Double = 1,
                delayLoop: Double = 60, warmup: Double = 0, alpha: Bool = false,
                location: SourceLocation = SourceLocation(file: "-", line: 0)) {
        self.kind = kind
        self.connectIP = connectIP
        self.connectPort = connectPort
        self.bindTo = bindTo
        self.bindPort = bindPort
        self.connectTimeout = connectTimeout
        self.retry = retry
        self.delayBeforeRetry = delayBeforeRetry
        self.delayLoop = delayLoop
        self.warmup = warmup
        self.alpha = alpha
        self.location = location
    }

    /// Where the checker connects for a real server at `endpoint`.
    public func target(for endpoint: L4Endpoint) -> L4Endpoint {
        L4Endpoint(address: connectIP ?? endpoint.address, port: connectPort ?? endpoint.port)
    }
}

public struct HTTPCheck: Equatable, Sendable {
    public struct URL: Equatable, Sendable {
        public var path: String
        /// Accepted status codes; empty: 200–299.
        public var statusCodes: [ClosedRange<Int>]
        /// The MD5 of the body, lower-case hex.
        public var digest: String?
        public var virtualhost: String?

        public init(path: String = "/", statusCodes: [ClosedRange<Int>] = [], digest: String? = nil, virtualhost: String? = nil) {
            self.path = path
            self.statusCodes = statusCodes
            self.digest = digest
            self.virtualhost = virtualhost
        }

        public func accepts(status: Int) -> Bool {
            statusCodes.isEmpty ? (200...299).contains(status) : statusCodes.contains { $0.contains(status) }
        }
    }

    public var tls: Bool
    public var urls: [URL]
    /// The Host header (the checker's, else the real server's, else the virtual server's `virtualhost`).
    public var virtualhost: String?
    /// `http_protocol 1.0` (default), `1.1`, `1.0C`, `1.0K`.
    public var httpProtocol: String
    /// `enable_sni`, `sni_name` (SSL_GET).
    public var sniName: String?

    public init(tls: Bool = false, urls: [URL] = [], virtualhost: String? = nil, httpProtocol: String = "1.0", sniName: String? = nil) {
        self.tls = tls
        self.urls = urls
        self.virtualhost = virtualhost
        self.httpProtocol = httpProtocol
        self.sniName = sniName
    }
}

public struct MiscCheck: Equatable, Sendable {
    /// `misc_path`: the command line, run by /bin/sh -c as keepalived does.
    public var path: String
    /// `misc_timeout` (default: the delay loop).
    public var timeout: Double?
    /// `misc_dynamic`: an exit status of 2–255 sets the weight to status − 2.
    public var dynamic: Bool

    public init(path: String, timeout: Double? = nil, dynamic: Bool = false) {
        self.path = path
        self.timeout = timeout
        self.dynamic = dynamic
    }
}

public struct UDPCheck: Equatable, Sendable {
    public var payload: [UInt8]
    public var requireReply: Bool
    /// `require_reply HEX`: the reply must start with these bytes.
    public var expectedReply: [UInt8]?
    public var minReplyLength: Int
    public var maxReplyLength: Int

    public init(payload: [UInt8] = [], requireReply: Bool = false, expectedReply: [UInt8]? = nil,
                minReplyLength: Int = 0, maxReplyLength: Int = 1 << 16) {
        self.payload = payload
        self.requireReply = requireReply
        self.expectedReply = expectedReply
        self.minReplyLength = minReplyLength
        self.maxReplyLength = maxReplyLength
    }
}

public struct DNSCheck: Equatable, Sendable {
    /// The query type: A, NS, CNAME, SOA (default), MX, TXT, AAAA.
    public var type: String
    /// The name asked (default ".").
    public var name: String

    public static let types: [String: UInt16] = ["A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28]

    public init(type: String = "SOA", name: String = ".") {
        self.type = type
        self.name = name
    }
}

/// A real server as health sees it: its configured weight and what happens when it fails.
public struct HealthRealServer: Equatable, Sendable {
    public var endpoint: L4Endpoint
    /// The real server as configured (weight, method, thresholds).
    public var config: RealServerConfig
    /// `inhibit_on_failure`: weight 0 while failed, instead of removed.
    public var inhibitOnFailure: Bool
    public var notifyUp: String?
    public var notifyDown: String?
    public var checkers: [CheckerDefinition]

    public init(config: RealServerConfig, inhibitOnFailure: Bool = false, notifyUp: String? = nil,
                notifyDown: String? = nil, checkers: [CheckerDefinition] = []) {
        self.endpoint = config.endpoint
        self.config = config
        self.inhibitOnFailure = inhibitOnFailure
        self.notifyUp = notifyUp
        self.notifyDown = notifyDown
        self.checkers = checkers
    }
}

/// `sorry_server`: takes the service's traffic while its quorum is lost.
public struct SorryServer: Equatable, Sendable {
    public var config: RealServerConfig
    /// `sorry_server_inhibit`: stays in the table at weight 0 while not needed.
    public var inhibit: Bool

    public init(config: RealServerConfig, inhibit: Bool = false) {
        self.config = config
        self.inhibit = inhibit
    }
}

/// One `virtual_server` block: the services it stands for (several with a group), its real servers and
/// the rules that decide, from their health, what the table holds.
public struct HealthService: Equatable, Sendable {
    /// A name for logs: `192.0.2.10:80/tcp` or `group web/tcp`.
    public var name: String
    public var keys: [ServiceKey]
    public var reals: [HealthRealServer]
    /// `quorum` (default 1): the least sum of live weights for the service to be up; `hysteresis` around it.
    public var quorum: Int
    public var hysteresis: Int
    public var quorumUp: String?
    public var quorumDown: String?
    public var sorryServer: SorryServer?
    /// `omega`: at shutdown, the notify_down and quorum_down scripts run.
    public var omega: Bool

    public init(name: String, keys: [ServiceKey], reals: [HealthRealServer] = [], quorum: Int = 1, hysteresis: Int = 0,
                quorumUp: String? = nil, quorumDown: String? = nil, sorryServer: SorryServer? = nil, omega: Bool = false) {
        self.name = name
        self.keys = keys
        self.reals = reals
        self.quorum = quorum
        self.hysteresis = hysteresis
        self.quorumUp = quorumUp
        self.quorumDown = quorumDown
        self.sorryServer = sorryServer
        self.omega = omega
    }
}

/// A keepalived.conf as XDirector runs it.
public struct KeepalivedConfig: Equatable, Sendable {
    /// Every virtual service with every real server at its configured weight (all healthy), sorry servers
    /// absent (or at weight 0 with `sorry_server_inhibit`).
    public var director: DirectorConfig
    public var services: [HealthService]
    /// One line per block left to keepalived (VRRP, global settings).
    public var skipped: [String]

    public init(director: DirectorConfig = DirectorConfig(), services: [HealthService] = [], skipped: [String] = []) {
        self.director = director
        self.services = services
        self.skipped = skipped
    }

    /// Every checker: the service block, the real server and the checker's indices.
    public var checkerCount: Int { services.reduce(0) { $0 + $1.reals.reduce(0) { $0 + $1.checkers.count } } }
}
