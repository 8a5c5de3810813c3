import ArgumentParser

@main
struct XDirector: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xdirector",
        abstract: "Run an LVS-style Layer-4 load balancer on AF_XDP.",
        subcommands: [RunCommand.self, IPVSAdminCommand.self, StatsCommand.self, QueuesCommand.self, PinCommand.self,
                      HealthCommand.self, CheckConfigCommand.self,
                      DemoCommand.self, BackendHTTPCommand.self, BackendUDPCommand.self, UDPProbeCommand.self,
                      BackendSessionCommand.self, SessionProbeCommand.self, SYNFloodCommand.self, RouteGuardCommand.self]
    )
}
