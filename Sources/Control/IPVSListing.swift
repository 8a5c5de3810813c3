import Dataplane
import Packet
import Scheduling

// `ipvsadm -L` as ipvsadm prints it, column for column, so that scripts written against `ipvsadm -Ln`
// read ours unchanged. Pure: the daemon gathers a `DirectorListing` and sends back the text.
//
// Without `-n` ipvsadm looks up host and service names. Host names are never looked up here (a reverse
// DNS query per address would stall the control thread, and the rules name addresses anyway); port names
// come from an injected table (`PortNames`), which the daemon backs with the services database.

/// Port names for listings without `-n` (`80` → `http`).
public struct PortNames: Sendable {
    public var lookup: @Sendable (UInt16, L4Protocol) -> String?

    public init(lookup: @escaping @Sendable (UInt16, L4Protocol) -> String?) {
        self.lookup = lookup
    }

    /// Every port as a number.
    public static let none = PortNames { _, _ in nil }
}

public enum IPVSListing {
    /// The IPVS version ipvsadm's first line reports; ours behaves as this one.
    static let ipvsVersion = "1.2.1"

    /// The text of `ipvsadm -L` with `options`. Throws `.noSuchService` when `options.service` names none.
    public static func render(_ listing: DirectorListing, options: IPVSListOptions,
                              names: PortNames = .none) throws(ConfigError) -> String {
        let names = options.numeric ? PortNames.none : names
        if options.connections { return connections(listing.connections, options, names) }
        if let key = options.service {
            // One service: no version line, as ipvsadm.
            guard let service = listing.services.first(where: { $0.key == key }) else { throw .noSuchService(key) }
            return title(options) + entry(service, options, names)
        }
        if options.timeouts {
            let t = listing.timeouts
            return "Timeout (tcp tcpfin udp): \(t.tcp) \(t.tcpFin) \(t.udp)\n"
        }
        var text = "IP Virtual Server version \(ipvsVersion) (size=\(listing.connectionTableSize))\n" + title(options)
        for service in ordered(listing.services, options.sort) { text += entry(service, options, names) }
        return text
    }

    /// `-G`: each service (or the one named) and its FULLNAT local addresses.
    public static func renderLocalAddresses(_ listing: DirectorListing, service: ServiceKey?) throws(ConfigError) -> String {
        var services = ordered(listing.services, true)
        if let service {
            services = services.filter { $0.key == service }
            if services.isEmpty { throw .noSuchService(service) }
        }
        var text = "Prot LocalAddress:Port\n  -> LocalAddress\n"
        for entry in services {
            text += serviceName(entry.key, .none) + "\n"
            for address in entry.localAddresses {
                text += "  -> " + (address.family == .ipv6 ? "[\(address)]" : address.description) + "\n"
            }
        }
        return text
    }

    // MARK: Services and real servers

