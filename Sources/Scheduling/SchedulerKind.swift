/// The scheduling algorithms the director implements, by their ipvsadm names (`-s NAME`).
public enum SchedulerKind: String, CaseIterable, Sendable {
    /// Round robin.
    case rr
    /// Weighted round robin.
    case wrr

    /// ipvsadm's name for the algorithm.
    public var name: String { rawValue }

    public init?(name: String) { self.init(rawValue: name) }
}
