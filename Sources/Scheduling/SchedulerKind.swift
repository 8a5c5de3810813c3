/// The scheduling algorithms the director implements, by their ipvsadm names (`-s NAME`).
///
/// Adding an algorithm: a case here, one file with a caseless enum conforming to `SchedulingAlgorithm`,
/// and one line in each of the two switches in `Scheduler` (the compiler points at both).
public enum SchedulerKind: String, CaseIterable, Sendable {
    /// Round robin.
    case rr
    /// Weighted round robin.
    case wrr

    /// ipvsadm's name for the algorithm.
    public var name: String { rawValue }

    public init?(name: String) { self.init(rawValue: name) }

    /// One line for help texts and listings.
    public var summary: String {
        switch self {
        case .rr: return "round robin: each available real server in turn, weight 0 excluded"
        case .wrr: return "weighted round robin: turns in proportion to the weights"
        }
    }
}
