import ArgumentParser
import Control
import Dataplane
import Foundation
import Health
import Keepalived
import Logging
import Synchronization
import Packet
import XDirectorMetrics

extension WaitMode: ExpressibleByArgument {}
extension XDPProgram.AttachMode: ExpressibleByArgument, CaseIterable {
    public static let allCases: [XDPProgram.AttachMode] = [.native, .generic]
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Attach to an interface and forward its virtual services until interrupted."
    )

    @Option(name: .shortAndLong, help: "The interface to serve.")
    var interface: String

    @Option(help: "Receive queues to serve, e.g. 0-3,6 (default: all).")
    var queues: String?

    @Option(help: "Cores for the queues' workers, one per queue in order (default: one each).")
    var cores: String?

    @Option(help: "Rules in ipvsadm-save syntax (default: the state file's, when there is one).")
    var rules: String?

    @Option(help: "Take the virtual services, real servers and health checkers from keepalived's own configuration file (SIGHUP rereads it).")
    var keepalived: String?

    @Option(name: .customLong("state-file"),
            help: "Where the running configuration is saved after every change, and restored from without --rules (default: /var/lib/xdirector/<interface>.rules).")
    var stateFile: String?

    @Option(help: "How idle workers wait: poll, or busy on dedicated cores.")
    var wait: WaitMode = .poll

    @Option(name: .customLong("xdp-mode"), help: "native, or generic (slow, any driver).")
    var xdpMode: XDPProgram.AttachMode = .native

    @Flag(name: .customLong("no-zero-copy"), help: "Bind AF_XDP sockets in copy mode even where zero-copy works.")
    var noZeroCopy = false

    @Option(help: "Connection-table slots per worker.")
    var connections: Int = 1 << 18

    @Option(name: .customLong("source-address"),
            help: "The director's address for tunnel headers and ICMP errors, once per family (default: the interface's).")
    var sourceAddresses: [String] = []

    @Option(help: "The control socket for `xdirector ipvsadm|stats|queues|pin` (default: /run/xdirector/<interface>.sock).")
    var socket: String?

    @Option(help: "Serve Prometheus metrics at HOST:PORT (e.g. 127.0.0.1:9469 or [::1]:9469), path /metrics.")
    var metrics: String?

    @Option(help: "On SIGTERM or SIGINT, take no new connections for this many seconds before stopping (a second signal stops at once).")
    var drain: Double = 0

    @Option(name: .customLong("bird-socket"), help: "BIRD's control socket: announce the served VIPs through BIRD (with --bird-include).")
    var birdSocket: String?

    @Option(name: .customLong("bird-include"),
            help: "The file the director keeps for bird.conf to include: static protocols <name>_4 and <name>_6 with a route per served VIP.")
    var birdInclude: String?

    @Option(name: .customLong("restart-grace"),
            help: "After the director dies, hold its queues' frames this many seconds for a restarted director to resume the connections, then hand them to the kernel.")
    var restartGrace: Double = 30

    func validate() throws {
        if rules != nil && keepalived != nil { throw ValidationError("--rules and --keepalived exclude each other") }
        guard connections >= 1024 else { throw ValidationError("--connections must be at least 1024") }
        guard (birdSocket == nil) == (birdInclude == nil) else {
            throw ValidationError("--bird-socket and --bird-include go together")
        }
        guard drain >= 0 && drain <= 3600 else { throw ValidationError("--drain must be between 0 and 3600 seconds") }
        guard restartGrace >= 0 && restartGrace <= 3600 else { throw ValidationError("--restart-grace must be between 0 and 3600 seconds") }
        if let metrics {
            do { _ = try MetricsServer.parseAddress(metrics) } catch { throw ValidationError("--metrics \(metrics): \(error)") }
        }
        for text in sourceAddresses where IPAddress(text) == nil {
            throw ValidationError("--source-address \(text): not a numeric IPv4 or IPv6 address")
        }
    }

    func run() throws {
        let logger = makeLogger()
        // Signals are taken synchronously by the control loop; block them before any thread exists
        // (workers, the health checks' event loop).
        // A parent may have left them ignored (ignored signals are never pending), so restore defaults.
        // A thread a library starts with the signals unblocked (a subprocess monitor) would take them by
        // their default action, killing the director: a handler there hands them to the loop instead.
        for number in [SIGINT, SIGTERM, SIGHUP, SIGUSR2] { signal(number, { RunCommand.strayedSignal.store($0, ordering: .relaxed) }) }
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGHUP)
        sigaddset(&signals, SIGUSR2)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let state = RulesStateFile(path: stateFile ?? RulesStateFile.defaultPath(instance: DirectorInstance.name(interface: interface)))
        var configuration: DirectorConfig
        var health: HealthMonitor? = nil
        do {
            if let keepalived {
                let config = try Self.loadKeepalived(keepalived, logger: logger)
                let monitor = HealthMonitor(config: config, logger: logger)
                health = monitor
                configuration = monitor.initialTable()
                logger.info("\(keepalived): \(config.director.services.count) virtual services, \(config.checkerCount) checkers")
            } else if let rules {
                configuration = try Self.loadRules(rules)
            } else if let saved = try state.load() {
                configuration = saved
                logger.info("restored the running configuration from \(state.path)")
            } else {
                configuration = DirectorConfig()
            }
        } catch {
            throw failure(keepalived != nil ? "\(error)" : "\(rules ?? state.path): \(error)")
        }

        var options = DirectorOptions(interface: interface)
        options.sourceAddresses = sourceAddresses.compactMap { IPAddress($0) }
        do {
            options.queues = try queues.map(QueuePlan.parseList)
            options.cores = try cores.map(QueuePlan.parseList)
        } catch { throw failure("\(error)") }
        options.waitMode = wait
        options.xdpMode = xdpMode
        options.allowZeroCopy = !noZeroCopy
        options.connectionsPerWorker = connections
        options.restartGrace = restartGrace
        // With --keepalived, its file is the source of truth, as it is for keepalived: no state file.
        options.rulesStateFile = keepalived == nil ? state : nil

        // Every check that can refuse the start runs before anything is attached: the director's own
        // (interface, owner of the interface, queues, cores, rules), the control socket, the metrics port.
        let director: Director
        let control: ControlSocket
        do {
            director = try Director(configuration: configuration, options: options, logger: logger)
            control = try ControlSocket(path: socket ?? ControlSocket.defaultPath(interface: interface))
        } catch { throw failure("\(error)") }
        defer { control.close() }
        let handler = ControlHandler(director: director)
        var metricsServer: MetricsServer? = nil
        if let metrics {
            do {
                let (host, port) = try MetricsServer.parseAddress(metrics)
                // The endpoint's thread reads the control loop's last reading (at most a second old).
                let readings = director.latestReading
                var additional: (@Sendable () -> String)? = nil
                if let text = health?.exposition { additional = { text.value } }
                let provider: MetricsExporter.Provider = {
                    let reading = readings.current
                    return (reading?.statistics ?? DirectorStatistics(workers: [], xdp: []), reading?.services ?? [])
                }
                let exporter = MetricsExporter(provider: provider, additional: additional)
                let server = try MetricsServer(host: host, port: port, exporter: exporter)
                try server.start()
                metricsServer = server
                logger.info("metrics at http://\(metrics)/metrics")
            } catch {
                throw failure("--metrics \(metrics): \(error)")
            }
        }
        do {
            try director.start()
        } catch {
            metricsServer?.stop()
            throw failure("\(error)")
        }
        defer { metricsServer?.stop() }
        let services = configuration.services.count
        print("xdirector: serving \(services) virtual service\(services == 1 ? "" : "s") on \(interface), "
            + "\(director.plan.assignments.count) queue\(director.plan.assignments.count == 1 ? "" : "s"), "
            + "control socket \(control.path); ready")
        fflush(nil)
        // Routes last: a VIP is announced only once the director serves it.
        var routes: RouteAnnouncing? = nil
        if let birdSocket, let birdInclude {
            do {
                routes = try RouteAnnouncing(socket: birdSocket, include: birdInclude, instance: director.instance,
                                             restartGrace: restartGrace, logger: logger)
            } catch {
                director.stop()
                throw failure("cannot start the route guard: \(error)")
            }
            routes?.update(director, hasQuorum: { health?.hasQuorum($0.key) ?? true }, now: true)
        }
        // Under systemd (Type=notify): ready once attached with the workers running; the control loop feeds
        // the watchdog, so a stalled loop gets the director restarted.
        let systemd = SystemdNotifier()
        systemd?.ready(status: "serving \(services) virtual services on \(interface)")
        var lastWatchdog = Date.distantPast

        var drainingUntil: Date? = nil
        var handingOver = false
        director.run(until: {
            routes?.update(director, hasQuorum: { health?.hasQuorum($0.key) ?? true })
            if let systemd, let interval = systemd.watchdogInterval, Date().timeIntervalSince(lastWatchdog) >= interval {
                systemd.watchdog()
                lastWatchdog = Date()
            }
            health?.tick(apply: { try director.reload($0) }, expire: { service, server in
                do { try director.expireConnections(service: service, server: server) } catch {
                    logger.error("health: cannot expire the connections of \(server) of \(service): \(error)")
                }
            })
            var none = timespec(tv_sec: 0, tv_nsec: 0)
            var received = sigtimedwait(&signals, nil, &none)
            if received <= 0 { received = Self.strayedSignal.exchange(0, ordering: .relaxed) }
            if received == SIGHUP {
                if let health, let keepalived {
                    reloadKeepalived(keepalived, health: health, logger: logger)
                } else {
                    reload(director)
                }
                return false
            }
            if received == SIGUSR2 {
                handingOver = true
                return true
            }
            if received > 0 {
                // Withdrawn first, so the routers stop sending new flows before anything else changes.
                routes?.withdraw()
                // A second signal while draining stops at once.
                guard drain > 0, drainingUntil == nil else { return true }
                director.quiesce()
                systemd?.status("draining: no new connections")
                drainingUntil = Date().addingTimeInterval(drain)
                print("xdirector: draining: no new connections; stopping in \(drain) s")
                fflush(nil)
                return false
            }
            return drainingUntil.map { Date() >= $0 } ?? false
        }, idle: {
            control.serve { request in
                guard request.command == "health" else { return handler.handle(request) }
                guard let health else { return .failure("xdirector: this director runs no health checks (start it with --keepalived)") }
                return ControlResponse(output: health.report())
            }
        })
        systemd?.stopping()
        health?.shutdown()
        routes?.finish(handingOver: handingOver)
        if handingOver {
            // The next director (systemd restarts this one: the exit status counts as a failure) takes over.
            director.handOver()
            print(director.statistics().render())
            fflush(nil)
            throw ExitCode(Self.handOverStatus)
        }
        director.stop()
        print(director.statistics().render())
        fflush(nil)
    }
}

