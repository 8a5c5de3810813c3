import Dataplane
import Packet
import Scheduling

// What `ipvsadm -L` and the metrics show of a running director, read by the control thread and handed to
// the formatters (which do no I/O): the configuration with each service's and real server's counts,
// traffic and rates, and, for `-c`, the connections.

/// Per-second rates, as IPVS's estimator gives them (`--rate`): connections, packets and bytes in and out.
public struct TrafficRates: Equatable, Sendable {
    public var connectionsPerSecond: UInt64
    public var inPacketsPerSecond: UInt64
    public var outPacketsPerSecond: UInt64
    public var inBytesPerSecond: UInt64
    public var outBytesPerSecond: UInt64

    public init(connectionsPerSecond: UInt64 = 0, inPacketsPerSecond: UInt64 = 0, outPacketsPerSecond: UInt64 = 0,
                inBytesPerSecond: UInt64 = 0, outBytesPerSecond: UInt64 = 0) {
        self.connectionsPerSecond = connectionsPerSecond
        self.inPacketsPerSecond = inPacketsPerSecond
        self.outPacketsPerSecond = outPacketsPerSecond
        self.inBytesPerSecond = inBytesPerSecond
        self.outBytesPerSecond = outBytesPerSecond
    }

    public static let zero = TrafficRates()
}

/// A real server of a service as listed.
public struct RealServerListing: Equatable, Sendable {
    public var endpoint: L4Endpoint
    public var method: ForwardingMethod
    public var weight: Int32
    /// IPVS `ActiveConn`, `InActConn`, `PersistConn`, across all workers.
    public var activeConnections: Int32
    public var inactiveConnections: Int32
    public var persistentConnections: Int32
    /// `-x`, `-y` (0: none).
    public var upperThreshold: UInt32
    public var lowerThreshold: UInt32
    public var stats: TrafficStats
    public var rates: TrafficRates

    public init(endpoint: L4Endpoint, method: ForwardingMethod, weight: Int32, activeConnections: Int32 = 0,
                inactiveConnections: Int32 = 0, persistentConnections: Int32 = 0, upperThreshold: UInt32 = 0,
                lowerThreshold: UInt32 = 0, stats: TrafficStats = .zero, rates: TrafficRates = .zero) {
        self.endpoint = endpoint
        self.method = method
        self.weight = weight
        self.activeConnections = activeConnections
        self.inactiveConnections = inactiveConnections
        self.persistentConnections = persistentConnections
        self.upperThreshold = upperThreshold
        self.lowerThreshold = lowerThreshold
        self.stats = stats
        self.rates = rates
    }
}

/// A virtual service as listed: its configuration, its traffic (the sum of its real servers', including
/// those removed since), and its real servers in the order they were added.
public struct ServiceListing: Equatable, Sendable {
    public var key: ServiceKey
    public var scheduler: SchedulerKind
    public var options: ServiceOptions
    public var stats: TrafficStats
    public var rates: TrafficRates
    public var reals: [RealServerListing]
    /// FULLNAT local addresses (`-P`), for `-G`.
    public var localAddresses: [IPAddress]

    public init(key: ServiceKey, scheduler: SchedulerKind, options: ServiceOptions = .init(), stats: TrafficStats = .zero,
                rates: TrafficRates = .zero, reals: [RealServerListing] = [], localAddresses: [IPAddress] = []) {
        self.key = key
        self.scheduler = scheduler
        self.options = options
        self.stats = stats
        self.rates = rates
        self.reals = reals
        self.localAddresses = localAddresses
    }
}

/// One connection (or persistence template) for `ipvsadm -Lc`.
public struct ConnectionListing: Equatable, Sendable {
    public var proto: L4Protocol
    /// Seconds until it expires.
    public var expiresIn: UInt32
    /// `ConnectionState.ipvsName` ("ESTABLISHED", "SYN_RECV", "UDP", "NONE" for a template, ...).
    public var state: String
    /// The client (a template's client port is 0).
    public var client: L4Endpoint
    /// The virtual service's address and port.
    public var virtual: L4Endpoint
    /// The real server.
    public var destination: L4Endpoint
    /// A persistence template rather than a connection.
    public var isTemplate: Bool

    public init(proto: L4Protocol, expiresIn: UInt32, state: String, client: L4Endpoint, virtual: L4Endpoint,
                destination: L4Endpoint, isTemplate: Bool = false) {
        self.proto = proto
        self.expiresIn = expiresIn
        self.state = state
        self.client = client
        self.virtual = virtual
        self.destination = destination
        self.isTemplate = isTemplate
    }
}

/// Everything a listing may show.
public struct DirectorListing: Equatable, Sendable {
    /// The connection table's size for ipvsadm's header line (`size=N`): slots per worker times workers.
    public var connectionTableSize: Int
    public var services: [ServiceListing]
    /// Filled only when connections were asked for (`-c`).
    public var connections: [ConnectionListing]
    /// `--set`'s timeouts in force (for `--timeout` listings).
    public var timeouts: TimeoutSettings

    public init(connectionTableSize: Int, services: [ServiceListing], connections: [ConnectionListing] = [],
                timeouts: TimeoutSettings = TimeoutSettings()) {
        self.connectionTableSize = connectionTableSize
        self.services = services
        self.connections = connections
        self.timeouts = timeouts
    }
}
