import Glibc

/// Why the data plane could not do what was asked, worded for an operator.
public struct DataplaneError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) { self.description = description }

    /// `what` failed with the C error number `code` (positive or negative errno, as libbpf/libxdp return).
    public init(_ what: String, errno code: Int32) {
        let number = abs(code)
        description = "\(what): \(String(cString: strerror(number))) (errno \(number))"
    }
}