    /// The two title lines for the variant `options` asks for; `--stats` wins over `--rate`, which wins over
    /// `--thresholds`, which wins over `--persistent-conn`, as in ipvsadm.
    static func title(_ options: IPVSListOptions) -> String {
        let first = left("Prot LocalAddress:Port", 33)
        let second = "  -> RemoteAddress:Port\n"
        if options.stats {
            return first + ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"].map { " " + right($0, 8) }.joined()
                + "\n" + second
        }
        if options.rate {
            return first + ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"].map { " " + right($0, 8) }.joined()
                + "\n" + second
        }
        if options.thresholds {
            return first + ["Uthreshold", "Lthreshold", "ActiveConn", "InActConn"].map { " " + left($0, 10) }.joined()
                + "\n" + second
        }
        if options.persistentConnections {
            return first + " " + left("Weight", 9) + " " + left("PersistConn", 11) + " " + left("ActiveConn", 10)
                + " " + left("InActConn", 10) + "\n" + second
        }
        return "Prot LocalAddress:Port Scheduler Flags\n"
            + "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    }

    /// A service's line and its real servers' lines.
    static func entry(_ service: ServiceListing, _ options: IPVSListOptions, _ names: PortNames) -> String {
        let name = serviceName(service.key, names)
        var text: String
        if options.stats {
            text = left(name, 33) + numbers(service.stats, options.exact)
        } else if options.rate {
            text = left(name, 33) + numbers(service.rates, options.exact)
        } else {
            // --thresholds and --persistent-conn change only the real servers' columns.
            text = name + " " + service.scheduler.name + flags(service)
        }
        text += "\n"
        let reals = options.sort ? service.reals.sorted { precedes($0.endpoint, $1.endpoint) } : service.reals
        for real in reals {
            var destination = addressAndPort(real.endpoint, service.key.proto, names)
            // ipvsadm cuts IPv4 names to the column's width; IPv6 ones overflow it.
            if real.endpoint.address.family == .ipv4 { destination = String(destination.prefix(28)) }
            let head = "  -> " + left(destination, 28)
            if options.stats {
                text += head + numbers(real.stats, options.exact)
            } else if options.rate {
                text += head + numbers(real.rates, options.exact)
            } else if options.thresholds {
                text += head + [UInt64(real.upperThreshold), UInt64(real.lowerThreshold),
                                UInt64(clamping: real.activeConnections), UInt64(clamping: real.inactiveConnections)]
                    .map { " " + left(String($0), 10) }.joined()
            } else if options.persistentConnections {
                text += head + " " + left(String(real.weight), 9)
                    + " " + left(String(UInt64(clamping: real.persistentConnections)), 11)
                    + " " + left(String(UInt64(clamping: real.activeConnections)), 10)
                    + " " + left(String(UInt64(clamping: real.inactiveConnections)), 10)
            } else {
                text += head + " " + left(forwardName(real.method), 7) + " " + left(String(real.weight), 6)
                    + " " + left(String(UInt64(clamping: real.activeConnections)), 10)
                    + " " + left(String(UInt64(clamping: real.inactiveConnections)), 10)
            }
            text += "\n"
        }
        return text
    }

    /// `TCP  192.0.2.10:80`, two spaces after the protocol; IPv4 ones cut at 33 characters as ipvsadm does.
    static func serviceName(_ key: ServiceKey, _ names: PortNames) -> String {
        let name = protocolName(key.proto) + "  " + addressAndPort(key.endpoint, key.proto, names)
        return key.endpoint.address.family == .ipv4 ? String(name.prefix(33)) : name
    }

    /// What follows the scheduler: ` (sh-fallback,sh-port)`, ` persistent 300 mask 255.255.255.0`, ` ops`.
    static func flags(_ service: ServiceListing) -> String {
        var text = ""
        let options = service.options
        if !options.schedulerFlags.isEmpty {
            // IPVS names the flags after sh and mh only; other schedulers show the generic names.
            let owner = service.scheduler.acceptedFlags.isEmpty ? nil : service.scheduler
            text += " (" + options.schedulerFlags.names(for: owner).joined(separator: ",") + ")"
        }
        if let persistence = options.persistence {
            text += " persistent \(persistence)"
            if let prefix = options.netmask {
                if service.key.endpoint.address.family == .ipv4 {
                    if prefix < 32 {
                        let mask = prefix == 0 ? UInt32(0) : UInt32.max << UInt32(32 - prefix)
                        text += " mask \(IPAddress.v4(mask))"
                    }
                } else if prefix < 128 {
                    text += " mask \(prefix)"
                }
            }
        }
        if options.onePacket { text += " ops" }
        return text
    }

    static func forwardName(_ method: ForwardingMethod) -> String {
        switch method {
        case .directRouting: return "Route"
        case .tunnel: return "Tunnel"
        case .masquerading: return "Masq"
        case .fullNAT: return "FullNat"
        }
    }

    static func protocolName(_ proto: L4Protocol) -> String { proto == .tcp ? "TCP" : "UDP" }

    /// `192.0.2.10:80`, `[2001:db8::10]:80`, or with the port's name (`192.0.2.10:http`).
    static func addressAndPort(_ endpoint: L4Endpoint, _ proto: L4Protocol, _ names: PortNames) -> String {
        let address = endpoint.address.family == .ipv6 ? "[\(endpoint.address)]" : endpoint.address.description
        return address + ":" + (names.lookup(endpoint.port, proto) ?? String(endpoint.port))
    }

    // MARK: Order

    /// ipvsadm sorts unless told `--nosort`: services by family, protocol, address, port; real servers by
    /// address, port. Otherwise the order they were added.
    static func ordered(_ services: [ServiceListing], _ sort: Bool) -> [ServiceListing] {
        guard sort else { return services }
        return services.sorted { a, b in
            if a.key.endpoint.address.family != b.key.endpoint.address.family {
                return a.key.endpoint.address.family == .ipv4
            }
            if a.key.proto != b.key.proto { return a.key.proto.number < b.key.proto.number }
            return precedes(a.key.endpoint, b.key.endpoint)
        }
    }

    /// Address (IPv4 before IPv6, then numerically), then port.
    static func precedes(_ a: L4Endpoint, _ b: L4Endpoint) -> Bool {
        if a.address != b.address {
            if a.address.family != b.address.family { return a.address.family == .ipv4 }
            return a.address.bytes.lexicographicallyPrecedes(b.address.bytes)
        }
        return a.port < b.port
    }

    // MARK: Numbers

    static func numbers(_ stats: TrafficStats, _ exact: Bool) -> String {
        [stats.connections, stats.inPackets, stats.outPackets, stats.inBytes, stats.outBytes]
            .map { large($0, exact) }.joined()
    }

    static func numbers(_ rates: TrafficRates, _ exact: Bool) -> String {
        [rates.connectionsPerSecond, rates.inPacketsPerSecond, rates.outPacketsPerSecond, rates.inBytesPerSecond,
         rates.outBytesPerSecond].map { large($0, exact) }.joined()
    }

    /// A counter in a 9-character column (a space and 8 digits): below 10^8 as it is, above in thousands (K),
    /// millions (M), billions (G) or trillions (T), as ipvsadm; `exact` widens the column instead.
    static func large(_ value: UInt64, _ exact: Bool) -> String {
        if exact {
            let digits = String(value)
            return right(digits, max(9, digits.count + 1))
        }
        switch value {
        case ..<100_000_000: return right(String(value), 9)
        case ..<1_000_000_000: return right(String(value / 1_000), 8) + "K"
        case ..<100_000_000_000: return right(String(value / 1_000_000), 8) + "M"
        case ..<100_000_000_000_000: return right(String(value / 1_000_000_000), 8) + "G"
        default: return right(String(value / 1_000_000_000_000), 8) + "T"
        }
    }

    /// Left-aligned in `width` characters (`%-Ns`: longer text is not cut).
    static func left(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    /// Right-aligned in `width` characters (`%Ns`).
    static func right(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }

    // MARK: Connections

    /// `-c`: one line per connection and persistence template, as ipvsadm prints the kernel's table.
    static func connections(_ entries: [ConnectionListing], _ options: IPVSListOptions, _ names: PortNames) -> String {
        var text = "IPVS connection entries\n"
        text += "pro expire " + left("state", 11) + " " + left("source", 18) + " " + left("virtual", 18) + " "
        // --persistent-conn adds the persistence engine's columns, empty here: there are no engines.
        text += options.persistentConnections
            ? left("destination", 18) + " " + left("pe name", 16) + " pe_data\n"
            : "destination\n"
        for entry in entries {
            let expire = twoDigits(entry.expiresIn / 60) + ":" + twoDigits(entry.expiresIn % 60)
            text += left(protocolName(entry.proto), 3) + " " + left(expire, 6) + " " + left(entry.state, 11)
                + " " + left(addressAndPort(entry.client, entry.proto, names), 18)
                + " " + left(addressAndPort(entry.virtual, entry.proto, names), 18)
                + " " + addressAndPort(entry.destination, entry.proto, names) + "\n"
        }
        return text
    }

    /// `%02d`.
    static func twoDigits(_ value: UInt32) -> String { value < 10 ? "0\(value)" : String(value) }

    // MARK: Help

    /// `-v`.
    public static var version: String {
        "ipvsadm (XDirector) speaking for IPVS v\(ipvsVersion)\n"
    }

    /// `-h`: the commands and options this director implements.
    public static var usage: String {
        """
        Usage:
          ipvsadm -A|E -t|u service-address [-s scheduler] [-b sched-flags] [-p [timeout]] [-M netmask] [-o]
          ipvsadm -D -t|u service-address
          ipvsadm -C
          ipvsadm -R
          ipvsadm -S [-n]
          ipvsadm -a|e -t|u service-address -r server-address [options]
          ipvsadm -d -t|u service-address -r server-address
          ipvsadm -P|Q -t|u service-address -z local-address
          ipvsadm -G [-t|u service-address]
          ipvsadm -L|l [-t|u service-address] [options]
          ipvsadm -Z [-t|u service-address]
          ipvsadm --set tcp tcpfin udp
          ipvsadm -h

        Commands:
        Either long or short options are allowed.
          --add-service     -A        add virtual service with options
          --edit-service    -E        edit virtual service with options
          --delete-service  -D        delete virtual service
          --clear           -C        clear the whole table
          --restore         -R        restore rules from stdin
          --save            -S        save rules to stdout
          --add-server      -a        add real server with options
          --edit-server     -e        edit real server with options
          --delete-server   -d        delete real server
          --add-laddr       -P        add a FULLNAT local address to a service
          --del-laddr       -Q        delete a FULLNAT local address of a service
          --get-laddr       -G        list FULLNAT local addresses
          --list            -L|-l     list the table
          --zero            -Z        zero counters in a service or all services
          --set tcp tcpfin udp        set connection timeout values
          --help            -h        display this help message
          --version         -v        display the version

        Options:
          --tcp-service  -t service-address   service-address is address:port
          --udp-service  -u service-address   service-address is address:port
          --scheduler    -s scheduler         one of \(SchedulerKind.allCases.map(\.name).joined(separator: ",")),
                                              the default scheduler is \(SchedulerKind.default.name).
          --sched-flags  -b flags             sh-fallback, sh-port, mh-fallback, mh-port
          --persistent   -p [timeout]         persistent service
          --netmask      -M netmask           persistent granularity mask
          --ops          -o                   one-packet scheduling (UDP)
          --real-server  -r server-address    server-address is address (and port)
          --gatewaying   -g                   gatewaying (direct routing) (default)
          --ipip         -i                   ipip encapsulation (tunneling)
          --masquerading -m                   masquerading (NAT)
          --fullnat                           full NAT (source and destination rewritten)
          --tun-type     type                 ipip, gue or gre (with -i)
          --tun-port     port                 gue's destination port
          --tun-csum / --tun-nocsum           tunnel checksums on or off
          --weight       -w weight            capacity of real server
          --u-threshold  -x uthreshold        upper threshold of connections
          --l-threshold  -y lthreshold        lower threshold of connections
          --laddr        -z local-address     FULLNAT local address (with -P, -Q)
          --connection   -c                   output of current IPVS connections
          --timeout                           output of timeout (tcp tcpfin udp)
          --stats                             output of statistics information
          --rate                              output of rate information
          --exact        -X                   expand numbers (display exact values)
          --thresholds                        output of thresholds information
          --persistent-conn                   output of persistent connection info
          --nosort                            disable sorting output of service/server entries
          --sort                              does nothing, for backwards compatibility
          --numeric      -n                   numeric output of addresses and ports

        """
    }
}
