import Foundation
import Keepalived
import XCTest

/// Where Debian's keepalived (`keepalived -t -f FILE`) accepts or refuses a file, XDirector agrees, except
/// for what it refuses by name ("… is not supported by XDirector"). Skipped where keepalived is absent.
final class KeepalivedAgreementTests: XCTestCase {
    private let keepalived = "/usr/sbin/keepalived"

    private func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "xd-agreement-\(UUID().uuidString.prefix(8)).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// keepalived's verdict: true when `keepalived -t` accepts the file (exit 0).
    private func keepalivedAccepts(_ path: String) throws -> (Bool, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: keepalived)
        process.arguments = ["-t", "-f", path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus == 0, text)
    }

    private func server(_ body: String, realServer: String = "weight 1\n TCP_CHECK {\n connect_timeout 2\n }") -> String {
        """
        virtual_server 203.0.113.10 80 {
            delay_loop 3
            \(body)
            real_server 198.51.100.11 80 {
                \(realServer)
            }
        }
        """
    }

    func testAcceptedAndRefusedAlike() throws {
        guard FileManager.default.isExecutableFile(atPath: keepalived) else { throw XCTSkip("keepalived is not installed (tools/setup.sh)") }
        let cases: [(String, String)] = [
            ("DR with a TCP check", server("lb_algo rr\n lb_kind DR\n protocol TCP")),
            ("NAT with an HTTP check", server("lb_algo wlc\n lb_kind NAT\n protocol TCP", realServer: """
                weight 2
                HTTP_GET {
                    url {
                        path /health
                        status_code 200
                    }
                    connect_timeout 3
                    retry 2
                    delay_before_retry 1
                }
                """)),
            ("persistence and a sorry server", server("lb_algo sh\n lb_kind DR\n persistence_timeout 300\n protocol TCP\n sorry_server 198.51.100.99 80")),
            ("MISC_CHECK without script security", server("lb_algo rr\n lb_kind DR\n protocol UDP",
                                                         realServer: "MISC_CHECK {\n misc_path \"/bin/true\"\n misc_timeout 3\n }")),
            ("MISC_CHECK with script security", "global_defs {\n script_user root\n enable_script_security\n}\n"
                + server("lb_algo rr\n lb_kind DR\n protocol UDP", realServer: "MISC_CHECK {\n misc_path \"/bin/true\"\n misc_timeout 3\n }")),
            ("an unknown keyword", server("lb_algo rr\n lb_kind DR\n bogus_word 3")),
            ("an unknown scheduler", server("lb_algo nosuch\n lb_kind DR")),
            ("an unknown forwarding method", server("lb_algo rr\n lb_kind BRIDGE")),
            ("a bad real server address", """
                virtual_server 203.0.113.10 80 {
                    lb_algo rr
                    lb_kind DR
                    real_server 198.51.100.300 80 {
                        weight 1
                    }
                }
                """),
            ("an unknown checker option", server("lb_algo rr\n lb_kind DR", realServer: "TCP_CHECK {\n connect_timeout 2\n no_such_option 1\n }")),
        ]
        var disagreements: [String] = []
        for (name, text) in cases {
            let path = try write(text)
            let (theirs, theirWords) = try keepalivedAccepts(path)
            var ours = true, ourWords = ""
            do { _ = try KeepalivedParser.load(path: path) } catch {
                ours = false
                ourWords = "\(error)"
            }
            if ours != theirs && !ourWords.contains("is not supported by XDirector") {
                disagreements.append("\(name): keepalived \(theirs ? "accepts" : "refuses") (\(theirWords)), XDirector \(ours ? "accepts" : "refuses") (\(ourWords))")
            }
        }
        XCTAssertEqual(disagreements, [], disagreements.joined(separator: "\n"))
    }
}
