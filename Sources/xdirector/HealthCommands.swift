import ArgumentParser
import Control
import Foundation
import Keepalived

struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Show each real server's checkers: state, last result and its reason, latency, time in state, failures in a row.")

    @OptionGroup var target: DirectorSocketOptions

    func run() throws {
        try deliver(try target.send(ControlRequest(command: "health")))
    }
}

struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a keepalived.conf and print the services it defines as ipvsadm-save lines.",
        discussion: """
            Blocks that are keepalived's alone (vrrp_instance, vrrp_script, global_defs, …) are listed on \
            standard error as skipped; a keyword XDirector does not run is refused with its file and line \
            (exit status 1). Needs no privileges.
            """)

    @Option(help: "The keepalived configuration file.")
    var keepalived: String

    func run() throws {
        let config: KeepalivedConfig
        do {
            config = try KeepalivedParser.load(path: keepalived)
        } catch {
            throw failure("\(error)")
        }
        for line in config.skipped {
            FileHandle.standardError.write(Data("xdirector: \(line)\n".utf8))
        }
        FileHandle.standardError.write(Data("xdirector: \(keepalived): \(config.director.services.count) virtual services, \(config.checkerCount) checkers\n".utf8))
        FileHandle.standardOutput.write(Data(RulesFile.save(config.director).utf8))
    }
}
