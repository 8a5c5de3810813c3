import Control
import Foundation
import Glibc
import XCTest

final class SystemdNotifierTests: XCTestCase {
    private var directory = ""
    private var receivers: [Int32] = []

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "xdirector-notify-\(getpid())-\(UUID().uuidString)"
        XCTAssertEqual(mkdir(directory, 0o700), 0)
    }

    override func tearDownWithError() throws {
        for fd in receivers { close(fd) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A datagram socket bound where systemd would listen: `bytes` is the raw sun_path content (a leading
    /// NUL for the abstract namespace); the length covers exactly those bytes, as systemd binds.
    private func bindReceiver(_ bytes: [UInt8]) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        receivers.append(fd)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + bytes.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    private func receive(_ fd: Int32) -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    func testNotifiesAFilesystemSocket() throws {
        let path = "\(directory)/notify"
        let receiver = try bindReceiver(Array(path.utf8))
        let notifier = try XCTUnwrap(SystemdNotifier(environment: ["NOTIFY_SOCKET": path]))
        XCTAssertEqual(notifier.socket, path)
        XCTAssertNil(notifier.watchdogInterval)
        XCTAssertTrue(notifier.notify("READY=1"))
        XCTAssertTrue(notifier.notify("WATCHDOG=1"))
        XCTAssertEqual(receive(receiver), "READY=1")
        XCTAssertEqual(receive(receiver), "WATCHDOG=1")

        XCTAssertTrue(notifier.ready(status: "serving 2 queues\non eth0"))
        XCTAssertEqual(receive(receiver), "READY=1\nSTATUS=serving 2 queues on eth0")
        XCTAssertTrue(notifier.watchdog())
        XCTAssertEqual(receive(receiver), "WATCHDOG=1")
        XCTAssertTrue(notifier.status("draining"))
        XCTAssertEqual(receive(receiver), "STATUS=draining")
        XCTAssertTrue(notifier.stopping())
        XCTAssertEqual(receive(receiver), "STOPPING=1")
        XCTAssertTrue(notifier.notify("MAINPID=\(getpid())"))
        XCTAssertEqual(receive(receiver), "MAINPID=\(getpid())")
    }

    func testNotifiesAnAbstractSocket() throws {
        let name = "xdirector-test-\(getpid())-\(UUID().uuidString)"
        let receiver = try bindReceiver([0] + Array(name.utf8))
        let notifier = try XCTUnwrap(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name]))
        XCTAssertTrue(notifier.notify("READY=1"))
        XCTAssertTrue(notifier.notify("WATCHDOG=1"))
        XCTAssertEqual(receive(receiver), "READY=1")
        XCTAssertEqual(receive(receiver), "WATCHDOG=1")
    }

    func testAnAbsentListenerIsIgnored() throws {
        let notifier = try XCTUnwrap(SystemdNotifier(environment: ["NOTIFY_SOCKET": "\(directory)/nobody"]))
        XCTAssertFalse(notifier.notify("READY=1"))
        let abstract = try XCTUnwrap(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@xdirector-nobody-\(UUID().uuidString)"]))
        XCTAssertFalse(abstract.watchdog())
    }

    func testAFullSocketDoesNotBlock() throws {
        let path = "\(directory)/full"
        _ = try bindReceiver(Array(path.utf8))
        let notifier = try XCTUnwrap(SystemdNotifier(environment: ["NOTIFY_SOCKET": path]))
        // Nobody reads: the receive queue fills, and sends then fail at once instead of waiting.
        let start = Date()
        var refused = false
        for _ in 0..<10_000 where !refused {
            refused = !notifier.notify(String(repeating: "X", count: 1000))
        }
        XCTAssertTrue(refused)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    func testNoNotifierWithoutAUsableSocket() {
        XCTAssertNil(SystemdNotifier(environment: [:]))
        XCTAssertNil(SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]))
        XCTAssertNil(SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative/path"]))
        XCTAssertNil(SystemdNotifier(environment: ["NOTIFY_SOCKET": "vsock:2:1234"]))
        XCTAssertNil(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@"]))
        XCTAssertNil(SystemdNotifier(environment: ["NOTIFY_SOCKET": "/" + String(repeating: "a", count: 200)]))
        XCTAssertNil(SystemdNotifier(environment: ["WATCHDOG_USEC": "2000000"]))
    }

    func testWatchdogInterval() throws {
        let socket = "\(directory)/notify"
        func interval(_ extra: [String: String]) -> Double? {
            SystemdNotifier(environment: extra.merging(["NOTIFY_SOCKET": socket]) { $1 })?.watchdogInterval
        }
        XCTAssertEqual(interval(["WATCHDOG_USEC": "2000000"]), 1.0)
        XCTAssertEqual(interval(["WATCHDOG_USEC": "10000000", "WATCHDOG_PID": String(getpid())]), 5.0)
        XCTAssertNil(interval(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": String(getpid() + 1)]))
        XCTAssertNil(interval(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"]))
        XCTAssertNil(interval(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "not-a-pid"]))
        XCTAssertNil(interval(["WATCHDOG_USEC": "0"]))
        XCTAssertNil(interval(["WATCHDOG_USEC": "soon"]))
        XCTAssertNil(interval([:]))
        XCTAssertEqual(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "500", "WATCHDOG_PID": "42"], pid: 42),
                       0.00025)
    }
}