extension RunCommand {
    /// The exit status after `SIGUSR2`: EX_TEMPFAIL, so systemd's `Restart=on-failure` starts the successor.
    static let handOverStatus: Int32 = 75

    /// A signal delivered to a thread other than the control loop's (which takes them with sigtimedwait).
    static let strayedSignal = Atomic<Int32>(0)

    static func loadRules(_ path: String) throws -> DirectorConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ControlError("cannot read rules file \(path)")
        }
        return try RulesFile.load(bytes: [UInt8](data))
    }

    static func loadKeepalived(_ path: String, logger: Logger) throws -> KeepalivedConfig {
        let config = try KeepalivedParser.load(path: path)
        for line in config.skipped { logger.info("\(line)") }
        return config
    }

    /// SIGHUP with --keepalived: rereads the file as keepalived's reload does; the next turn of the loop
    /// applies what it and the checkers' state make (connections stay). A bad file keeps the running one.
    func reloadKeepalived(_ path: String, health: HealthMonitor, logger: Logger) {
        do {
            health.reload(try Self.loadKeepalived(path, logger: logger))
            print("xdirector: reloaded \(path)")
        } catch {
            print("xdirector: reload of \(path) refused, keeping the running configuration: \(error)")
        }
        fflush(nil)
    }

    /// SIGHUP: reads the rules file again and applies it whole, or keeps the running rules on any error.
    func reload(_ director: Director) {
        guard let path = rules else {
            print("xdirector: SIGHUP: no --rules or --keepalived file to reread (change the rules with xdirector ipvsadm)")
            fflush(nil)
            return
        }
        do {
            try director.reload(try Self.loadRules(path))
            print("xdirector: reloaded \(path)")
        } catch {
            print("xdirector: reload of \(path) refused, keeping the running rules: \(error)")
        }
        fflush(nil)
    }
}

/// The process's one logger: messages to standard error.
func makeLogger() -> Logger {
    LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    var logger = Logger(label: "xdirector")
    logger.logLevel = ProcessInfo.processInfo.environment["XDIRECTOR_DEBUG"] != nil ? .debug : .info
    return logger
}

/// Prints `message` to standard error and returns the exit code to throw.
func failure(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("xdirector: \(message)\n".utf8))
    return ExitCode.failure
}
