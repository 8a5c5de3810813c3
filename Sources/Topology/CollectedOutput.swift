import Foundation

/// Collects a child process's output as it arrives, so a caller can wait for a line such as "ready".
public final class CollectedOutput: @unchecked Sendable {
    public let pipe = Pipe()
    private let lock = NSLock()
    private var data = Data()

    public init() {
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let chunk = handle.availableData
            guard let self, !chunk.isEmpty else { return }
            self.lock.lock(); self.data.append(chunk); self.lock.unlock()
        }
    }

    public var text: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }

    /// Waits until the output contains `marker`, at most `seconds`.
    public func waitFor(_ marker: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if text.contains(marker) { return true }
            usleep(50_000)
        }
        return false
    }
}
