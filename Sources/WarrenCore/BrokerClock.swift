import NIOCore

/// The broker's time, read once per batch of work instead of once per message.
///
/// The event loop refreshes it at the start of each socket read and timer; queues stamp enqueued messages with it
/// (for TTL) and connections note when they last heard from their client. Tests make one with a manual source and
/// move it by hand.
public final class BrokerClock {
  private let source: () -> NIODeadline
  /// The time of the last ``refresh()``.
  public private(set) var now: NIODeadline

  /// A clock reading `source` (the monotonic system clock by default).
  public init(source: @escaping () -> NIODeadline = { .now() }) {
    self.source = source
    self.now = source()
  }

  /// Reads the source again.
  @discardableResult
  public func refresh() -> NIODeadline {
    self.now = self.source()
    return self.now
  }

  /// ``now`` in nanoseconds of uptime, as messages are stamped.
  @inlinable public var nowNanoseconds: UInt64 { self.now.uptimeNanoseconds }
}
