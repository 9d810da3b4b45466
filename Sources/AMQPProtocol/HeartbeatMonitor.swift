import NIOCore

/// AMQP heartbeats for one side of a connection, the broker's and the client's alike.
///
/// Tick it every ``tickInterval`` (half the negotiated interval): it asks for a heartbeat frame when nothing else
/// was sent since the last tick, and reports the peer dead after ``silentTicksAllowed`` ticks without a byte from
/// it (two intervals, as RabbitMQ). It keeps no clock of its own, so tests drive it tick by tick.
public struct HeartbeatMonitor: Sendable, Equatable {
  /// What a tick asks for.
  public enum Action: Sendable, Equatable {
    /// Nothing: traffic flowed both ways.
    case none
    /// Send a heartbeat frame: nothing else was sent.
    case sendHeartbeat
    /// The peer has been silent too long: close the connection.
    case peerTimedOut
  }

  /// The negotiated interval in seconds (0: no heartbeats).
  public let seconds: Int
  /// Silent ticks after which the peer counts as gone.
  public static let silentTicksAllowed = 4
  private var receivedSinceTick = false
  private var sentSinceTick = false
  private var silentTicks = 0

  public init(seconds: Int) {
    self.seconds = seconds
  }

  /// How often to call ``tick(peerPaused:)``.
  public var tickInterval: TimeAmount { .milliseconds(Int64(self.seconds) * 500) }

  /// Bytes arrived from the peer.
  @inlinable public mutating func received() { self.markReceived() }
  /// Bytes went out to the peer.
  @inlinable public mutating func sent() { self.markSent() }

  /// The heartbeat a tick asked for was written: it does not count as traffic for the next tick.
  public mutating func heartbeatWritten() { self.sentSinceTick = false }

  @usableFromInline mutating func markReceived() { self.receivedSinceTick = true }
  @usableFromInline mutating func markSent() { self.sentSinceTick = true }

  /// A tick passed. `peerPaused`: we stopped reading the peer (a resource alarm), so its silence does not count.
  public mutating func tick(peerPaused: Bool = false) -> Action {
    if self.receivedSinceTick || peerPaused {
      self.receivedSinceTick = false
      self.silentTicks = 0
    } else {
      self.silentTicks += 1
      if self.silentTicks >= Self.silentTicksAllowed { return .peerTimedOut }
    }
    let sent = self.sentSinceTick
    self.sentSinceTick = false
    return sent ? .none : .sendHeartbeat
  }
}
