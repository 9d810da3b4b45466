import NIOCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The broker's time, read once per batch of work instead of once per message.
///
/// The event loop refreshes it at the start of each socket read and timer; queues stamp enqueued messages with it
/// (for TTL) and connections note when they last heard from their client. Tests make one with a manual source and
/// move it by hand.
public final class BrokerClock {
  private let source: () -> NIODeadline
  private let wallSource: () -> UInt64
  /// The time of the last ``refresh()``.
  public private(set) var now: NIODeadline

  /// A clock reading `source` (the monotonic system clock by default) and `wallSource` (seconds since 1970, for
  /// the times written into messages, such as an `x-death` entry's).
  public init(
    source: @escaping () -> NIODeadline = { .now() },
    wallSource: @escaping () -> UInt64 = { UInt64(time(nil)) }
  ) {
    self.source = source
    self.wallSource = wallSource
    self.now = source()
  }

  /// Seconds since 1970 now.
  public var wallSeconds: UInt64 { self.wallSource() }

  /// Reads the source again.
  @discardableResult
  public func refresh() -> NIODeadline {
    self.now = self.source()
    return self.now
  }

  /// ``now`` in nanoseconds of uptime, as messages are stamped.
  @inlinable public var nowNanoseconds: UInt64 { self.now.uptimeNanoseconds }
}

/// Runs queues' timers on the broker's event loop: message expiry and unused-queue deletion.
public protocol QueueTimers: AnyObject {
  /// Calls `queue.timerFired(deadline:)` at `deadline` (uptime nanoseconds) or soon after, the clock refreshed.
  func schedule(_ queue: Queue, at deadline: UInt64)
}
